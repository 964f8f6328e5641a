"""Predictors that run exported `.tflite` and `.onnx` files on ordinary images.

They share `BasePredictor` with the Keras `Predictor`: same image reading,
letterbox and mapping back to each image's pixels, same result dicts. A file
exported with NMS inside returns detections directly; a file without it
returns decoded predictions, which get the package's `NonMaxSuppression`
here (the documented Python post-process for runtimes without in-graph
NMS). The outputs of a task's other heads (``label_probabilities``,
``embedding``) are passed on as the file gives them.
"""

import os

import numpy as np
import tensorflow as tf

from yolor_keras.inference.predictor import BasePredictor
from yolor_keras.layers import NonMaxSuppression
from yolor_keras.tasks.yolor_object_detector import DECODED_OUTPUT
from yolor_keras.tasks.yolor_object_detector import EMBEDDING_OUTPUT
from yolor_keras.tasks.yolor_object_detector import LABEL_OUTPUT
from yolor_keras.tasks.yolor_object_detector import NMS_OUTPUTS

# Outputs of the heads other than detection, returned as the file gives them.
HEAD_OUTPUTS = (LABEL_OUTPUT, EMBEDDING_OUTPUT)


class _FilePredictor(BasePredictor):
    """Common part: output handling of files with or without NMS."""

    def __init__(
        self,
        image_size,
        num_classes,
        output_names,
        class_names,
        conf_threshold,
        iou_threshold,
        max_detections,
        multi_label,
        batch_size,
        preprocessor,
    ):
        output_names = list(output_names)
        self.has_nms = set(NMS_OUTPUTS) <= set(output_names)
        self.head_outputs = [name for name in HEAD_OUTPUTS if name in output_names]
        if not self.has_nms and DECODED_OUTPUT not in output_names:
            raise ValueError(
                f"The file's outputs {sorted(output_names)} hold neither "
                f"{list(NMS_OUTPUTS)} nor [{DECODED_OUTPUT!r}]: not a YOLOR detection export."
            )
        # The stride check of the base class is the export's business here.
        super().__init__(
            num_classes, image_size, class_names, image_size, batch_size, preprocessor=preprocessor
        )
        # Applied to files without NMS inside; checks the settings here.
        self.prediction_decoder = NonMaxSuppression(
            conf_threshold=conf_threshold,
            iou_threshold=iou_threshold,
            max_detections=max_detections,
            multi_label=multi_label,
        )
        self.conf_threshold = self.prediction_decoder.conf_threshold
        self.iou_threshold = self.prediction_decoder.iou_threshold
        self.max_detections = self.prediction_decoder.max_detections
        self.multi_label = self.prediction_decoder.multi_label

    def _finish(self, outputs):
        if self.has_nms:
            results = {name: np.asarray(outputs[name]) for name in NMS_OUTPUTS}
        else:
            decoded = tf.convert_to_tensor(np.asarray(outputs[DECODED_OUTPUT], np.float32))
            results = {
                name: np.asarray(value) for name, value in self.prediction_decoder(decoded).items()
            }
        results.update({name: np.asarray(outputs[name]) for name in self.head_outputs})
        return results


class LiteRTPredictor(_FilePredictor):
    """Runs a `.tflite` file from `export_tflite` with the LiteRT runtime.

    Works for the file of any task with a detection head; the other heads'
    outputs come with each result.

    Args:
        filepath: the `.tflite` file.
        class_names: optional list of class names.
        conf_threshold, iou_threshold, max_detections, multi_label: NMS
            settings for files exported without NMS (ignored otherwise: the
            file's own settings apply).
        num_threads: LiteRT CPU threads (None: every usable core).
        preprocessor: the exported task's ``preprocessor`` when it has one
            (its padding grey); default ``YOLORImageConverter`` at the
            file's input size.

    Example:
    ```python
    predictor = LiteRTPredictor("yolor_p6_int8.tflite", class_names=names)
    [result] = predictor.predict(["street.jpg"])
    ```
    """

    def __init__(
        self,
        filepath,
        class_names=None,
        conf_threshold=0.25,
        iou_threshold=0.45,
        max_detections=100,
        multi_label=False,
        num_threads=None,
        preprocessor=None,
    ):
        from yolor_keras.export.litert import INPUT_NAME
        from yolor_keras.export.litert import SIGNATURE
        from yolor_keras.export.litert import load_interpreter

        self.filepath = os.fspath(filepath)
        self.interpreter = load_interpreter(self.filepath, num_threads=num_threads)
        signatures = self.interpreter.get_signature_list()
        if SIGNATURE not in signatures:
            raise ValueError(
                f"{self.filepath} has no {SIGNATURE!r} signature (it has "
                f"{sorted(signatures)}): not a YOLOR export."
            )
        self._runner = self.interpreter.get_signature_runner(SIGNATURE)
        self._input_name = INPUT_NAME
        input_shape = self._runner.get_input_details()[INPUT_NAME]["shape"]
        output_details = self._runner.get_output_details()
        num_classes = None
        if DECODED_OUTPUT in output_details:
            num_classes = int(output_details[DECODED_OUTPUT]["shape"][-1]) - 5
        super().__init__(
            int(input_shape[1]),
            num_classes,
            list(output_details),
            class_names,
            conf_threshold,
            iou_threshold,
            max_detections,
            multi_label,
            batch_size=int(input_shape[0]),
            preprocessor=preprocessor,
        )

    def detect_letterboxed_batch(self, images):
        # The file has a fixed batch of one (what TFLite delegates expect).
        per_image = [
            self._finish(self._runner(**{self._input_name: image[None].astype(np.float32)}))
            for image in images
        ]
        return {
            name: np.concatenate([result[name] for result in per_image]) for name in per_image[0]
        }


class ONNXPredictor(_FilePredictor):
    """Runs a `.onnx` file from `export_onnx` with ONNX Runtime.

    Args:
        filepath: the `.onnx` file.
        class_names: optional list of class names.
        conf_threshold, iou_threshold, max_detections, multi_label: NMS
            settings for files exported without NMS.
        providers: ONNX Runtime execution providers (default: CPU).
        batch_size: images per call (the file's batch size is dynamic).
        num_threads: intra-op threads (default: every usable core).
        spinning: let idle ONNX Runtime threads spin-wait for work. Off by
            default: on a machine whose cores other processes also use,
            spinning threads took the cores from the worker that had work
            (measured 1.6x slower on 2 shared cores); turn it on for a
            dedicated server.
        preprocessor: the exported task's ``preprocessor`` when it has one
            (its padding grey); default ``YOLORImageConverter`` at the
            file's input size.
    """

    def __init__(
        self,
        filepath,
        class_names=None,
        conf_threshold=0.25,
        iou_threshold=0.45,
        max_detections=100,
        multi_label=False,
        providers=("CPUExecutionProvider",),
        batch_size=8,
        preprocessor=None,
        num_threads=None,
        spinning=False,
    ):
        self.filepath = os.fspath(filepath)
        if not os.path.isfile(self.filepath):
            raise FileNotFoundError(f"{self.filepath}: no such ONNX file.")
        self.session = onnx_session(
            self.filepath, providers=providers, num_threads=num_threads, spinning=spinning
        )
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise ValueError(f"{self.filepath}: expected one (batch, S, S, 3) input; got {inputs}.")
        self._input_name = inputs[0].name
        self._output_names = [output.name for output in self.session.get_outputs()]
        num_classes = None
        for output in self.session.get_outputs():
            if output.name == DECODED_OUTPUT:
                num_classes = int(output.shape[-1]) - 5
        super().__init__(
            int(inputs[0].shape[1]),
            num_classes,
            self._output_names,
            class_names,
            conf_threshold,
            iou_threshold,
            max_detections,
            multi_label,
            batch_size,
            preprocessor,
        )

    def detect_letterboxed_batch(self, images):
        outputs = self.session.run(None, {self._input_name: np.asarray(images, np.float32)})
        return self._finish(dict(zip(self._output_names, outputs)))


def onnx_session(filepath, providers=("CPUExecutionProvider",), num_threads=None, spinning=False):
    """An ONNX Runtime session set up for batch-1 latency on a CPU.

    Every graph optimisation (ONNX Runtime fuses each Sigmoid-Mul pair of
    the SiLU activations into one kernel and runs the convolutions in its
    blocked NCHWc layout), one intra-op thread per usable core, sequential
    execution (the network is a chain of convolutions with no branches
    worth running side by side), and no spinning by default (see
    `ONNXPredictor`).

    Args:
        filepath: the `.onnx` file.
        providers: execution providers.
        num_threads: intra-op threads (default: every usable core).
        spinning: whether idle threads spin-wait for work.
    """
    import onnxruntime

    from yolor_keras.export.litert import usable_cores

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = int(num_threads or usable_cores())
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return onnxruntime.InferenceSession(os.fspath(filepath), options, providers=list(providers))
