"""Checks that a written export runs and answers finite values.

Every exporter writes its artefact beside the destination, runs these
checks on it, and only then renames it into place (`yolor_keras.atomic`).
"""

import numpy as np


class ExportCheckError(RuntimeError):
    """A written export failed its checks; it was not put in place."""


def check_finite_outputs(outputs, source):
    """Raises `ExportCheckError` when an exported model's outputs hold NaN or inf.

    A conversion that loses the weights produces a file that loads and runs
    but answers NaN.

    Args:
        outputs: dict of output name to numpy array.
        source: the file or folder named in the error.
    """
    for name, value in outputs.items():
        value = np.asarray(value)
        if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
            raise ExportCheckError(f"{source}: output {name!r} holds NaN or infinite values.")
    if "num_detections" in outputs:
        counts = np.asarray(outputs["num_detections"])
        limit = next(
            (
                np.shape(outputs[name])[1]
                for name in ("detection_scores", "scores")
                if name in outputs
            ),
            None,
        )
        if np.any(counts < 0) or (limit is not None and np.any(counts > limit)):
            raise ExportCheckError(f"{source}: num_detections {counts.tolist()} is out of range.")
