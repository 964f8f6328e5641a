"""Training and evaluation data: readers, YOLOR augmentation, tf.data pipelines.

Readers index a dataset into validated records (`read_coco_json`,
`read_yolo_txt`, `read_yolo_data_yaml`, `TFDSSource`); `build_dataset`
turns any of them into batches of `(images, {"boxes", "classes"})`.
"""

from yolor_keras.data.coco_reader import read_coco_json
from yolor_keras.data.decode import letterbox_to_original
from yolor_keras.data.multi_task import MultiTaskDatasetInfo
from yolor_keras.data.multi_task import build_multi_task_dataset
from yolor_keras.data.multi_task import read_identities
from yolor_keras.data.pipeline import DatasetInfo
from yolor_keras.data.pipeline import build_dataset
from yolor_keras.data.pipeline import load_source
from yolor_keras.data.recipe import AugmentationRecipe
from yolor_keras.data.records import DetectionSource
from yolor_keras.data.records import RecordSet
from yolor_keras.data.records import Sample
from yolor_keras.data.report import DataReport
from yolor_keras.data.tfds_reader import TFDSSource
from yolor_keras.data.yolo_reader import read_yolo_data_yaml
from yolor_keras.data.yolo_reader import read_yolo_txt

__all__ = [
    "AugmentationRecipe",
    "DataReport",
    "DatasetInfo",
    "DetectionSource",
    "MultiTaskDatasetInfo",
    "RecordSet",
    "Sample",
    "TFDSSource",
    "build_dataset",
    "build_multi_task_dataset",
    "letterbox_to_original",
    "load_source",
    "read_coco_json",
    "read_identities",
    "read_yolo_data_yaml",
    "read_yolo_txt",
]

# Keras is loaded by now; make sure `.keras` files can find every class.
from yolor_keras import register_serializable_classes  # noqa: E402

register_serializable_classes(finished=__name__)
