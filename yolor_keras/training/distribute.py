"""Choosing a tf.distribute strategy, and making Keras `fit` work multi-worker.

MirroredStrategy (one machine, several GPUs) works with Keras 3 `fit` as is.
MultiWorkerMirroredStrategy does not in Keras 3.15: `fit` fails with
``Attempt to convert a value (PerReplica...)`` (keras-team/keras#20585). Two
changes to private Keras internals make it train with identical weights on
every worker; `enable_multi_worker_fit` applies them, only on the Keras
versions where they were verified.
"""

import json
import os
import warnings

import keras
import tensorflow as tf

# Keras versions on which the multi-worker workaround was tested.
_PATCHED_KERAS = ("3.15.",)


def select_strategy(kind="auto"):
    """Returns the strategy for ``kind``.

    Args:
        kind: ``"auto"`` (MirroredStrategy when more than one GPU is visible,
            else the default strategy), ``"mirrored"``, ``"multi_worker"`` (reads
            ``TF_CONFIG``) or ``"default"``.
    """
    if kind == "auto":
        gpus = tf.config.list_logical_devices("GPU")
        kind = "mirrored" if len(gpus) > 1 else "default"
    if kind == "default":
        return tf.distribute.get_strategy()
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy()
    if kind == "multi_worker":
        enable_multi_worker_fit()
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(
        f"Unknown strategy {kind!r}; use 'auto', 'mirrored', 'multi_worker' or 'default'."
    )


def is_chief():
    """Whether this process is the chief (or only) worker under ``TF_CONFIG``.

    The chief task, or worker 0 of a cluster without one, as TensorFlow
    decides. An evaluator task is not: it does not train, so it writes no
    checkpoints (TensorFlow's own rule counts it as a chief of its own).
    """
    text = os.environ.get("TF_CONFIG", "") or "{}"
    try:
        config = json.loads(text)
        task = config.get("task", {})
        kind, index = task.get("type", "chief"), task.get("index", 0)
        # TensorFlow reads the index with int(), so "0" is worker 0 too.
        index = int(index)
        has_chief = "chief" in config.get("cluster", {})
    except (ValueError, TypeError, AttributeError) as error:
        raise ValueError(
            f"TF_CONFIG is not a valid cluster configuration ({error}): {text!r}"
        ) from None
    return kind == "chief" or (kind == "worker" and index == 0 and not has_chief)


def enable_multi_worker_fit():
    """Patches Keras so that `fit` runs under MultiWorkerMirroredStrategy.

    1. Keras builds the model symbolically from a *distributed* batch before
       training; under MultiWorkerMirroredStrategy that batch reduction fails.
       The model here is functional and already built, so the symbolic build
       is replaced by building the optimizer and the metrics from the
       model's own variables inside the strategy scope.
    2. Output reduction takes a collective path that mixes PerReplica values
       into plain tensors; using the per-host reduction avoids it.

    Returns:
        True if the patch is active, False on a Keras version where it was
        not verified (then `fit` is left unchanged and a warning is shown).
    """
    from keras.src.backend.tensorflow import trainer as tf_trainer

    if not keras.__version__.startswith(_PATCHED_KERAS):
        warnings.warn(
            f"The multi-worker fit workaround is verified on Keras {_PATCHED_KERAS}, "
            f"not {keras.__version__}; leaving Keras unchanged.",
            stacklevel=2,
        )
        return False
    if getattr(tf_trainer, "_yolor_multi_worker_patched", False):
        return True

    original_build = tf_trainer.TensorFlowTrainer._maybe_symbolic_build

    def build_without_distributed_batch(self, iterator=None, data_batch=None):
        strategy = self._distribute_strategy
        if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            return original_build(self, iterator=iterator, data_batch=data_batch)
        with strategy.scope():
            if self.optimizer is not None and not self.optimizer.built:
                self.optimizer.build(self.trainable_variables)
        return None

    tf_trainer.TensorFlowTrainer._maybe_symbolic_build = build_without_distributed_batch
    tf_trainer._collective_all_reduce_multi_worker = lambda strategy: False
    tf_trainer._yolor_multi_worker_patched = True
    return True


def use_synchronized_batchnorm(model, enabled=True):
    """Makes every BatchNormalization in ``model`` average its batch statistics
    over all replicas (or stop doing so).

    Keras reads the flag at call time, so it can be switched on an existing
    model before `fit` traces it. Synchronized statistics make a step on N
    replicas equal a step on one device with the same global batch.
    """
    count = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = bool(enabled)
            count += 1
    return count
