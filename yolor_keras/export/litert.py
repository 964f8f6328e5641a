"""TFLite (LiteRT) export: float32, float16 or int8, NMS in the graph by default.

The file takes one letterboxed image, float32 ``(1, S, S, 3)`` in [0, 1]
(the task's ``preprocessor``, a `YOLORImageConverter`, makes it), and its
``serve`` signature returns ``task.detect``'s outputs: for the detection
head ``boxes`` (``(1, max_det, 4)`` x1y1x2y2 in input pixels), ``scores``,
``classes`` and ``num_detections`` (NMS in the graph, built-in ops only, so
the plain LiteRT runtime runs it), or, with ``nms=False``, ``predictions``
``(1, N, 5 + classes)`` for `yolor_keras.export.LiteRTPredictor` to finish;
plus ``label_probabilities`` and ``embedding`` for the other heads.

Conversion goes through `keras.export.ExportArchive` and
``TFLiteConverter.from_saved_model``: converting concrete functions directly
can silently produce a weightless file that outputs NaN.
"""

import os
import tempfile
import warnings

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from yolor_keras.atomic import write_file_atomically
from yolor_keras.data.image_decoding import read_image
from yolor_keras.export.checks import ExportCheckError
from yolor_keras.export.checks import check_finite_outputs
from yolor_keras.export.task_graph import detect_function
from yolor_keras.export.task_graph import export_decoder
from yolor_keras.export.task_graph import export_preprocessor
from yolor_keras.export.task_graph import export_task
from yolor_keras.tasks.yolor_object_detector import POSTPROCESS_SCOPE

QUANTIZATIONS = ("none", "fp16", "int8")
# TFLite ops that only the decoding and NMS use. int8 export keeps them in
# float by type too: the converter renames some fused post-processing
# tensors, which then escape the by-name list.
FLOAT_ONLY_OPS = ("TOPK_V2", "GATHER", "GATHER_ND", "NON_MAX_SUPPRESSION_V4", "WHILE")
SIGNATURE = "serve"
INPUT_NAME = "images"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


def calibration_images(images, preprocessor, limit=None):
    """Yields letterboxed calibration inputs, `(1, S, S, 3)` float32, from images.

    The images go through the same reading and letterbox (`preprocessor`)
    as at inference, so that int8 ranges are calibrated on the distribution
    the model sees. Unreadable images are skipped with a warning.

    Args:
        images: a folder of images, or a list of paths / encoded bytes /
            uint8 arrays.
        preprocessor: the export's `YOLORImageConverter`.
        limit: use at most this many images.
    """
    if isinstance(images, (str, os.PathLike)):
        folder = os.fspath(images)
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"Calibration folder {folder} does not exist.")
        images = sorted(
            os.path.join(folder, name)
            for name in os.listdir(folder)
            if os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES
        )
        if not images:
            raise ValueError(f"Calibration folder {folder} has no images.")
    images = list(images)[:limit] if limit else list(images)
    for index, image in enumerate(tqdm(images, desc="Calibrating int8", unit="img")):
        name = None if isinstance(image, (str, os.PathLike)) else f"representative_images[{index}]"
        try:
            pixels = read_image(image, name=name)
        except (OSError, ValueError) as error:
            tqdm.write(f"Skipping calibration image: {error}")
            continue
        yield np.asarray(preprocessor(pixels[None])[0], np.float32)


def export_tflite(
    model,
    filepath,
    image_size=None,
    quantize="none",
    representative_images=None,
    calibration_limit=200,
    nms=True,
    conf_threshold=None,
    iou_threshold=None,
    max_detections=None,
    multi_label=None,
    prediction_decoder=None,
):
    """Exports a task to a `.tflite` file (see the module docstring).

    Args:
        model: a `YOLORObjectDetector`, any heads (a folded copy is
            exported).
        filepath: output path ending in ``.tflite``.
        image_size: side of the square input, a multiple of the largest
            stride; default: the task's ``preprocessor``, else its fixed
            input size, else 640.
        quantize: ``"none"`` (float32), ``"fp16"`` (float16 weights) or
            ``"int8"`` (int8 weights and activations in the network, float
            decoding, float input and outputs; detection-only tasks).
        representative_images: for int8, a folder or list of images to
            calibrate on (letterboxed like at inference).
        calibration_limit: most calibration images used.
        nms: put NMS in the graph (see the module docstring).
        conf_threshold, iou_threshold, max_detections, multi_label: NMS
            settings baked into the graph when `nms` is True; each one left
            None is the task's ``prediction_decoder``'s.
        prediction_decoder: a `NonMaxSuppression` to use instead of the
            task's own.

    The file is written beside `filepath` under a hidden name, checked by
    `check_tflite` and only then renamed to `filepath`: a failed export
    leaves a previous file there as it was.

    Returns:
        `filepath`.
    """
    filepath = os.fspath(filepath)
    if not filepath.endswith(".tflite"):
        raise ValueError(f"A TFLite file name must end with '.tflite'; got {filepath}.")
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"`quantize` must be one of {QUANTIZATIONS}; got {quantize!r}.")
    if quantize == "int8" and representative_images is None:
        raise ValueError(
            "int8 quantization needs `representative_images` (a folder or list of "
            "images like those the model will see) to calibrate activation ranges."
        )
    task = export_task(model)
    if quantize == "int8" and task.head_names != ("detection",):
        # Only the detection post-processing is known to need float (its
        # name scope); label probabilities and embeddings would come out on
        # an int8 grid that nothing here has measured.
        raise ValueError(
            f"int8 quantization takes a detection-only task; this one has heads "
            f"{list(task.head_names)}. Use quantize='fp16' or 'none'."
        )
    preprocessor = export_preprocessor(task, image_size)
    image_size = preprocessor.image_size
    decoder = export_decoder(
        task,
        prediction_decoder,
        conf_threshold=conf_threshold,
        iou_threshold=iou_threshold,
        max_detections=max_detections,
        multi_label=multi_label,
    )
    detect, _ = detect_function(task, nms=nms, prediction_decoder=decoder)
    samples = None
    if quantize == "int8":
        samples = list(calibration_images(representative_images, preprocessor, calibration_limit))
        if not samples:
            raise ValueError("No readable calibration image was found.")
    with tempfile.TemporaryDirectory() as saved_model_dir:
        archive = keras.export.ExportArchive()
        archive.track(task)
        archive.add_endpoint(
            SIGNATURE,
            detect,
            input_signature=[
                tf.TensorSpec([1, image_size, image_size, 3], tf.float32, name=INPUT_NAME)
            ],
        )
        archive.write_out(saved_model_dir, verbose=False)
        tflite_model = _convert(saved_model_dir, quantize, samples)
    return write_tflite(filepath, tflite_model, task.count_params(), quantize)


def write_tflite(filepath, tflite_model, num_weights, quantize):
    """Writes converted bytes to `filepath` atomically, after `check_tflite`."""

    def write(temporary):
        with open(temporary, "wb") as file:
            file.write(tflite_model)

    def check(temporary):
        check_tflite(temporary, num_weights, quantize, name=filepath)

    return write_file_atomically(filepath, write, check=check)


def check_tflite(filepath, num_weights, quantize, name=None):
    """Checks a written `.tflite` file: size, loading, and one finite run.

    Raises `ExportCheckError` naming the file when it is too small to hold the
    weights (`check_tflite_size`), when LiteRT cannot load or run it, or
    when its outputs on a mid-grey image hold NaN or inf.

    Args:
        filepath: the `.tflite` file (an export's temporary copy).
        num_weights: the deploy model's parameter count.
        quantize: the quantization the file was written with.
        name: the file named in errors (default `filepath`), the
            destination when `filepath` is a temporary copy.
    """
    name = name or filepath
    check_tflite_size(filepath, num_weights, quantize, name=name)
    try:
        interpreter = load_interpreter(filepath)
        runner = interpreter.get_signature_runner(SIGNATURE)
        shape = runner.get_input_details()[INPUT_NAME]["shape"]
        outputs = runner(**{INPUT_NAME: np.full(shape, 0.5, np.float32)})
    except Exception as error:
        raise ExportCheckError(f"{name} does not run in LiteRT: {error}") from error
    check_finite_outputs(outputs, name)


def _converter(saved_model_dir):
    converter = tf.lite.TFLiteConverter.from_saved_model(
        saved_model_dir, signature_keys=[SIGNATURE]
    )
    # Built-in ops only: the Python LiteRT runtime has no select-TF ops.
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return converter


def _convert(saved_model_dir, quantize, samples):
    converter = _converter(saved_model_dir)
    if quantize == "none":
        return converter.convert()
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "fp16":
        # float16 weights, float32 arithmetic: decoding stays exact enough.
        converter.target_spec.supported_types = [tf.float16]
        return converter.convert()

    # int8: quantize the network, not the decoding. The decoding concatenates
    # pixel coordinates (0..S) with scores (0..1); under one int8 scale every
    # score would round to zero. Its tensors are found by name scope in a
    # float conversion, and its op types by `FLOAT_ONLY_OPS`, and kept in
    # float32. (The sigmoids, fused with the head, keep int8 outputs with the
    # int8 kernel's fixed 1/256 step; everything after them is float.)
    float_model = _converter(saved_model_dir).convert()
    from ai_edge_litert.interpreter import Interpreter

    tensor_names = [
        detail["name"] for detail in Interpreter(model_content=float_model).get_tensor_details()
    ]
    keep_float = [
        name
        for name in tensor_names
        if name.startswith(POSTPROCESS_SCOPE + "/") or name.startswith("StatefulPartitionedCall")
    ]
    if not any(name.startswith(POSTPROCESS_SCOPE + "/") for name in keep_float):
        raise RuntimeError(
            f"int8 export found no '{POSTPROCESS_SCOPE}/' tensors to keep in float; "
            "the converter's tensor naming has changed."
        )
    representative = lambda: ([sample] for sample in samples)  # noqa: E731
    converter.representative_dataset = representative
    with warnings.catch_warnings():
        # The debugger runs its models with the deprecated tf.lite.Interpreter.
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter,
            debug_dataset=representative,
            debug_options=tf.lite.experimental.QuantizationDebugOptions(
                denylisted_nodes=keep_float, denylisted_ops=list(FLOAT_ONLY_OPS)
            ),
        )
        return debugger.get_nondebug_quantized_model()


def check_tflite_size(filepath, num_weights, quantize, name=None):
    """Raises when a `.tflite` file is too small to hold its weights.

    A converter that loses the weights writes a tiny file that outputs NaN.

    Args:
        filepath: the `.tflite` file.
        num_weights: the deploy model's parameter count.
        quantize: the quantization the file was written with.
        name: the file named in the error (default `filepath`).

    Returns:
        The file size in bytes.
    """
    bytes_per_weight = {"none": 4, "fp16": 2, "int8": 1}[quantize]
    size = os.path.getsize(filepath)
    expected = int(num_weights) * bytes_per_weight
    if size < 0.9 * expected:
        raise ExportCheckError(
            f"{name or filepath} holds {size} bytes but the model's {num_weights} weights "
            f"need about {expected} as {quantize}: the conversion lost them."
        )
    return size


def usable_cores():
    """The CPU cores this process may run on (its affinity mask, else all)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity call
        return os.cpu_count() or 1


def load_interpreter(filepath, num_threads=None):
    """A LiteRT interpreter for a file, with its tensors allocated.

    The built-in op resolver applies the XNNPACK delegate, which runs the
    float32, float16-weight and int8 convolutions. LiteRT's Python runtime
    takes a missing thread count as one thread, so None here means every
    usable core instead (`usable_cores`): one thread left a 2-core machine
    half idle.

    Args:
        filepath: the `.tflite` file.
        num_threads: CPU threads for XNNPACK and the other kernels
            (default: `usable_cores()`).
    """
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_litert.interpreter import OpResolverType

    if not os.path.isfile(filepath):
        raise FileNotFoundError(f"{filepath}: no such TFLite file.")
    if num_threads is None:
        num_threads = usable_cores()
    interpreter = Interpreter(
        model_path=os.fspath(filepath),
        num_threads=int(num_threads),
        # AUTO is the built-in resolver with its default delegate, XNNPACK;
        # named here so that no default change silently drops it.
        experimental_op_resolver_type=OpResolverType.AUTO,
    )
    interpreter.allocate_tensors()
    return interpreter


def run_tflite(interpreter, images):
    """Runs the ``serve`` signature on a `(1, S, S, 3)` float32 batch; dict of numpy."""
    runner = interpreter.get_signature_runner(SIGNATURE)
    return runner(**{INPUT_NAME: np.asarray(images, np.float32)})
