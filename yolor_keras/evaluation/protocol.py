"""Constants of the official YOLOR COCO evaluation protocol (`test.py`)."""

import types

# NMS settings of the official mAP runs: `NonMaxSuppression(**COCO_EVAL_NMS)`
# (`evaluation_loop.evaluation_decoder()`) is the decoder `evaluate` uses.
COCO_EVAL_NMS = types.MappingProxyType(
    {
        "conf_threshold": 0.001,
        "iou_threshold": 0.65,
        "max_detections": 300,
        "multi_label": True,
    }
)

# COCO category id of each of the 80 contiguous class indices used for
# training (the sorted ids of instances_val2017.json; COCO's ids have gaps).
COCO_CATEGORY_IDS = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21,
    22, 23, 24, 25, 27, 28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44,
    46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65,
    67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90,
)  # fmt: skip

# Names of the 12 summary statistics of COCOeval, in its order. AP is averaged
# over IoU 0.50:0.95 and 100 detections per image unless the name says more.
COCO_STAT_NAMES = (
    "AP", "AP50", "AP75", "APs", "APm", "APl",
    "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
)  # fmt: skip

# How `yolor evaluate` letterboxes: "official" is the rect batches of the
# official `test.py` (see `rect_batches`), "square" an S x S letterbox.
PROTOCOLS = ("official", "square")

# The evaluation size of the official results: 1280 for the P6 family
# (largest stride 64: P6, W6, E6, D6), 640 for the CSP family (stride 32).
P6_FAMILY_IMAGE_SIZE = 1280
CSP_FAMILY_IMAGE_SIZE = 640


def default_image_size(model):
    """The official evaluation size of a model, from its largest stride."""
    strides = getattr(model, "strides", None)
    if not strides:
        raise ValueError(
            f"{type(model).__name__} has no `strides`; pass the image size explicitly."
        )
    return P6_FAMILY_IMAGE_SIZE if max(strides) >= 64 else CSP_FAMILY_IMAGE_SIZE
