"""Training and evaluation data: readers, YOLOR augmentation, tf.data pipelines.

Readers index a dataset into validated records (`read_coco_json`,
`read_yolo_txt`, `read_yolo_data_yaml`, `TFDSSource`); `build_dataset`
turns any of them into batches of `(images, {"boxes", "classes"})`.
"""

from yolor_keras.lazy_exports import lazy_getattr

_EXPORTS = {
    "AugmentationRecipe": "recipe",
    "build_dataset": "pipeline",
    "build_multi_task_dataset": "multi_task",
    "DataReport": "report",
    "DatasetInfo": "pipeline",
    "DetectionSource": "records",
    "letterbox_to_original": "decode",
    "load_source": "pipeline",
    "MultiTaskDatasetInfo": "multi_task",
    "read_coco_json": "coco_reader",
    "read_identities": "multi_task",
    "read_yolo_data_yaml": "yolo_reader",
    "read_yolo_txt": "yolo_reader",
    "RecordSet": "records",
    "Sample": "records",
    "TFDSSource": "tfds_reader",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
