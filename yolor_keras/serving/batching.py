"""Server-side batching for `yolor serve --enable-batching`.

Concurrent requests are queued, and one batch thread runs up to
``max_batch_size`` images of them through the model in one call; each
caller then gets the rows of its own images back. On a CPU a batch of 8
costs far less than 8 calls of one image, because a single call leaves
cores idle between small ops and pays the per-call overhead each time.

TF Serving's batching parameters, with the same meaning:

- ``max_batch_size``: most images in one model call (and, as before, in one
  request);
- ``batch_timeout_micros``: how long the oldest queued request waits for
  others before its batch runs part-full. With 0, a batch holds whatever
  queued while the model was busy, so a lone request never waits.
- ``num_batch_threads``: batches run at once.

Requests are merged only when they can share one input tensor: the same
model version and signature, and, for pixel inputs, the same image size
(encoded images of any size share a batch, since the graph letterboxes each
one on its own). A merged batch is also kept within the pixel budget of
`limits.PixelBudget`, charged by `limits.decode_cost` of all its images, so
batching does not loosen the memory bound. If a merged batch fails as a bad
request (say one image's data is corrupt past its header), each request of
it is run again alone, so that only the bad one fails.
"""

import collections
import dataclasses
import threading
import time
from concurrent import futures

import tensorflow as tf

from yolor_keras.serving.limits import decode_cost
from yolor_keras.serving.repository import BadRequest
from yolor_keras.serving.repository import PreparedBatch

DEFAULT_BATCH_TIMEOUT_MICROS = 0
DEFAULT_NUM_BATCH_THREADS = 1


@dataclasses.dataclass(frozen=True)
class BatchingOptions:
    """How `Batcher` forms batches (TF Serving's batching parameter names).

    Attributes:
        max_batch_size: most images in one model call.
        batch_timeout_micros: microseconds the oldest queued request waits
            for others before a part-full batch runs (0: no waiting).
        num_batch_threads: batches run at the same time.
    """

    max_batch_size: int
    batch_timeout_micros: int = DEFAULT_BATCH_TIMEOUT_MICROS
    num_batch_threads: int = DEFAULT_NUM_BATCH_THREADS

    def __post_init__(self):
        for name in ("max_batch_size", "num_batch_threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive int; got {value!r}.")
        value = self.batch_timeout_micros
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"`batch_timeout_micros` must be an int >= 0; got {value!r}.")


class _Task:
    """One queued request: what to run and where its answer goes."""

    def __init__(self, served, prepared):
        self.served = served
        self.prepared = prepared
        self.future = futures.Future()
        tensor = prepared.tensor
        # Requests share a batch only when their tensors concatenate.
        self.key = (id(served), prepared.signature_name, tensor.dtype, tuple(tensor.shape[1:]))
        self.size = int(tensor.shape[0])
        self.enqueued = time.monotonic()


class Batcher:
    """Runs `PreparedBatch`es of concurrent requests together, in batches.

    Args:
        options: `BatchingOptions`.
        pixel_capacity: the most pixels one merged batch may be charged
            (the server's ``max_inflight_pixels``); requests are not merged
            past it.

    Attributes:
        batch_sizes: a `collections.Counter` of images per successful model
            call so far (merged batches and single requests alike).
        split_batches: merged batches that failed as a bad request and were
            run again request by request.
    """

    def __init__(self, options, pixel_capacity):
        self.options = options
        self.pixel_capacity = int(pixel_capacity)
        self.batch_sizes = collections.Counter()
        self.split_batches = 0
        self._queue = collections.deque()
        self._condition = threading.Condition()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._loop, name=f"yolor-batch-{index}", daemon=True)
            for index in range(options.num_batch_threads)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, served, prepared):
        """Queues a request; returns a `concurrent.futures.Future` of its outputs.

        Args:
            served: the `ServedModel` (anything with ``run_unbatched``).
            prepared: its checked `PreparedBatch`.
        """
        task = _Task(served, prepared)
        if task.size > self.options.max_batch_size:
            # `ServedModel` refuses such requests before this; a direct
            # caller gets the same limit rather than an oversized call.
            raise ValueError(
                f"A request of {task.size} images exceeds max_batch_size "
                f"{self.options.max_batch_size}."
            )
        with self._condition:
            if self._closed:
                raise RuntimeError("The batcher is closed.")
            self._queue.append(task)
            self._condition.notify_all()
        return task.future

    def run(self, served, prepared):
        """`submit`, then wait for the outputs (or the request's own error)."""
        return self.submit(served, prepared).result()

    def close(self):
        """Stops the batch threads once the queue is empty."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()
        for thread in self._threads:
            thread.join()

    def _fits(self, batch, images, pixels, task):
        if task.key != batch[0].key or images + task.size > self.options.max_batch_size:
            return False
        return decode_cost(pixels + list(task.prepared.image_pixels)) <= self.pixel_capacity

    def _take_batch(self):
        """Waits for work, then removes and returns one batch of tasks (None when closed)."""
        timeout = self.options.batch_timeout_micros / 1e6
        with self._condition:
            while True:
                while not self._queue:
                    if self._closed:
                        return None
                    self._condition.wait()
                # Oldest first; a request that cannot join (another model,
                # another image size, too many images or pixels) keeps its
                # place for a later batch.
                batch, images, pixels = [], 0, []
                for task in self._queue:
                    if batch and not self._fits(batch, images, pixels, task):
                        continue
                    batch.append(task)
                    images += task.size
                    pixels += list(task.prepared.image_pixels)
                # The timeout counts from the oldest request's arrival, so
                # one that queued while the model was busy does not wait again.
                remaining = batch[0].enqueued + timeout - time.monotonic()
                if images >= self.options.max_batch_size or remaining <= 0 or self._closed:
                    for task in batch:
                        self._queue.remove(task)
                    return batch
                # Another batch thread may take these tasks meanwhile; the
                # batch is formed afresh after every wait.
                self._condition.wait(remaining)

    def _loop(self):
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            self._run_batch(batch)

    def _run_batch(self, batch):
        served = batch[0].served
        if len(batch) == 1:
            self._run_alone(batch[0])
            return
        image_pixels = [count for task in batch for count in task.prepared.image_pixels]
        merged = PreparedBatch(
            batch[0].prepared.signature_name,
            tf.concat([task.prepared.tensor for task in batch], axis=0),
            decode_cost(image_pixels),
            tuple(image_pixels),
        )
        try:
            outputs = served.run_unbatched(merged)
        except BadRequest:
            # One request's images failed the merged call: run each alone
            # so that only the requests at fault get the error.
            self.split_batches += 1
            for task in batch:
                self._run_alone(task)
            return
        except BaseException as error:  # noqa: BLE001  (handed to every caller)
            for task in batch:
                task.future.set_exception(error)
            return
        self.batch_sizes[sum(task.size for task in batch)] += 1
        start = 0
        for task in batch:
            stop = start + task.size
            task.future.set_result({name: value[start:stop] for name, value in outputs.items()})
            start = stop

    def _run_alone(self, task):
        try:
            outputs = task.served.run_unbatched(task.prepared)
        except BaseException as error:  # noqa: BLE001  (handed to the caller)
            task.future.set_exception(error)
            return
        self.batch_sizes[task.size] += 1
        task.future.set_result(outputs)
