"""Converted official checkpoints reproduce the official outputs (the core proof).

Each fixture is a tiny official model with seeded random weights and its
official outputs on a fixed input, computed in float64. Tolerances are the
fixtures README's: 5x the official model's own float32-vs-float64 error,
far below what any porting mistake produces (wrong eps, reorg order,
padding or missing implicit layers all give errors of 1-200 x std).
"""

import keras
import numpy as np
import pytest

from yolor_keras.convert import convert_checkpoint
from yolor_keras.models import decode_predictions

# fixture -> (preset, official parameter count, max |raw error|,
#             centre px, relative size, obj/cls) bounds from the README table x 5.
CASES = {
    "tiny_yolor_p6_main": ("yolor_p6", 588_656, 0.04, 5 * 0.22, 5 * 4.3e-3, 5 * 1.0e-3),
    "tiny_yolor_csp_main": ("yolor_csp", 833_400, 0.006, 5 * 0.010, 5 * 1.6e-3, 5 * 1.6e-4),
    "tiny_yolor_p6_paper": ("yolor_p6_paper", 390_048, 0.004, 5 * 0.011, 5 * 4.1e-4, 5 * 8.8e-5),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def converted(request, fixtures_dir):
    name = request.param
    preset = CASES[name][0]
    model = convert_checkpoint(fixtures_dir / f"{name}.pt", preset)
    image = np.load(fixtures_dir / "tiny_input.npz")["x"].transpose(0, 2, 3, 1)  # NCHW -> NHWC
    reference = dict(np.load(fixtures_dir / f"{name}_output.npz"))
    raw = [keras.ops.convert_to_numpy(r) for r in model(image)]
    return name, model, raw, reference


def test_converted_model_is_the_official_size(converted):
    name, model, _, _ = converted
    assert model.num_classes == 3
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == CASES[name][1]


def test_raw_outputs_match_official(converted):
    name, model, raw, reference = converted
    bound = CASES[name][2]
    assert len(raw) == len(model.strides)
    for level, output in enumerate(raw):
        # Official layout (batch, anchor, row, col, field) -> ours (batch, row, col, anchor, field).
        expected = reference[f"raw_{level}_f64"].transpose(0, 2, 3, 1, 4)
        assert output.shape == expected.shape
        error = np.abs(output - expected).max()
        relative = error / expected.std()
        print(f"{name} raw_{level}: max abs error {error:.2e} ({relative:.2e} x std)")
        assert relative <= 3e-2
        assert error <= bound


def test_decoded_boxes_match_official(converted):
    name, model, raw, reference = converted
    _, _, _, centre_bound, size_bound, score_bound = CASES[name]
    decoded = keras.ops.convert_to_numpy(decode_predictions(raw, model.anchors, model.strides))
    expected = reference["inference_f64"]
    assert decoded.shape == expected.shape
    centre = np.abs(decoded[..., :2] - expected[..., :2]).max()
    size = (np.abs(decoded[..., 2:4] - expected[..., 2:4]) / expected[..., 2:4]).max()
    scores = np.abs(decoded[..., 4:] - expected[..., 4:]).max()
    print(f"{name} decoded: centre {centre:.2e} px, size {size:.2e} relative, scores {scores:.2e}")
    assert centre <= centre_bound
    assert size <= size_bound
    assert scores <= score_bound
