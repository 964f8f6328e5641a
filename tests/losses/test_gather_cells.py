"""`gather_cells` picks the assigned predictions like NumPy indexing, values and gradients."""

import numpy as np
import tensorflow as tf

from yolor_keras.losses.yolor_loss import gather_cells


def test_gather_cells_matches_numpy_indexing_and_its_gradient():
    rng = np.random.default_rng(3)
    batch, num_cells, channels, candidates = 3, 7, 5, 11
    flat = rng.normal(size=(batch, num_cells, channels)).astype("float32")
    # Repeated cells on purpose: their gradients must add up.
    cell = rng.integers(0, num_cells, (batch, candidates)).astype("int32")
    cell[:, :3] = 2
    weights = rng.normal(size=(batch, candidates, channels)).astype("float32")

    flat_t = tf.constant(flat)
    with tf.GradientTape() as tape:
        tape.watch(flat_t)
        picked = gather_cells(flat_t, tf.constant(cell), num_cells)
        total = tf.reduce_sum(picked * weights)
    gradient = tf.convert_to_tensor(tape.gradient(total, flat_t)).numpy()

    expected = flat[np.arange(batch)[:, None], cell]
    np.testing.assert_array_equal(picked.numpy(), expected)
    # d total / d flat[b, c, :] is the sum of the weights of the candidates naming c.
    expected_gradient = np.zeros_like(flat)
    for b in range(batch):
        for k in range(candidates):
            expected_gradient[b, cell[b, k]] += weights[b, k]
    np.testing.assert_allclose(gradient, expected_gradient, rtol=1e-6, atol=1e-6)


def test_gather_cells_in_a_graph_with_an_unknown_batch():
    function = tf.function(
        lambda flat, cell: gather_cells(flat, cell, 4),
        input_signature=[
            tf.TensorSpec((None, 4, 2), tf.float32),
            tf.TensorSpec((None, 3), tf.int32),
        ],
    )
    flat = np.arange(16, dtype="float32").reshape(2, 4, 2)
    cell = np.array([[0, 3, 3], [1, 2, 0]], "int32")
    np.testing.assert_array_equal(function(flat, cell).numpy(), flat[np.arange(2)[:, None], cell])
