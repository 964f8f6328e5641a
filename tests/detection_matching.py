"""Comparing two sets of final detections where exactly tied scores may swap places."""

import numpy as np


def assert_same_detections(got, want, box_atol=1e-3, box_rtol=0.0, score_rtol=1e-5):
    """`got` and `want` (dicts of boxes, scores, classes) hold the same detections.

    Scores come sorted, so they must agree position by position; two
    detections with exactly tied scores may come in either order (NMS and
    top-k leave their order to the kernel), so each detection of `got` is
    matched to an unused one of `want` with its class, score and box.
    """
    assert len(got["scores"]) == len(want["scores"])
    np.testing.assert_allclose(got["scores"], want["scores"], rtol=score_rtol)
    unmatched = list(range(len(want["scores"])))
    for box, score, label in zip(got["boxes"], got["scores"], got["classes"]):
        match = next(
            (
                index
                for index in unmatched
                if want["classes"][index] == label
                and np.allclose(box, want["boxes"][index], rtol=box_rtol, atol=box_atol)
                and np.isclose(score, want["scores"][index], rtol=score_rtol)
            ),
            None,
        )
        nearest = min(
            (float(np.abs(np.subtract(box, other)).max()) for other in want["boxes"]),
            default=float("inf"),
        )
        assert match is not None, (box, score, label, f"nearest box differs by {nearest:.2e} px")
        unmatched.remove(match)
