"""Walking the layers of a YOLOR model through its nested sub-models."""

import keras


def iter_layers(model):
    """Yields every non-model layer of ``model``, descending into nested models.

    A `YOLORObjectDetector` holds its backbone, neck and head as nested functional
    models, so ``model.layers`` alone lists only those three.
    """
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from iter_layers(layer)
        else:
            yield layer
