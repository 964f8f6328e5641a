"""Server-side batching (`yolor serve --enable-batching`).

The first tests drive `Batcher` with a stand-in model that records every
call, so how batches form (size cap, timeout, compatibility, pixel budget,
bad requests) is checked exactly and in milliseconds. The last ones run a
real exported detector: concurrent requests merged into batches must give
each caller the detections the in-process `Predictor` gives for its image.
"""

import argparse
import threading
import time
from concurrent import futures

import numpy as np
import pytest
import tensorflow as tf
from deployment_helper import encode
from deployment_helper import scene
from deployment_helper import tiny_detector
from detection_matching import assert_same_detections as same_detections

from yolor_keras.inference import Predictor
from yolor_keras.serving import cli
from yolor_keras.serving.batching import Batcher
from yolor_keras.serving.batching import BatchingOptions
from yolor_keras.serving.limits import ServingLimits
from yolor_keras.serving.limits import decode_cost
from yolor_keras.serving.repository import BadRequest
from yolor_keras.serving.repository import ModelRegistry
from yolor_keras.serving.repository import PreparedBatch

IMAGE_SIZE = 128
MAX_DETECTIONS = 50
# A batch then runs only once it is full (even on a loaded machine).
LONG_WAIT_MICROS = 60_000_000
# Sizes of the real test images, JPEG and PNG in turn.
SHAPES = [(90, 150), (170, 70), (128, 128), (60, 200), (140, 100), (100, 100), (75, 120), (200, 90)]


class RecordingModel:
    """Stands in for a `ServedModel`: doubles its inputs and records every call.

    Strings equal to ``b"bad"`` fail the call as a bad request, as a corrupt
    image fails the real graph. `gate`, when set, holds every call until it
    is opened, to keep the "model" busy while requests queue.
    """

    def __init__(self, gate=None, error=None):
        self.calls = []
        self.gate = gate
        self.error = error

    def run_unbatched(self, prepared):
        values = prepared.tensor.numpy()
        self.calls.append((len(values), prepared.pixels))
        if self.gate is not None:
            self.gate.wait(10)
        if self.error is not None:
            raise self.error
        if values.dtype == object:
            if b"bad" in list(values):
                raise BadRequest("Image is corrupt.")
            return {"length": np.array([len(value) for value in values])}
        return {"doubled": values.astype(np.int64) * 2}


def strings(*values, pixels=10):
    return PreparedBatch(
        "serving_default", tf.constant(list(values), tf.string), pixels, (pixels,) * len(values)
    )


def pixels(batch, height, width, fill=1):
    array = np.full((batch, height, width, 3), fill, np.uint8)
    counts = (height * width,) * batch
    return PreparedBatch("predict_images", tf.constant(array), decode_cost(counts), counts)


@pytest.fixture
def make_batcher():
    batchers = []

    def make(max_batch_size=8, timeout_micros=LONG_WAIT_MICROS, capacity=10**9, threads=1):
        batcher = Batcher(BatchingOptions(max_batch_size, timeout_micros, threads), capacity)
        batchers.append(batcher)
        return batcher

    yield make
    for batcher in batchers:
        batcher.close()


def test_requests_that_fill_a_batch_run_in_one_call_and_get_their_own_rows(make_batcher):
    model = RecordingModel()
    batcher = make_batcher(max_batch_size=8)
    requests = [
        strings(b"a"),
        strings(b"bb", b"ccc"),
        strings(b"dddd", b"e", b"ff"),
        strings(b"g", b"hh"),
    ]
    pending = [batcher.submit(model, request) for request in requests]
    results = [future.result(timeout=10) for future in pending]
    # 1 + 2 + 3 + 2 = 8 images: full, so it ran at once despite the 5 s timeout.
    assert [size for size, _ in model.calls] == [8]
    assert [result["length"].tolist() for result in results] == [[1], [2, 3], [4, 1, 2], [1, 2]]
    assert batcher.batch_sizes == {8: 1}


def test_a_lone_request_waits_for_the_timeout_then_runs_alone(make_batcher):
    model = RecordingModel()
    batcher = make_batcher(timeout_micros=200_000)
    start = time.monotonic()
    result = batcher.run(model, pixels(1, 2, 3, fill=7))
    waited = time.monotonic() - start
    assert 0.2 <= waited < 3.0
    np.testing.assert_array_equal(result["doubled"], np.full((1, 2, 3, 3), 14))
    assert [size for size, _ in model.calls] == [1]


def test_zero_timeout_batches_what_queued_while_the_model_was_busy(make_batcher):
    gate = threading.Event()
    model = RecordingModel(gate=gate)
    batcher = make_batcher(timeout_micros=0)
    first = batcher.submit(model, strings(b"a"))
    deadline = time.monotonic() + 10
    while not model.calls and time.monotonic() < deadline:
        time.sleep(0.01)
    # The first request runs alone at once; three more queue behind it.
    later = [batcher.submit(model, strings(b"x" * n)) for n in (2, 3, 4)]
    gate.set()
    assert first.result(timeout=10)["length"].tolist() == [1]
    assert [future.result(timeout=10)["length"].tolist() for future in later] == [[2], [3], [4]]
    assert [size for size, _ in model.calls] == [1, 3]


def test_the_timeout_counts_from_arrival_not_from_when_the_model_frees_up(make_batcher):
    gate = threading.Event()
    model = RecordingModel(gate=gate)
    batcher = make_batcher(timeout_micros=1_500_000)
    first = batcher.submit(model, strings(b"a"))
    second = batcher.submit(model, strings(b"bb"))
    first_alone = batcher.submit(RecordingModel(), strings(b"other model"))
    # The first two formed a batch when the timeout passed; the third
    # request (another model) queued meanwhile, and has waited its timeout
    # by the time the busy model frees the batch thread.
    time.sleep(2.0)
    gate.set()
    start = time.monotonic()
    assert first_alone.result(10)["length"].tolist() == [11]
    assert time.monotonic() - start < 1.0
    assert [future.result(10)["length"].tolist() for future in (first, second)] == [[1], [2]]
    assert [size for size, _ in model.calls] == [2]


def test_several_batch_threads_run_every_request_exactly_once(make_batcher):
    model = RecordingModel()
    batcher = make_batcher(max_batch_size=4, timeout_micros=20_000, threads=3)
    with futures.ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda n: batcher.run(model, strings(b"x" * n)), range(1, 41)))
    assert [answer["length"].tolist() for answer in answers] == [[n] for n in range(1, 41)]
    assert sum(size for size, _ in model.calls) == 40
    assert all(size <= 4 for size, _ in model.calls)


def test_only_requests_that_concatenate_share_a_batch(make_batcher):
    model, other_model = RecordingModel(), RecordingModel()
    batcher = make_batcher(max_batch_size=3, timeout_micros=300_000)
    small_a = batcher.submit(model, pixels(1, 4, 4, fill=1))
    large = batcher.submit(model, pixels(1, 8, 8, fill=2))
    elsewhere = batcher.submit(other_model, pixels(1, 4, 4, fill=3))
    small_b = batcher.submit(model, pixels(2, 4, 4, fill=4))
    assert small_a.result(10)["doubled"].shape == (1, 4, 4, 3)
    np.testing.assert_array_equal(small_b.result(10)["doubled"], np.full((2, 4, 4, 3), 8))
    np.testing.assert_array_equal(large.result(10)["doubled"], np.full((1, 8, 8, 3), 4))
    np.testing.assert_array_equal(elsewhere.result(10)["doubled"], np.full((1, 4, 4, 3), 6))
    # The 4x4 requests of `model` merged past the 8x8 one, which kept its
    # turn ahead of the other model's request.
    assert [size for size, _ in model.calls] == [3, 1]
    assert [size for size, _ in other_model.calls] == [1]


def test_a_merged_batch_stays_within_the_pixel_budget(make_batcher):
    model = RecordingModel()
    # Each request is charged 100 pixels; 250 admit two at once.
    batcher = make_batcher(max_batch_size=8, timeout_micros=100_000, capacity=250)
    pending = [batcher.submit(model, strings(b"x" * n, pixels=100)) for n in (1, 2, 3, 4)]
    assert [future.result(10)["length"].tolist() for future in pending] == [[1], [2], [3], [4]]
    assert model.calls == [(2, 200), (2, 200)]


def test_a_bad_request_in_a_batch_fails_alone(make_batcher):
    model = RecordingModel()
    batcher = make_batcher(max_batch_size=4)
    pending = [batcher.submit(model, strings(value)) for value in (b"aa", b"bad", b"cccc", b"d")]
    with pytest.raises(BadRequest, match="corrupt"):
        pending[1].result(10)
    assert [pending[index].result(10)["length"].tolist() for index in (0, 2, 3)] == [[2], [4], [1]]
    # The merged call failed; each request then ran alone.
    assert [size for size, _ in model.calls] == [4, 1, 1, 1, 1]
    assert batcher.batch_sizes == {1: 3}
    assert batcher.split_batches == 1


def test_an_unexpected_error_reaches_every_caller_of_the_batch(make_batcher):
    model = RecordingModel(error=MemoryError("out of memory"))
    batcher = make_batcher(max_batch_size=2)
    pending = [batcher.submit(model, strings(b"a")), batcher.submit(model, strings(b"b"))]
    for future in pending:
        with pytest.raises(MemoryError):
            future.result(10)
    assert [size for size, _ in model.calls] == [2]


def test_options_and_flags_are_checked():
    with pytest.raises(ValueError, match="max_batch_size"):
        BatchingOptions(0)
    with pytest.raises(ValueError, match="batch_timeout_micros"):
        BatchingOptions(8, -1)
    with pytest.raises(ValueError, match="num_batch_threads"):
        BatchingOptions(8, 0, 0)
    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers())

    def parse(*flags):
        return cli.batching_from_args(parser.parse_args(["serve", "models", *flags]))

    assert parse() is None
    assert parse("--enable-batching") == BatchingOptions(64, 0, 1)
    # TF Serving's parameter names; a timeout alone turns batching on.
    assert parse("--max-batch-size", "16", "--batch-timeout-micros", "2000") == BatchingOptions(
        16, 2000, 1
    )
    assert parse("--num-batch-threads", "2") == BatchingOptions(64, 0, 2)
    with pytest.raises(SystemExit):
        parse("--batch-timeout-micros", "-5")


# A real detector: merged batches must answer as the Predictor does.


@pytest.fixture(scope="module")
def detector():
    return tiny_detector(image_size=IMAGE_SIZE)


@pytest.fixture(scope="module")
def export_root(detector, tmp_path_factory, tiny_saved_model):
    root = tmp_path_factory.mktemp("saved_models")
    # The export of `detector` (`tiny_detector(IMAGE_SIZE)`), shared by this process.
    tiny_saved_model(root / "tiny" / "1", image_size=IMAGE_SIZE, max_detections=MAX_DETECTIONS)
    return root


@pytest.fixture(scope="module")
def encoded_images():
    images = []
    for index, (height, width) in enumerate(SHAPES):
        image = scene(height, width, seed=30 + index)
        images.append(encode(image, "JPEG", quality=90) if index % 2 else encode(image))
    return images


def detections(outputs, row):
    """A `Predictor`-style result from row `row` of the signature's outputs."""
    count = int(outputs["num_detections"][row])
    return {
        "boxes": outputs["detection_boxes"][row, :count][:, [1, 0, 3, 2]],
        "scores": outputs["detection_scores"][row, :count],
        "classes": outputs["detection_classes"][row, :count],
    }


# The model's own answer for an image moves a little with the batch size
# and the graph (oneDNN picks other convolution kernels for 4 images than
# for 1): scores by under 1e-5 relative, boxes by up to 0.15 px (measured
# on this model: the served model alone against batches of 4, and the
# Predictor against the served model). A served request of the same four
# images runs the same kernels, so server-side batches must match it tightly.
BOX_ATOL = 0.25
TIGHT_BOX_ATOL = 2e-3
# The Predictor differs from the SavedModel by up to 0.3 px on a JPEG
# (measured; single-image serving included), with scores still within 1e-5.
PREDICTOR_BOX_ATOL = 1.0
SCORE_RTOL = 1e-5


def assert_same_detections(got, want, box_atol=BOX_ATOL):
    """Equal detections to float tolerance; exactly tied scores may swap places."""
    same_detections(got, want, box_atol=box_atol, score_rtol=SCORE_RTOL)


@pytest.fixture(scope="module")
def served(export_root):
    """The exported model loaded once; each test gives it its own batcher."""
    served = ModelRegistry(export_root, limits=ServingLimits(max_batch_size=4)).get("tiny")
    yield served
    served.batcher = None


def batched(served, max_batch_size):
    batcher = Batcher(BatchingOptions(max_batch_size, LONG_WAIT_MICROS), served.budget.capacity)
    served.batcher = batcher
    return batcher


def test_concurrent_batched_requests_match_the_predictor(detector, served, encoded_images):
    reserved = []
    reserve = served.budget.reserve

    def recording_reserve(count, timeout):
        reserved.append(count)
        return reserve(count, timeout)

    alone = [served.predict([image]) for image in encoded_images]
    # Requests of four images, as a client batches them itself.
    fours = [served.predict(encoded_images[start : start + 4]) for start in (0, 4)]
    batcher = batched(served, 4)
    served.budget.reserve = recording_reserve
    try:
        with futures.ThreadPoolExecutor(max_workers=len(encoded_images)) as pool:
            answers = list(pool.map(lambda image: served.predict([image]), encoded_images))
    finally:
        served.batcher = None
        del served.budget.reserve
        batcher.close()
    # Eight single-image requests ran as two full batches of four.
    assert batcher.batch_sizes == {4: 2}
    # Each merged call reserved the pixels of its four images (fewer than
    # the ten decoded at once), so the two together all eight images'.
    assert len(reserved) == 2
    assert sum(reserved) == sum(height * width for height, width in SHAPES)
    predictor = Predictor(detector, image_size=IMAGE_SIZE, max_detections=MAX_DETECTIONS)
    # The Predictor also in batches of four.
    expected = predictor.predict(encoded_images[:4]) + predictor.predict(encoded_images[4:])
    assert sum(len(result["scores"]) for result in expected) > 0
    for index, (answer, single, want) in enumerate(zip(answers, alone, expected)):
        assert answer["num_detections"].shape == (1,)
        # As a four-image request answers (whatever the batch's other images).
        four = detections(fours[index // 4], index % 4)
        assert_same_detections(detections(answer, 0), four, box_atol=TIGHT_BOX_ATOL)
        # As unbatched single-image serving and the Predictor answer, to the
        # batch-size effect.
        assert_same_detections(detections(answer, 0), detections(single, 0))
        assert_same_detections(detections(answer, 0), want, box_atol=PREDICTOR_BOX_ATOL)


def test_a_corrupt_image_in_a_real_batch_fails_only_its_request(served, encoded_images):
    jpeg = next(image for image in encoded_images if image[:2] == b"\xff\xd8")
    # The header (and so the size check) is intact; the scan data is cut.
    corrupt = jpeg[: len(jpeg) // 2]
    requests = [encoded_images[0], corrupt, encoded_images[2]]
    alone = [served.predict([requests[0]]), served.predict([requests[2]])]
    with pytest.raises(BadRequest):
        served.predict([corrupt])
    batcher = batched(served, 3)
    try:
        with futures.ThreadPoolExecutor(max_workers=3) as pool:
            pending = [pool.submit(served.predict, [image]) for image in requests]
            with pytest.raises(BadRequest):
                pending[1].result(120)
            answers = [pending[index].result(120) for index in (0, 2)]
    finally:
        served.batcher = None
        batcher.close()
    for answer, want in zip(answers, alone):
        assert_same_detections(detections(answer, 0), detections(want, 0))
    # The merged call of three failed; the good requests then ran alone.
    assert batcher.batch_sizes == {1: 2}
    assert batcher.split_batches == 1
