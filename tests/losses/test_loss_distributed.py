"""Per-sample losses keep gradients right under MirroredStrategy.

Two replicas that each see the same half of a batch must take exactly the
step one device takes on the whole batch. The check runs in a subprocess
because the two logical CPU devices must be configured before TensorFlow
starts.
"""

import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from yolor_keras.losses import YOLORLoss

    STRIDES, NC = [8, 16, 32], 3
    ANCHORS = np.array([[[8, 8], [16, 16], [40, 24]], [[32, 48], [64, 40], [60, 90]],
                        [[96, 96], [128, 80], [200, 160]]], "float32")

    class TinyDetector(keras.Model):
        def __init__(self, reduce_by_hand, **kwargs):
            inputs, outputs = keras.Input((64, 64, 3)), []
            for s in STRIDES:
                init = keras.initializers.GlorotUniform(seed=s)
                f = keras.layers.Conv2D(8, s, strides=s, kernel_initializer=init)(inputs)
                f = keras.layers.Conv2D(3 * (5 + NC), 1, kernel_initializer=init)(f)
                outputs.append(keras.layers.Reshape((64 // s, 64 // s, 3, 5 + NC))(f))
            super().__init__(inputs, outputs, **kwargs)
            self.reduce_by_hand = reduce_by_hand
            self.yolor_loss = YOLORLoss(ANCHORS, STRIDES, NC)

        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
            if self.reduce_by_hand:  # the pitfall: a scalar Keras cannot rescale
                return keras.ops.mean(self.yolor_loss.compute_components(y, y_pred)["loss"])
            return self.yolor_loss(y, y_pred)

    rng = np.random.default_rng(0)
    images = rng.random((2, 64, 64, 3)).astype("float32")
    boxes = np.array([[[13, 29, 29, 41], [0, 8, 48, 40]], [[2, 0, 10, 6], [0, 0, 0, 0]]], "float32")
    classes = np.array([[1, 2], [0, -1]], "int32")
    # Global batch [s0, s1, s0, s1]: each replica gets [s0, s1].
    data = tf.data.Dataset.from_tensor_slices(
        (np.concatenate([images, images]),
         {"boxes": np.concatenate([boxes, boxes]), "classes": np.concatenate([classes, classes])})
    ).batch(4)

    def step(strategy, reduce_by_hand=False):
        with strategy.scope():
            model = TinyDetector(reduce_by_hand)
            model.compile(optimizer=keras.optimizers.SGD(0.1))
        before = [w.numpy() for w in model.weights]
        model.fit(data, epochs=1, verbose=0, shuffle=False)
        return [w.numpy() - b for w, b in zip(model.weights, before)]

    single = step(tf.distribute.OneDeviceStrategy("/cpu:0"))
    mirrored = step(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
    by_hand = step(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), reduce_by_hand=True)
    scale = max(np.abs(d).max() for d in single)
    print("SAME", max(np.abs(a - b).max() for a, b in zip(single, mirrored)) / scale)
    print("BYHAND", max(np.abs(a - b).max() for a, b in zip(single, by_hand)) / scale)
    """
)


@pytest.mark.slow
def test_mirrored_step_equals_single_device_step():
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", KERAS_BACKEND="tensorflow")
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        check=False,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    numbers = dict(
        line.split() for line in result.stdout.splitlines() if line[:4] in ("SAME", "BYHA")
    )
    assert float(numbers["SAME"]) < 1e-5
    # A scalar reduced by hand doubles the step with two replicas.
    assert float(numbers["BYHAND"]) > 0.5
