"""The model every export starts from: the detector with its folds applied."""


def deploy_form(model):
    """Returns the deploy form of a detector, folding a copy when needed.

    BatchNorm and the implicit layers fold exactly into the convolutions
    (`yolor_keras.export.folding`), so exports carry fewer ops and weights with
    the same outputs. The trained model itself is never modified.

    Args:
        model: a `YOLORDetector`, in training or deploy form.

    Returns:
        `model` itself when it is already in deploy form, else a folded copy.
    """
    if getattr(model, "deploy", False):
        return model
    from yolor_keras.export.folding import fold

    return fold(model)
