"""`COCOEvaluator`: COCO box mAP with the detectron2 evaluator protocol."""

import contextlib
import io
import json
import os

import numpy as np

from yolor_keras.atomic import write_file_atomically
from yolor_keras.evaluation.coco_format import detections_to_rows
from yolor_keras.evaluation.coco_format import labels_to_annotations
from yolor_keras.evaluation.coco_format import rows_to_results
from yolor_keras.evaluation.protocol import COCO_STAT_NAMES


class COCOEvaluator:
    """Accumulates detections batch by batch and scores them with COCOeval.

    The engine is faster-coco-eval, whose statistics equal pycocotools' (the
    reference the official YOLOR uses) and which is several times faster.

    Ground truth comes from one of two places:
    - a COCO annotation file (`annotations`): detections must then be in
      original image pixels, e.g. mapped with
      `yolor_keras.data.letterbox_ops.boxes_to_original`. Crowd regions and
      area ranges are handled exactly as in the official evaluation;
    - the labels of each batch (`process(..., ground_truth=labels)`), for
      datasets without a COCO file: boxes of labels and detections must be in
      the same pixel frame, and the area of a box is its width x height.

    Only processed images are evaluated (as the official `test.py` does).

    Args:
        annotations: path to a COCO annotation JSON, or the loaded dict, or
            None to take ground truth from `process`.
        category_ids: COCO category id of each contiguous class index. By
            default the sorted category ids of `annotations` (for COCO 2017
            that is `COCO_CATEGORY_IDS`), or the class index itself when
            ground truth comes from labels.
        verbose: print COCOeval's summary table in `evaluate()`.

    Example:
    ```python
    evaluator = COCOEvaluator("annotations/instances_val2017.json")
    for image_ids, images, scale, pad, sizes in batches:
        detections = task.detect(images, prediction_decoder=evaluation_decoder())
        detections["boxes"] = boxes_to_original(detections["boxes"], scale, pad, sizes)
        evaluator.process(image_ids, detections)
    metrics = evaluator.evaluate()  # {"mAP": ..., "mAP50": ..., "AP": ..., ...}
    ```
    """

    def __init__(self, annotations=None, category_ids=None, verbose=False):
        # Imported here so that the rest of the package works without the
        # `eval` extra installed.
        from faster_coco_eval import COCO

        self._coco_class = COCO
        self.verbose = verbose
        self._ground_truth = None
        if annotations is not None:
            if isinstance(annotations, (str, os.PathLike)) and not os.path.isfile(annotations):
                raise FileNotFoundError(f"COCO annotation file not found: {annotations}")
            with contextlib.redirect_stdout(io.StringIO()):
                self._ground_truth = COCO(annotations)
            if not self._ground_truth.getCatIds():
                raise ValueError(f"COCO annotations {_describe(annotations)} have no categories.")
            if category_ids is None:
                category_ids = sorted(self._ground_truth.getCatIds())
            unknown = sorted(set(category_ids) - set(self._ground_truth.getCatIds()))
            if unknown:
                raise ValueError(
                    f"category_ids {unknown} are not categories of the annotations "
                    f"{_describe(annotations)}."
                )
        self.category_ids = None if category_ids is None else [int(c) for c in category_ids]
        self.per_category_ap = {}
        self.reset()

    def reset(self):
        """Forgets everything processed so far."""
        self._image_ids = []
        self._seen_image_ids = set()
        self._detection_rows = []
        self._annotations = []

    def process(self, image_ids, detections, ground_truth=None):
        """Adds the detections (and, without an annotation file, labels) of a batch.

        Args:
            image_ids: `(batch,)` integer image ids (COCO image ids with an
                annotation file; any unique integers otherwise).
            detections: dict of `"boxes"` `(batch, M, 4)` `[x1, y1, x2, y2]`,
                `"scores"` `(batch, M)`, `"classes"` `(batch, M)` contiguous
                class indices, optional `"num_detections"` `(batch,)`, as
                returned by `non_max_suppression`. NumPy arrays or tensors.
            ground_truth: labels dict of `"boxes"` `(batch, G, 4)` and
                `"classes"` `(batch, G)` padded with -1; required exactly when
                the evaluator has no annotation file.
        """
        id_array = np.asarray(image_ids)
        if id_array.ndim != 1 or not np.issubdtype(id_array.dtype, np.integer):
            raise ValueError(
                f"`image_ids` must be a 1-D sequence of integers; got {id_array.dtype} "
                f"array of shape {id_array.shape}."
            )
        ids = id_array.tolist()
        if self._ground_truth is not None:
            if ground_truth is not None:
                raise ValueError(
                    "This evaluator reads ground truth from its annotation file; "
                    "do not pass `ground_truth` to process()."
                )
            missing = [i for i in ids if i not in self._ground_truth.imgs]
            if missing:
                raise ValueError(f"image_ids {missing[:5]} are not images of the COCO annotations.")
        elif ground_truth is None:
            raise ValueError(
                "This evaluator has no annotation file, so process() needs the "
                "batch's labels as `ground_truth`."
            )
        repeated = [i for i in ids if i in self._seen_image_ids]
        if repeated or len(set(ids)) != len(ids):
            raise ValueError(
                f"image_ids {repeated[:5] or ids} were processed more than once; "
                "each image must be processed exactly once between resets."
            )

        category_ids = self._category_ids_for_batch(detections, ground_truth)
        rows = detections_to_rows(ids, detections, category_ids)
        if ground_truth is not None:
            self._annotations.extend(
                labels_to_annotations(ids, ground_truth, category_ids, len(self._annotations) + 1)
            )
        self._detection_rows.append(rows)
        self._image_ids.extend(ids)
        self._seen_image_ids.update(ids)

    def evaluate(self):
        """Runs COCOeval on everything processed since the last reset.

        Returns:
            dict of floats: `"mAP"` (AP at IoU 0.50:0.95), `"mAP50"`, and the
            12 COCO statistics named in `COCO_STAT_NAMES` (`"AP"`, `"AP50"`,
            ..., `"ARl"`), as fractions in [0, 1]; -1 where a statistic has no
            ground truth (e.g. no small objects). Also fills
            `self.per_category_ap` (category id -> AP@[.5:.95]).
        """
        from faster_coco_eval import COCOeval_faster

        if not self._image_ids:
            raise RuntimeError("COCOEvaluator.evaluate() called before any process().")
        ground_truth = self._ground_truth or self._ground_truth_from_labels()
        rows = np.concatenate(self._detection_rows, axis=0)

        if self.verbose:
            report, silence = print, contextlib.nullcontext()
        else:
            report, silence = _ignore, contextlib.redirect_stdout(io.StringIO())
        with silence:
            detections = ground_truth.loadRes(rows_to_results(rows))
            coco_eval = COCOeval_faster(
                ground_truth, detections, iouType="bbox", print_function=report
            )
            coco_eval.params.imgIds = sorted(self._image_ids)
            coco_eval.evaluate()
            coco_eval.accumulate()
            coco_eval.summarize()

        stats = [float(value) for value in coco_eval.stats[: len(COCO_STAT_NAMES)]]
        metrics = {"mAP": stats[0], "mAP50": stats[1]}
        metrics.update(zip(COCO_STAT_NAMES, stats))
        self.per_category_ap = _per_category_ap(coco_eval)
        return metrics

    def results(self):
        """The processed detections as COCO result records (for JSON files)."""
        if not self._detection_rows:
            return []
        return rows_to_results(np.concatenate(self._detection_rows, axis=0))

    def save_results(self, path):
        """Writes the detections as a COCO results JSON (the test-dev format).

        Boxes are rounded to 1e-3 px and scores to 1e-5, as in the official
        `test.py`, which keeps a full val2017 file near 100 MB.
        """
        records = self.results()
        for record in records:
            record["bbox"] = [round(value, 3) for value in record["bbox"]]
            record["score"] = round(record["score"], 5)

        def write(temporary):
            with open(temporary, "w", encoding="utf-8") as handle:
                json.dump(records, handle)

        write_file_atomically(path, write)

    def _category_ids_for_batch(self, detections, ground_truth):
        if self.category_ids is not None:
            return self.category_ids
        # Labels mode without an explicit mapping: class index = category id.
        largest = -1
        for batch in (detections, ground_truth):
            if batch is not None and "classes" in batch:
                classes = np.asarray(batch["classes"])
                if classes.size:
                    largest = max(largest, int(classes.max()))
        return list(range(largest + 1))

    def _ground_truth_from_labels(self):
        category_ids = sorted(
            {annotation["category_id"] for annotation in self._annotations}
            | {int(c) for rows in self._detection_rows for c in np.unique(rows[:, 6])}
        )
        dataset = {
            "images": [{"id": image_id} for image_id in self._image_ids],
            "annotations": [dict(annotation) for annotation in self._annotations],
            "categories": [{"id": c, "name": str(c)} for c in category_ids],
        }
        with contextlib.redirect_stdout(io.StringIO()):
            return self._coco_class(dataset)


def _per_category_ap(coco_eval):
    """AP@[.5:.95] per category, from COCOeval's precision array [T, R, K, A, M]."""
    precision = np.asarray(coco_eval.eval["precision"])
    area_all = coco_eval.params.areaRngLbl.index("all")
    per_category = {}
    for index, category_id in enumerate(coco_eval.params.catIds):
        values = precision[:, :, index, area_all, -1]
        values = values[values > -1]
        per_category[int(category_id)] = float(values.mean()) if values.size else -1.0
    return per_category


def _ignore(*args, **kwargs):
    del args, kwargs


def _describe(annotations):
    return repr(os.fspath(annotations)) if isinstance(annotations, (str, os.PathLike)) else "(dict)"
