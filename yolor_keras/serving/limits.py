"""Resource limits of `yolor serve`, and the pixel budget that enforces the memory bound.

Decoding is where a request costs memory: the serving graph decodes every
image to uint8 and converts it to float32 before letterboxing, about 19
bytes per pixel as measured, whatever the size of the file it came from (a
blank 8192 x 8192 PNG is 200 KB but decodes to 1.2 GB). So the server reads
every image's size from its header first, and admits a request only when
its pixels fit in a budget shared by all requests in flight (`PixelBudget`).

The defaults keep a server's memory under about 4 GB (see the README):
about 1.9 GB of decoding (`max_inflight_pixels` x 19 bytes), the request
bodies being read, parsed and run, and the model.
"""

import collections
import dataclasses
import threading
import time

# 32 MiB: 64 full-HD JPEGs of about 350 KB each, base64-encoded in JSON.
DEFAULT_MAX_REQUEST_BYTES = 32 * 1024 * 1024
DEFAULT_MAX_BATCH_SIZE = 64
# The export's own default (`image_header.DEFAULT_MAX_IMAGE_PIXELS`), spelt
# out so that `yolor --help` need not import TensorFlow.
DEFAULT_MAX_IMAGE_PIXELS = 8192 * 8192
# One of the largest images and then some, or four full 64-frame requests of
# full-HD (1920 x 1080) video at once (see `decode_cost`).
DEFAULT_MAX_INFLIGHT_PIXELS = 100_000_000
# The serving graph decodes a batch with `tf.map_fn`, whose documented
# graph-mode default runs 10 iterations in parallel; each iteration's
# decoded image is freed once it is letterboxed, so no more than 10 images
# of a request are ever decoded at once.
PARALLEL_DECODES = 10
DEFAULT_MAX_CONCURRENT_REQUESTS = 8
DEFAULT_QUEUE_TIMEOUT = 5.0


def decode_cost(pixel_counts):
    """The most pixels a batch has decoded at once: its `PARALLEL_DECODES` largest images.

    Args:
        pixel_counts: height x width of each image of the batch.
    """
    return sum(sorted(pixel_counts, reverse=True)[:PARALLEL_DECODES])


def too_many_pixels_message(pixels, capacity):
    return (
        f"The request needs {pixels} pixels decoded at once; this server decodes at most "
        f"{capacity} pixels at once (max_inflight_pixels), so send fewer or smaller images "
        "per request."
    )


class RequestTooLarge(ValueError):
    """The request can never fit the server's limits (HTTP 413 / gRPC RESOURCE_EXHAUSTED)."""


class Overloaded(RuntimeError):
    """The server is busy; retry later (HTTP 503 / gRPC UNAVAILABLE)."""


@dataclasses.dataclass(frozen=True)
class ServingLimits:
    """What one request, and all requests together, may ask of the server.

    Attributes:
        max_request_bytes: largest REST body and gRPC message, in bytes;
            larger ones are refused (HTTP 413 / gRPC RESOURCE_EXHAUSTED)
            before they are parsed.
        max_batch_size: most images in one request.
        max_image_pixels: most pixels (height x width) in one image, read
            from its header before it is decoded.
        max_inflight_pixels: most pixels being decoded across all requests
            at once; a request counts its `decode_cost`. A request waits (up
            to `queue_timeout`) until its pixels fit; one that alone exceeds
            this is refused.
        max_concurrent_requests: most requests handled at once per
            protocol. Further REST requests wait up to `queue_timeout` for a
            turn; further gRPC calls are refused with RESOURCE_EXHAUSTED
            (gRPC's ``maximum_concurrent_rpcs``).
        queue_timeout: seconds a request may wait for a turn or for pixel
            budget before it gets HTTP 503 / gRPC UNAVAILABLE.
    """

    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    max_inflight_pixels: int = DEFAULT_MAX_INFLIGHT_PIXELS
    max_concurrent_requests: int = DEFAULT_MAX_CONCURRENT_REQUESTS
    queue_timeout: float = DEFAULT_QUEUE_TIMEOUT

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name == "queue_timeout":
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                    raise ValueError(f"`queue_timeout` must be a number >= 0; got {value!r}.")
            elif isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{field.name}` must be a positive int; got {value!r}.")


class PixelBudget:
    """Admits work by its pixel count so that the pixels in flight stay under a cap.

    Waiters are served first come, first served, so that a large request
    is not starved by a stream of small ones.

    Args:
        capacity: most pixels admitted at once.
    """

    def __init__(self, capacity):
        self.capacity = int(capacity)
        self.in_use = 0
        self._condition = threading.Condition()
        self._queue = collections.deque()

    def reserve(self, pixels, timeout):
        """A context manager holding `pixels` of the budget.

        Raises:
            RequestTooLarge: `pixels` exceeds the whole capacity.
            Overloaded: the pixels did not fit within `timeout` seconds.
        """
        pixels = int(pixels)
        if pixels > self.capacity:
            raise RequestTooLarge(too_many_pixels_message(pixels, self.capacity))
        deadline = time.monotonic() + timeout
        ticket = object()
        with self._condition:
            self._queue.append(ticket)
            try:
                while self._queue[0] is not ticket or self.in_use + pixels > self.capacity:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise Overloaded(
                            f"The server is busy: {self.in_use} of its {self.capacity} pixels "
                            f"are being decoded and {pixels} more did not fit within "
                            f"{timeout:g} s; retry later."
                        )
                    self._condition.wait(remaining)
            finally:
                self._queue.remove(ticket)
                # The next in line may now be at the head of the queue.
                self._condition.notify_all()
            self.in_use += pixels
        return _Reservation(self, pixels)

    def _release(self, pixels):
        with self._condition:
            self.in_use -= pixels
            self._condition.notify_all()


class _Reservation:
    def __init__(self, budget, pixels):
        self._budget = budget
        self._pixels = pixels

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._budget._release(self._pixels)
