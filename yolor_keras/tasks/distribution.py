"""Loss scaling for tf.distribute, shared by the tasks."""

import keras
from keras import ops


def scale_for_replicas(loss):
    """Divides a per-replica mean loss by the number of replicas in sync.

    Each replica computes the mean over its local batch; gradients are then
    summed across replicas, so without this the update would be
    ``num_replicas`` times too large. (This is what Keras does for losses
    given to `compile`; a task that computes its own loss must do it too.)
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        if replicas > 1:
            loss = loss * ops.cast(1.0 / replicas, loss.dtype)
    return loss
