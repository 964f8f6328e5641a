"""Training and evaluation data: readers, YOLOR augmentation, tf.data pipelines.

Readers index a dataset into validated records (`read_coco_json`,
`read_yolo_txt`, `read_yolo_data_yaml`, `TFDSSource`); `build_dataset`
turns any of them into batches of `(images, {"boxes", "classes"})`, with
optional extra per-image targets for multi-task models. `letterbox`,
`boxes_to_original` and `read_image` are the one letterbox, inverse mapping
and image reader of training, evaluation, inference and export.
"""

from yolor_keras.lazy_exports import lazy_getattr

_EXPORTS = {
    "AugmentationRecipe": "recipe",
    "boxes_to_original": "letterbox_ops",
    "build_dataset": "pipeline",
    "build_multi_task_dataset": "multi_task",
    "class_presence": "multi_task",
    "DataReport": "report",
    "DatasetInfo": "pipeline",
    "DetectionSource": "records",
    "identities_from": "multi_task",
    "letterbox": "letterbox_ops",
    "letterbox_to_original": "image_decoding",
    "load_coco_file": "coco_reader",
    "load_source": "pipeline",
    "MultiTaskDatasetInfo": "multi_task",
    "PAD_VALUE": "letterbox_ops",
    "read_coco_json": "coco_reader",
    "read_image": "image_decoding",
    "read_identities": "multi_task",
    "read_yolo_data_yaml": "yolo_reader",
    "read_yolo_txt": "yolo_reader",
    "RecordSet": "records",
    "Sample": "records",
    "TFDSSource": "tfds_reader",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
