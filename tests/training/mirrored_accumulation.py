"""Worker of `test_ema.py`: official accumulation and the BN-statistics EMA
under MirroredStrategy (2 logical CPUs) against one device; run as a subprocess.

Prints one JSON line with the largest differences.
"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402

from yolor_keras.training import YOLORSGD  # noqa: E402
from yolor_keras.training.ema import average_batchnorm_statistics  # noqa: E402
from yolor_keras.training.ema import ema_weights  # noqa: E402


def run(strategy):
    keras.utils.set_random_seed(0)
    with strategy.scope():
        inputs = keras.Input((4,))
        x = keras.layers.Dense(3, use_bias=False)(inputs)
        # Synchronised statistics: both replicas see the global batch's.
        x = keras.layers.BatchNormalization(synchronized=True)(x)
        model = keras.Model(inputs, x)
        optimizer = YOLORSGD(
            learning_rate=0.01,
            momentum=0.5,
            ema_ramp=2.0,
            gradient_accumulation_steps=2,
            accumulation_warmup_steps=3,
            accumulation_ratio=2.0,
            steps_per_epoch=5,
        )
        model.compile(optimizer=optimizer, loss="mse")
        average_batchnorm_statistics(model)
    rng = np.random.default_rng(0)
    images = rng.normal(size=(40, 4)).astype("float32")
    targets = rng.normal(size=(40, 3)).astype("float32")
    model.fit(images, targets, batch_size=4, epochs=2, shuffle=False, verbose=0)
    raw = [np.array(v) for v in model.weights]
    with ema_weights(model):
        averaged = [np.array(v) for v in model.weights]
    updates = int(keras.ops.convert_to_numpy(optimizer.iterations))
    return raw, averaged, updates


single = run(tf.distribute.get_strategy())
mirrored = run(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
print(
    json.dumps(
        {
            "raw": max(float(np.abs(a - b).max()) for a, b in zip(single[0], mirrored[0])),
            "ema": max(float(np.abs(a - b).max()) for a, b in zip(single[1], mirrored[1])),
            "ema_moved": max(float(np.abs(a - b).max()) for a, b in zip(single[0], single[1])),
            "updates": [single[2], mirrored[2]],
        }
    )
)
