"""What every export holds: the task's deploy form running `task.detect`.

Each format (SavedModel, TFLite, ONNX) traces the same function of a
letterboxed float batch: ``task.detect`` on the folded task, which gives the
detection outputs (NMS detections or decoded predictions) and, for tasks with
more heads, ``label_probabilities`` and ``embedding``. The formats differ
only in what they put around it (image decoding and mapping back for the
SavedModel, conversion for TFLite and ONNX).
"""

from yolor_keras.export.folding import deploy_form
from yolor_keras.layers import NonMaxSuppression
from yolor_keras.layers import YOLORImageConverter

# Input side when neither the call, the task's preprocessor nor the task's
# fixed input size gives one: the official inference size of every preset.
DEFAULT_IMAGE_SIZE = 640
# Settings of `NonMaxSuppression` that exporters and `yolor export` accept
# one by one, on top of the task's `prediction_decoder`.
NMS_SETTINGS = ("conf_threshold", "iou_threshold", "max_detections", "multi_label")


def export_task(model):
    """The deploy form of a `YOLORObjectDetector`, with a clear error for anything else.

    Args:
        model: a `YOLORObjectDetector`, training or deploy form, any heads.

    Returns:
        `model` itself when it is already folded, else a folded copy.
    """
    # Imported late: `yolor_keras.tasks` loads the losses and models, which
    # `yolor --help` must not wait for.
    from yolor_keras.tasks import YOLORObjectDetector

    if not isinstance(model, YOLORObjectDetector):
        raise ValueError(
            f"Exports take a YOLORObjectDetector (any heads); got {type(model).__name__}."
        )
    return deploy_form(model)


def export_decoder(task, prediction_decoder=None, **settings):
    """The NMS an export bakes in: the task's own unless told otherwise.

    Args:
        task: the exported task.
        prediction_decoder: a `NonMaxSuppression` to use instead of the
            task's ``prediction_decoder``.
        **settings: any of `NMS_SETTINGS`; those that are not None replace
            the decoder's own.

    Returns:
        A `NonMaxSuppression` layer.
    """
    unknown = sorted(set(settings) - set(NMS_SETTINGS))
    if unknown:
        raise ValueError(
            f"Unknown NMS setting(s) {unknown}; expected some of {list(NMS_SETTINGS)}."
        )
    decoder = prediction_decoder or task.prediction_decoder
    if not isinstance(decoder, NonMaxSuppression):
        raise ValueError(
            f"`prediction_decoder` must be a NonMaxSuppression layer; got {type(decoder).__name__}."
        )
    given = {name: value for name, value in settings.items() if value is not None}
    if not given:
        return decoder
    return NonMaxSuppression(**{**decoder.settings(), **given})


def export_preprocessor(task, image_size=None):
    """The letterbox of an export: the task's preprocessor, or one for `image_size`.

    Args:
        task: the exported task.
        image_size: side of the square network input. None takes the
            preprocessor's, else the task's fixed input size, else
            `DEFAULT_IMAGE_SIZE`. A size other than the preprocessor's gives
            a copy of it at that size (same padding grey and resize).

    Returns:
        A `YOLORImageConverter` whose ``image_size`` suits the task's strides.
    """
    preprocessor = getattr(task, "preprocessor", None)
    fixed = task.image_size if isinstance(task.image_size, int) else None
    if image_size is None:
        image_size = (
            preprocessor.image_size if preprocessor is not None else fixed or DEFAULT_IMAGE_SIZE
        )
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"`image_size` must be a positive int; got {image_size!r}.")
    stride = max(int(stride) for stride in task.strides)
    if image_size % stride:
        raise ValueError(
            f"`image_size` must be a multiple of the task's largest stride {stride}; got "
            f"{image_size}. The nearest valid sizes are "
            f"{max(stride, image_size // stride * stride)} and {(image_size // stride + 1) * stride}."
        )
    if fixed is not None and image_size != fixed:
        raise ValueError(
            f"The task '{task.name}' was built for {fixed} x {fixed} inputs; `image_size` "
            f"{image_size} cannot be exported (build it with image_size=None for any size)."
        )
    if preprocessor is None:
        return YOLORImageConverter(image_size)
    if preprocessor.image_size == image_size:
        return preprocessor
    config = dict(preprocessor.get_config(), image_size=image_size)
    config.pop("name", None)
    return type(preprocessor).from_config(config)


def detect_function(task, nms=True, prediction_decoder=None):
    """``task.detect`` as the function an export traces, with its output names.

    Args:
        task: the task (its deploy form, for exports).
        nms: end the detection head with NMS (`NMS_OUTPUTS`) rather than
            the decoded predictions (`DECODED_OUTPUT`).
        prediction_decoder: the `NonMaxSuppression` to end with (default:
            the task's).

    Returns:
        ``(detect, names)``: a function of a float32 ``(batch, S, S, 3)``
        tensor in [0, 1] returning a dict of tensors, and the names of its
        outputs in `task.output_names` order.
    """
    # Through the class: Keras' functional `Model.__init__` sets an
    # `output_names` list on the instance, which hides the task's method.
    names = tuple(task.detect_output_names(nms))

    def detect(images):
        outputs = task.detect(images, nms=nms, prediction_decoder=prediction_decoder)
        return {name: outputs[name] for name in names}

    return detect, names
