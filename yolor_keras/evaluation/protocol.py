"""Constants of the official YOLOR COCO evaluation protocol (`test.py`)."""

import types

# NMS settings of the official mAP runs. Use as
# `non_max_suppression(decoded, **COCO_EVAL_NMS)`.
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
