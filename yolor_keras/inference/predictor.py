"""End-to-end detection on ordinary images: letterbox, network, decode, NMS, map back.

`BasePredictor` holds everything that does not depend on the runtime (reading
images, letterboxing, batching, mapping boxes back to each image's pixels).
`Predictor` runs a Keras detector through one compiled `tf.function`;
`yolor_keras.export` adds runners for the exported TFLite and ONNX files on
the same base, so every runtime returns the same kind of result.
"""

import os

import numpy as np
import tensorflow as tf

from yolor_keras.data import image_decoding
from yolor_keras.inference.letterboxing import check_image_size
from yolor_keras.inference.letterboxing import letterbox
from yolor_keras.layers.nms import non_max_suppression
from yolor_keras.inference.postprocess import scale_boxes_to_original


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


class BasePredictor:
    """Runtime-independent part of a predictor.

    Subclasses implement `detect_letterboxed_batch`, which takes a batch of
    letterboxed images and returns padded detections in input pixels.

    Args:
        num_classes: number of classes the detector predicts, or None when
            the runtime cannot tell (a file with NMS inside).
        max_stride: the detector's largest stride; `image_size` must be a
            multiple of it.
        class_names: list of `num_classes` names, or None for "0", "1", ...
        image_size: side of the square network input.
        batch_size: how many images go through the network at once.
    """

    def __init__(self, num_classes, max_stride, class_names=None, image_size=640, batch_size=8):
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
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive int; got {batch_size!r}.")
        self.batch_size = batch_size
        self._letterbox = tf.function(
            lambda image: letterbox(image, self.image_size),
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
            `(batch, max_det)` int32, `num_detections` `(batch,)` int32.
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
        """Letterboxes one uint8 image; returns `(input, scale, pad)` as numpy."""
        letterboxed, scale, pad = self._letterbox(tf.convert_to_tensor(image, tf.uint8))
        return letterboxed.numpy(), scale.numpy(), pad.numpy()

    def predict(self, images):
        """Detects objects in images.

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
            - `"class_names"`: list of `n` class names.
        """
        if isinstance(images, (str, os.PathLike, bytes, bytearray)) or (
            isinstance(images, np.ndarray) and images.ndim == 3
        ):
            images = [images]
        results = []
        for start in range(0, len(images), self.batch_size):
            chunk = [
                # Paths name themselves in errors; other inputs by position.
                read_image(image, name=None if isinstance(image, (str, os.PathLike)) else f"images[{index}]")
                for index, image in enumerate(images[start : start + self.batch_size], start)
            ]
            prepared = [self.letterbox(image) for image in chunk]
            batch = np.stack([inputs for inputs, _, _ in prepared])
            detections = self.detect_letterboxed_batch(batch)
            for index, (image, (_, scale, pad)) in enumerate(zip(chunk, prepared)):
                count = int(detections["num_detections"][index])
                boxes = scale_boxes_to_original(
                    detections["boxes"][index, :count], scale, pad, image.shape[:2]
                ).numpy()
                classes = np.asarray(detections["classes"][index, :count], np.int32)
                results.append(
                    {
                        "boxes": boxes.astype(np.float32),
                        "scores": np.asarray(detections["scores"][index, :count], np.float32),
                        "classes": classes,
                        "class_names": [self.class_name(c) for c in classes],
                    }
                )
        return results


def detector_geometry(model):
    """Reads `(num_classes, strides, anchors)` from a detector, with a clear error."""
    missing = [name for name in ("num_classes", "strides", "anchors") if not hasattr(model, name)]
    if missing:
        raise ValueError(
            f"The model {getattr(model, 'name', model)!r} lacks the detector "
            f"attribute(s) {missing}; build it with `YOLORObjectDetector`."
        )
    strides = [int(stride) for stride in model.strides]
    anchors = np.asarray(model.anchors, np.float32)
    if anchors.shape[0] != len(strides):
        raise ValueError(
            f"The detector has {len(strides)} strides but anchors for "
            f"{anchors.shape[0]} levels."
        )
    return int(model.num_classes), strides, anchors


# Precision names of `with_precision`, the `--precision` options and the
# export metadata, mapped to Keras dtype policies. "bf16" keeps float32
# variables and computes in bfloat16 (AMX / AVX512-BF16 CPUs, TPUs, recent
# GPUs run its convolutions several times faster than float32).
PRECISIONS = {"fp32": "float32", "bf16": "mixed_bfloat16"}


def check_precision(precision):
    """Returns `precision` if it is a known name, else raises a clear ValueError."""
    if precision not in PRECISIONS:
        raise ValueError(
            f"`precision` must be one of {sorted(PRECISIONS)}; got {precision!r}."
        )
    return precision


def model_precision(model):
    """The `PRECISIONS` name of a model's dtype policy ("fp32" or "bf16")."""
    policy = getattr(getattr(model, "dtype_policy", None), "name", "float32")
    for name, policy_name in PRECISIONS.items():
        if policy == policy_name:
            return name
    raise ValueError(f"The model {model.name!r} has an unsupported dtype policy {policy!r}.")


def with_precision(model, precision):
    """The same detector computing in `precision`, with the same weights.

    The one place where a detector changes precision (the predictor, the
    SavedModel export and the benchmark all go through it). Keras fixes each
    layer's dtype policy when the layer is built, so a bf16 copy is rebuilt
    from the detector's config under the ``mixed_bfloat16`` policy and given
    its weights: variables stay float32 (so the copy saves and folds like
    the original), every layer computes in bfloat16. The raw outputs come
    out in bfloat16; `decode_predictions` casts them to float32, so decoding
    and NMS run in float32.

    Args:
        model: a `YOLORObjectDetector` (training or deploy form).
        precision: "fp32" or "bf16".

    Returns:
        `model` itself when it already computes in `precision`, else a new
        detector.
    """
    import keras

    check_precision(precision)
    if model_precision(model) == precision:
        return model
    if not hasattr(model, "get_config"):
        raise ValueError(f"The model {model.name!r} has no config to rebuild it in {precision}.")
    previous = keras.config.dtype_policy()
    # The global policy is what the detector's sublayers take when built;
    # it is restored even if the rebuild fails.
    keras.config.set_dtype_policy(PRECISIONS[precision])
    try:
        rebuilt = type(model).from_config(model.get_config())
    finally:
        keras.config.set_dtype_policy(previous)
    rebuilt.set_weights(model.get_weights())
    return rebuilt


class Predictor(BasePredictor):
    """Runs a YOLOR detector on images and returns boxes in their own pixels.

    Each image is letterboxed to a square `image_size` (aspect kept, grey
    114 padding, `image_size` a multiple of the largest stride), the batch
    goes through the detector, `decode_predictions` and NMS inside one
    compiled `tf.function` (no `model.predict` overhead), and the boxes are
    mapped back to the original image.

    Args:
        model: a `YOLORObjectDetector` (or any model with its raw-output contract
            and `num_classes`, `strides`, `anchors` attributes).
        class_names: list of names; None takes the detector's own
            `class_names`, or "0", "1", ... when it has none.
        image_size: side of the square network input.
        conf_threshold: minimum score (objectness x class probability).
        iou_threshold: NMS IoU threshold.
        max_detections: most detections kept per image.
        multi_label: keep every class above `conf_threshold` for a box.
        batch_size: images per network call.
        precision: "fp32", or "bf16" to run the network in bfloat16 (a copy
            of `model` built by `with_precision`; decode and NMS stay
            float32). bf16 moves the raw outputs by a few tenths of a percent
            of their spread and boxes by a fraction of a pixel; on CPUs with
            AMX it runs the convolutions several times faster.

    Example:
    ```python
    detector = YOLORObjectDetector.from_preset("yolor_p6")
    predictor = Predictor(detector, image_size=640)
    [result] = predictor.predict(["street.jpg"])
    result["boxes"], result["class_names"]
    ```
    """

    def __init__(
        self,
        model,
        class_names=None,
        image_size=640,
        conf_threshold=0.25,
        iou_threshold=0.45,
        max_detections=300,
        multi_label=False,
        batch_size=8,
        precision="fp32",
    ):
        num_classes, strides, anchors = detector_geometry(model)
        self.precision = check_precision(precision)
        model = with_precision(model, precision)
        if class_names is None:
            class_names = getattr(model, "class_names", None)
        super().__init__(num_classes, max(strides), class_names, image_size, batch_size)
        self.model = model
        self.strides = strides
        self.anchors = anchors
        # Checked here rather than at the first call, which traces the model.
        for name, value in (("conf_threshold", conf_threshold), ("iou_threshold", iou_threshold)):
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"`{name}` must be in [0, 1]; got {value!r}.")
        if isinstance(max_detections, bool) or not isinstance(max_detections, int) or max_detections < 1:
            raise ValueError(f"`max_detections` must be a positive int; got {max_detections!r}.")
        self.conf_threshold = float(conf_threshold)
        self.iou_threshold = float(iou_threshold)
        self.max_detections = max_detections
        self.multi_label = bool(multi_label)
        self.detect_letterboxed = tf.function(
            self._detect_letterboxed,
            input_signature=[
                tf.TensorSpec([None, self.image_size, self.image_size, 3], tf.float32)
            ],
        )

    def _detect_letterboxed(self, images):
        """Letterboxed float images -> padded NMS detections in input pixels.

        Traceable: the SavedModel export calls this inside its signatures.
        """
        from yolor_keras.models import decode_predictions

        raw = self.model(images, training=False)
        decoded = decode_predictions(raw, self.anchors, self.strides)
        return non_max_suppression(
            decoded,
            conf_threshold=self.conf_threshold,
            iou_threshold=self.iou_threshold,
            max_detections=self.max_detections,
            multi_label=self.multi_label,
        )

    def detect_letterboxed_batch(self, images):
        detections = self.detect_letterboxed(tf.convert_to_tensor(images, tf.float32))
        return {key: value.numpy() for key, value in detections.items()}


def load_detector(path):
    """Loads a `.keras` detector saved with `model.save`, with clear errors.

    Args:
        path: the `.keras` file.

    Returns:
        The detector (not compiled).
    """
    import keras

    import yolor_keras.models  # noqa: F401  (registers the detector's classes)

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such model file.")
    if not path.endswith(".keras"):
        raise ValueError(f"{path}: expected a `.keras` file written by `model.save`.")
    model = keras.saving.load_model(path, compile=False)
    detector_geometry(model)
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
