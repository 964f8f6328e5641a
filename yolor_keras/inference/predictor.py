"""End-to-end detection on ordinary images: letterbox, `task.detect`, map back.

`BasePredictor` holds everything that does not depend on the runtime (reading
images, letterboxing with a `YOLORImageConverter`, batching, mapping boxes
back to each image's pixels with the same converter). `Predictor` runs a
`YOLORObjectDetector` through ``task.detect``, the task's one inference
path, inside one compiled `tf.function`; `yolor_keras.export` adds runners
for the exported TFLite and ONNX files on the same base, so every runtime
returns the same kind of result.
"""

import os

import keras
import numpy as np
import tensorflow as tf

from yolor_keras.data import image_decoding
from yolor_keras.layers.image_converter import YOLORImageConverter
from yolor_keras.layers.nms import NonMaxSuppression
from yolor_keras.tasks.yolor_object_detector import EMBEDDING_OUTPUT
from yolor_keras.tasks.yolor_object_detector import LABEL_OUTPUT

# Input side when neither the caller, the task's preprocessor nor a fixed
# input size of the task says otherwise (the official `detect.py` default).
DEFAULT_IMAGE_SIZE = 640
# Outputs of `task.detect` that are one row per image rather than detections.
PER_IMAGE_OUTPUTS = (LABEL_OUTPUT, EMBEDDING_OUTPUT)


def read_image(source, name=None):
    """Reads one image as a `(height, width, 3)` uint8 RGB array.

    The project's one reader, `yolor_keras.data.image_decoding.read_image`
    (EXIF orientation applied, errors naming the image).

    Args:
        source: a file path, the encoded bytes of a JPEG/PNG/GIF/BMP image,
            or an array `(height, width, 3)` of uint8 RGB pixels (returned
            as is).
        name: how to name the image in error messages (defaults to the path).

    Returns:
        A uint8 numpy array `(height, width, 3)`, RGB.
    """
    return image_decoding.read_image(source, name=name)


def check_image_size(image_size, stride):
    """Checks that a square input size suits a detector's largest stride.

    Args:
        image_size: side of the square network input, in pixels.
        stride: the detector's largest stride (64 for the P6 family).

    Returns:
        `image_size` as an int.
    """
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"`image_size` must be a positive int; got {image_size!r}.")
    if image_size % stride:
        raise ValueError(
            f"`image_size` must be a multiple of the detector's largest stride "
            f"{stride}; got {image_size}. The nearest valid sizes are "
            f"{max(stride, image_size // stride * stride)} and "
            f"{(image_size // stride + 1) * stride}."
        )
    return image_size


def check_task(model):
    """Raises a clear ValueError unless ``model`` is a `YOLORObjectDetector`-like task."""
    missing = [name for name in ("detect", "head_names", "strides") if not hasattr(model, name)]
    if missing:
        raise ValueError(
            f"The model {getattr(model, 'name', model)!r} lacks the detector attribute(s) "
            f"{missing}; build it with `YOLORObjectDetector`."
        )
    return model


class BasePredictor:
    """Runtime-independent part of a predictor.

    Subclasses implement `detect_letterboxed_batch`, which takes a batch of
    letterboxed images and returns padded detections in input pixels (and,
    for tasks with those heads, `LABEL_OUTPUT` / `EMBEDDING_OUTPUT` rows).

    Args:
        num_classes: number of classes the detector predicts, or None when
            the runtime cannot tell (a file with NMS inside).
        max_stride: the detector's largest stride; `image_size` must be a
            multiple of it.
        class_names: list of `num_classes` names, or None for "0", "1", ...
        image_size: side of the square network input.
        batch_size: how many images go through the network at once.
        preprocessor: the `YOLORImageConverter` that letterboxes the images
            and maps boxes back; by default ``YOLORImageConverter(image_size)``.
    """

    def __init__(
        self,
        num_classes,
        max_stride,
        class_names=None,
        image_size=DEFAULT_IMAGE_SIZE,
        batch_size=8,
        preprocessor=None,
    ):
        self.num_classes = None if num_classes is None else int(num_classes)
        self.image_size = check_image_size(image_size, int(max_stride))
        if class_names is None and self.num_classes is not None:
            class_names = [str(index) for index in range(self.num_classes)]
        if class_names is not None:
            class_names = [str(name) for name in class_names]
            if self.num_classes is not None and len(class_names) != self.num_classes:
                raise ValueError(
                    f"`class_names` has {len(class_names)} names but the detector "
                    f"predicts {self.num_classes} classes."
                )
        self.class_names = class_names
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive int; got {batch_size!r}.")
        self.batch_size = batch_size
        if preprocessor is None:
            preprocessor = YOLORImageConverter(self.image_size)
        if preprocessor.image_size != self.image_size:
            raise ValueError(
                f"The preprocessor letterboxes to {preprocessor.image_size} px but "
                f"`image_size` is {self.image_size}."
            )
        self.preprocessor = preprocessor
        # One trace for every image size (images of one call differ in size).
        self._letterbox = tf.function(
            lambda image: self.preprocessor(image),
            input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)],
        )

    def detect_letterboxed_batch(self, images):
        """Detects objects in letterboxed images.

        Args:
            images: float32 numpy array `(batch, image_size, image_size, 3)`
                in [0, 1].

        Returns:
            Dict of numpy arrays: `boxes` `(batch, max_det, 4)` x1y1x2y2 in
            input pixels, `scores` `(batch, max_det)`, `classes`
            `(batch, max_det)` int32, `num_detections` `(batch,)` int32;
            and `LABEL_OUTPUT` `(batch, num_labels)`, `EMBEDDING_OUTPUT`
            `(batch, dim)` for tasks with those heads.
        """
        raise NotImplementedError

    def class_name(self, class_index):
        """The name of a class index ("7" when no names are known)."""
        if self.class_names is None:
            return str(int(class_index))
        if not 0 <= class_index < len(self.class_names):
            raise ValueError(
                f"The model predicted class {class_index} but only "
                f"{len(self.class_names)} class names were given."
            )
        return self.class_names[class_index]

    def letterbox(self, image):
        """Letterboxes one uint8 image with the preprocessor.

        Returns:
            `(input, scale, pad)` as numpy: the `(S, S, 3)` float32 input,
            and the `(x, y)` scale and padding that map it back.
        """
        letterboxed, scale, pad = self._letterbox(tf.convert_to_tensor(image, tf.uint8))
        return letterboxed.numpy(), scale.numpy(), pad.numpy()

    def predict(self, images):
        """Runs the model on images.

        Args:
            images: a list of images, each a file path, encoded bytes, or a
                `(height, width, 3)` uint8 RGB array. A single image is also
                accepted.

        Returns:
            One dict per image, with numpy values:
            - `"boxes"`: `(n, 4)` float32 `[x1, y1, x2, y2]` in the image's
              own pixels;
            - `"scores"`: `(n,)` float32, descending;
            - `"classes"`: `(n,)` int32 class indices;
            - `"class_names"`: list of `n` class names;
            - for a task with those heads, `"label_probabilities"`
              `(num_labels,)` and `"embedding"` `(dim,)` float32.
        """
        if isinstance(images, (str, os.PathLike, bytes, bytearray)) or (
            isinstance(images, np.ndarray) and images.ndim == 3
        ):
            images = [images]
        results = []
        for start in range(0, len(images), self.batch_size):
            chunk = [
                # Paths name themselves in errors; other inputs by position.
                read_image(
                    image,
                    name=None if isinstance(image, (str, os.PathLike)) else f"images[{index}]",
                )
                for index, image in enumerate(images[start : start + self.batch_size], start)
            ]
            prepared = [self.letterbox(image) for image in chunk]
            batch = np.stack([inputs for inputs, _, _ in prepared])
            outputs = self.detect_letterboxed_batch(batch)
            for index, (image, (_, scale, pad)) in enumerate(zip(chunk, prepared)):
                result = {}
                if "num_detections" in outputs:
                    count = int(outputs["num_detections"][index])
                    boxes = self.preprocessor.boxes_to_original(
                        outputs["boxes"][index, :count], scale, pad, image.shape[:2]
                    )
                    classes = np.asarray(outputs["classes"][index, :count], np.int32)
                    result = {
                        "boxes": np.asarray(boxes, np.float32),
                        "scores": np.asarray(outputs["scores"][index, :count], np.float32),
                        "classes": classes,
                        "class_names": [self.class_name(c) for c in classes],
                    }
                for name in PER_IMAGE_OUTPUTS:
                    if name in outputs:
                        result[name] = np.asarray(outputs[name][index], np.float32)
                results.append(result)
        return results


# Precision names of `with_precision`, the `--precision` options and the
# export metadata, mapped to Keras dtype policies. "bf16" keeps float32
# variables and computes in bfloat16 (AMX / AVX512-BF16 CPUs, TPUs, recent
# GPUs run its convolutions several times faster than float32).
PRECISIONS = {"fp32": "float32", "bf16": "mixed_bfloat16"}
# The bf16 policy of a deploy-form model: bfloat16 weights, no per-call casts.
DEPLOY_BF16_POLICY = "bfloat16"


def check_precision(precision):
    """Returns `precision` if it is a known name, else raises a clear ValueError."""
    if precision not in PRECISIONS:
        raise ValueError(f"`precision` must be one of {sorted(PRECISIONS)}; got {precision!r}.")
    return precision


def model_precision(model):
    """The `PRECISIONS` name of a model's dtype policy ("fp32" or "bf16")."""
    policy = getattr(getattr(model, "dtype_policy", None), "name", "float32")
    if policy == DEPLOY_BF16_POLICY:
        return "bf16"
    for name, policy_name in PRECISIONS.items():
        if policy == policy_name:
            return name
    raise ValueError(f"The model {model.name!r} has an unsupported dtype policy {policy!r}.")


def with_precision(model, precision):
    """The same detector computing in `precision`, with the same weights.

    The one place where a detector changes precision (the predictor, the
    SavedModel export and the benchmark all go through it). Keras fixes each
    layer's dtype policy when the layer is built, so a bf16 copy is rebuilt
    from the detector's config and given its weights; every layer computes
    in bfloat16. A training-form model is rebuilt under ``mixed_bfloat16``:
    its variables stay float32, so the copy saves and folds like the
    original. A deploy-form model (nothing left to fold or train) is rebuilt
    under ``bfloat16``: its weights are stored in bfloat16, which gives the
    same outputs (mixed precision casts them to bfloat16 at every call) and
    saves those casts, 10-15 % of a call on CPU. The raw outputs come out in
    bfloat16; `decode_predictions` casts them to float32, so decoding and
    NMS run in float32 (their layers keep a float32 policy).

    Args:
        model: a `YOLORObjectDetector` (training or deploy form).
        precision: "fp32" or "bf16".

    Returns:
        `model` itself when it already computes in `precision`, else a new
        detector.
    """
    check_precision(precision)
    if model_precision(model) == precision:
        return model
    if not hasattr(model, "get_config"):
        raise ValueError(f"The model {model.name!r} has no config to rebuild it in {precision}.")
    previous = keras.config.dtype_policy()
    # The global policy is what the detector's sublayers take when built;
    # it is restored even if the rebuild fails.
    policy = PRECISIONS[precision]
    if precision == "bf16" and getattr(model, "deploy", False):
        policy = DEPLOY_BF16_POLICY
    keras.config.set_dtype_policy(policy)
    try:
        rebuilt = type(model).from_config(model.get_config())
    finally:
        keras.config.set_dtype_policy(previous)
    rebuilt.set_weights(model.get_weights())
    return rebuilt


class Predictor(BasePredictor):
    """Runs a `YOLORObjectDetector` on images and returns boxes in their own pixels.

    Each image is letterboxed by the task's ``preprocessor`` (a
    `YOLORImageConverter`; by default one for `image_size`), the batch goes
    through ``task.detect`` (network, decode, the `NonMaxSuppression`
    prediction decoder, and the other heads' outputs) inside one compiled
    `tf.function` (no `model.predict` overhead), and the same converter maps
    the boxes back to the original image.

    Args:
        task: a `YOLORObjectDetector` (training or deploy form, any heads).
        class_names: list of names; None takes the task's own
            `class_names`, or "0", "1", ... when it has none.
        image_size: side of the square network input; None takes the
            preprocessor's, else the task's fixed input size, else 640.
        conf_threshold: minimum score (objectness x class probability).
        iou_threshold: NMS IoU threshold.
        max_detections: most detections kept per image.
        multi_label: keep every class above `conf_threshold` for a box.
            Each NMS setting left None is the prediction decoder's.
        batch_size: images per network call.
        precision: "fp32", or "bf16" to run the network in bfloat16 (a copy
            of `task` built by `with_precision`; decode and NMS stay
            float32). bf16 moves the raw outputs by a few tenths of a percent
            of their spread and boxes by a fraction of a pixel; on CPUs with
            AMX it runs the convolutions several times faster.
        prediction_decoder: the `NonMaxSuppression` to use; by default the
            task's own ``prediction_decoder``.

    Example:
    ```python
    task = YOLORObjectDetector.from_preset("yolor_p6")
    predictor = Predictor(task, image_size=640)
    [result] = predictor.predict(["street.jpg"])
    result["boxes"], result["class_names"]
    ```
    """

    def __init__(
        self,
        task,
        class_names=None,
        image_size=None,
        conf_threshold=None,
        iou_threshold=None,
        max_detections=None,
        multi_label=None,
        batch_size=8,
        precision="fp32",
        prediction_decoder=None,
    ):
        check_task(task)
        self.precision = check_precision(precision)
        # Checked before the bf16 rebuild and the first call, which traces.
        decoder = prediction_decoder if prediction_decoder is not None else task.prediction_decoder
        settings = {
            "conf_threshold": conf_threshold,
            "iou_threshold": iou_threshold,
            "max_detections": max_detections,
            "multi_label": multi_label,
        }
        settings = {name: value for name, value in settings.items() if value is not None}
        if settings:
            decoder = NonMaxSuppression(**{**decoder.settings(), **settings})
        self.prediction_decoder = decoder
        preprocessor = task.preprocessor
        if image_size is None:
            if preprocessor is not None:
                image_size = preprocessor.image_size
            elif isinstance(task.image_size, int):
                image_size = task.image_size
            else:
                image_size = DEFAULT_IMAGE_SIZE
        check_image_size(image_size, max(task.strides))
        if preprocessor is not None and preprocessor.image_size != image_size:
            # The task's letterbox (pad value, resize filter) at another size.
            preprocessor = YOLORImageConverter.from_config(
                {**preprocessor.get_config(), "image_size": image_size}
            )
        task = with_precision(task, precision)
        if class_names is None:
            class_names = task.class_names
        num_classes = task.num_classes if "detection" in task.head_names else None
        super().__init__(
            num_classes, max(task.strides), class_names, image_size, batch_size, preprocessor
        )
        self.model = task
        self.detect_letterboxed = tf.function(
            self._detect_letterboxed,
            input_signature=[
                tf.TensorSpec([None, self.image_size, self.image_size, 3], tf.float32)
            ],
        )

    @property
    def task(self):
        """The task the predictor runs (the bf16 copy for ``precision="bf16"``)."""
        return self.model

    def _detect_letterboxed(self, images):
        """Letterboxed float images -> ``task.detect``'s outputs, in input pixels."""
        return self.model.detect(images, prediction_decoder=self.prediction_decoder)

    def detect_letterboxed_batch(self, images):
        outputs = self.detect_letterboxed(tf.convert_to_tensor(images, tf.float32))
        return {key: value.numpy() for key, value in outputs.items()}


def load_detector(path):
    """Loads a `.keras` task saved with `model.save`, with clear errors.

    Args:
        path: the `.keras` file.

    Returns:
        The `YOLORObjectDetector` (not compiled).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such model file.")
    if not path.endswith(".keras"):
        raise ValueError(f"{path}: expected a `.keras` file written by `model.save`.")
    model = keras.saving.load_model(path, compile=False)
    try:
        check_task(model)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    return model


def read_class_names(path):
    """Class names from a text file (one per line) or a YAML file with `names`.

    The YAML form is the official data file's: ``names: [person, bicycle]``
    or ``names: {0: person, 1: bicycle}``.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such class-names file.")
    with open(path, encoding="utf-8") as file:
        text = file.read()
    if path.endswith((".yaml", ".yml")):
        import yaml

        data = yaml.safe_load(text) or {}
        names = data.get("names") if isinstance(data, dict) else None
        if isinstance(names, dict):
            names = [names[key] for key in sorted(names)]
        if not isinstance(names, list) or not names:
            raise ValueError(f"{path}: expected a `names:` list or mapping.")
        return [str(name) for name in names]
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise ValueError(f"{path}: no class names found (one per line expected).")
    return names
