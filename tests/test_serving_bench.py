"""`yolor_keras.serving.throughput.serving_rows` end to end, fast.

Real `yolor serve` subprocesses and real REST requests, without batching
and with ``--enable-batching``. The served SavedModel is a stand-in with
the export's ``serving_default`` interface (encoded images in, decoded in
the graph; per-image outputs out), saved in a second: exporting a detector
takes far longer and is tested with the exports. The rows must account for
every request, and their figures must agree with each other; speed itself
is not tested (the machine may be busy).
"""

import os

import pytest
import tensorflow as tf

from yolor_keras.serving.throughput import DEFAULT_IMAGE
from yolor_keras.serving.throughput import MODEL_NAME
from yolor_keras.serving.throughput import markdown_table
from yolor_keras.serving.throughput import serving_rows

REQUESTS = 6


class MeanColour(tf.Module):
    """Decodes each image and answers its mean colour: the export's interface, tiny."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def serve(self, images):
        def mean_colour(encoded):
            image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
            return tf.reduce_mean(tf.cast(image, tf.float32), axis=[0, 1])

        colours = tf.map_fn(mean_colour, images, fn_output_signature=tf.TensorSpec([3], tf.float32))
        return {"mean_colour": colours, "num_detections": tf.zeros_like(images, tf.int32)}


@pytest.fixture(scope="module")
def model_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    module = MeanColour()
    tf.saved_model.save(
        module, os.path.join(root, MODEL_NAME, "1"), signatures={"serving_default": module.serve}
    )
    return root


def test_serving_rows_measure_every_setting_and_concurrency(model_root, capsys):
    rows = serving_rows(
        root=model_root,
        concurrencies=(1, 3),
        batch_sizes=(None, 4),
        requests_per_row=REQUESTS,
        warmup=1,
    )
    assert [(row["batching"], row["concurrency"]) for row in rows] == [
        ("off", 1), ("off", 3), ("max 4", 1), ("max 4", 3),
    ]  # fmt: skip
    for row in rows:
        # Every request was answered with predictions.
        assert row["errors"] == 0, row.get("first_error")
        assert row["requests"] == REQUESTS
        assert row["images_per_s"] > 0
        assert 0 < row["p50_ms"] <= row["p95_ms"]
        assert row["images_per_s"] == pytest.approx(REQUESTS / row["wall_s"])
        # At least half the requests took p50 or longer, and `concurrency`
        # clients overlap at most that many of them: the run lasted at least
        # REQUESTS / 2 x p50 / concurrency.
        assert row["wall_s"] >= REQUESTS / 2 * row["p50_ms"] / 1000 / row["concurrency"]
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].split() == [
        "batching", "concurrency", "requests", "images/s", "p50", "ms", "p95", "ms", "errors",
    ]  # fmt: skip
    assert [line.split()[:3] for line in printed[1:]] == [
        ["off", "1", "6"], ["off", "3", "6"], ["max", "4", "1"], ["max", "4", "3"],
    ]  # fmt: skip
    assert len(markdown_table(rows).splitlines()) == 2 + len(rows)


def test_a_missing_image_is_named(model_root):
    with pytest.raises(FileNotFoundError, match="absent.jpg"):
        serving_rows(root=model_root, image=DEFAULT_IMAGE.replace("shapes.jpg", "absent.jpg"))
