"""Worker script of the tf.distribute tests; run as a subprocess.

Usage:
    python distributed_step.py mirrored OUT.npz
    python distributed_step.py single OUT.npz
    python distributed_step.py single_then_mirrored OUT.npz
    TF_CONFIG=... python distributed_step.py multi_worker OUT.npz

Builds the same tiny task from a fixed seed, trains it for a few steps on a
fixed global batch under the chosen strategy, and saves the final weights.
``single_then_mirrored`` does the single-device run and then the mirrored
one in the same process (two logical CPU devices), saving the single run
to OUT.npz.single.npz: one TensorFlow start instead of two.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

GLOBAL_BATCH = 4
STEPS = 1


def make_batch():
    rng = np.random.default_rng(0)
    images = rng.random((GLOBAL_BATCH, 64, 64, 3)).astype("float32")
    # Every image has the same targets, so each replica's share of the
    # batch has the same number of assignments and the per-replica box and
    # class means add up to the single-device mean exactly.
    boxes = np.tile(
        np.array([[[8, 10, 40, 50], [30, 20, 60, 44], [0, 0, 0, 0]]], "float32"),
        (GLOBAL_BATCH, 1, 1),
    )
    classes = np.tile(np.array([[1, 2, -1]], "int32"), (GLOBAL_BATCH, 1))
    return images, {"boxes": boxes, "classes": classes}


def main(mode, out_path):
    if mode in ("mirrored", "single_then_mirrored"):
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
        )
    if mode == "single_then_mirrored":
        # The default strategy runs on the first logical device alone.
        run("single", out_path + ".single.npz")
        run("mirrored", out_path)
    else:
        run(mode, out_path)


def run(mode, out_path):
    import keras

    from yolor_keras.tasks import YOLORObjectDetector
    from yolor_keras.training import YOLORSGD
    from yolor_keras.training.distribute import select_strategy
    from yolor_keras.training.distribute import use_synchronized_batchnorm

    strategy = {
        "single": lambda: tf.distribute.get_strategy(),
        "mirrored": lambda: tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]),
        "multi_worker": lambda: select_strategy("multi_worker"),
    }[mode]()
    # Same layer names and the same initial weights in every run.
    keras.utils.clear_session()
    keras.utils.set_random_seed(7)
    with strategy.scope():
        task = YOLORObjectDetector.from_preset(
            "yolor_csp", num_classes=3, width_multiplier=0.125, depth_multiplier=0.33, image_size=64
        )
        if strategy.num_replicas_in_sync > 1 and os.environ.get("SYNC_BN", "1") == "1":
            use_synchronized_batchnorm(task)
        task.compile(
            optimizer=YOLORSGD(learning_rate=1e-3, momentum=0.9, kernel_weight_decay=5e-4),
            loss_scale=float(GLOBAL_BATCH),
        )
    if os.environ.get("SAVE_INITIAL"):
        np.savez(
            out_path + ".initial.npz", **{f"{i}": np.array(v) for i, v in enumerate(task.weights)}
        )
    images, labels = make_batch()
    dataset = tf.data.Dataset.from_tensors((images, labels)).repeat(STEPS)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    dataset = dataset.with_options(options)
    if mode == "multi_worker":
        # Each worker feeds its own half of the global batch, as a real
        # multi-worker input pipeline would (one shard per worker).
        def local_dataset(context):
            half = context.get_per_replica_batch_size(GLOBAL_BATCH)
            start = context.input_pipeline_id * half
            local = (
                images[start : start + half],
                {key: value[start : start + half] for key, value in labels.items()},
            )
            return tf.data.Dataset.from_tensors(local).repeat(STEPS)

        dataset = strategy.distribute_datasets_from_function(local_dataset)
    task.fit(dataset, epochs=1, verbose=0)
    weights = {f"{i}": np.array(v) for i, v in enumerate(task.weights)}
    trainable = {id(v) for v in task.trainable_weights}
    weights["trainable"] = np.array([id(v) in trainable for v in task.weights])
    np.savez(out_path, **weights)
    print("STEP_DONE", mode, strategy.num_replicas_in_sync)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
