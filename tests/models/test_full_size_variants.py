"""Every official variant at full size: parameter count, output shapes, one forward pass."""

import keras
import numpy as np
import pytest

from yolor_keras.tasks import YOLORObjectDetector

# Official counts (model.parameters(), nc=80) where they are known exactly;
# otherwise the published figure in millions (README of the official repo).
EXACT = {"yolor_p6": 37_265_016, "yolor_csp": 52_923_994, "yolor_p6_paper": 37_270_264}
PUBLISHED_MILLIONS = {
    "yolor_csp_x": 99.8,
    "yolor_w6": 79.9,
    "yolor_w6_paper": 79.9,
    "yolor_e6_paper": 115.9,
    "yolor_d6_paper": 151.8,
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted({**EXACT, **PUBLISHED_MILLIONS}))
def test_full_size_variant(name):
    model = YOLORObjectDetector.from_preset(name)
    count = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    if name in EXACT:
        assert count == EXACT[name]
    else:
        assert round(count / 1e6, 1) == PUBLISHED_MILLIONS[name], count
    size = 256
    raw = model(np.random.default_rng(0).random((1, size, size, 3)).astype("float32"))
    assert [tuple(r.shape) for r in raw] == [
        (1, size // s, size // s, 3, 85) for s in model.strides
    ]
    assert all(np.isfinite(keras.ops.convert_to_numpy(r)).all() for r in raw)
