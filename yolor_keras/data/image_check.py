"""Index-time image validation: find images that would break training."""

import dataclasses
import io
import os
import warnings

from PIL import Image

from yolor_keras.data import report as reasons

# Formats `tf.io.decode_image` reads reliably with channels=3; anything else
# (TIFF, WebP, palette BMP, ...) is re-encoded as PNG at index time.
TF_NATIVE_FORMATS = ("JPEG", "PNG", "GIF")
MIN_IMAGE_SIDE = 10  # as the official loader: smaller images are skipped
_TAIL_BYTES = 4096


@dataclasses.dataclass
class ImageProbe:
    """What index time learned about one image.

    Args:
        width: width in pixels (0 when unreadable).
        height: height in pixels (0 when unreadable).
        mode: the Pillow mode, e.g. "RGB", "L", "RGBA", "CMYK".
        problem: a skip reason from `report`, or None when usable.
        data: PNG bytes replacing the file when it had to be re-encoded,
            else None (the pipeline reads the file itself).
    """

    width: int = 0
    height: int = 0
    mode: str = ""
    problem: str = None
    data: bytes = None
    exif_head: bytes = dataclasses.field(default=None, repr=False)

    @property
    def needs_rgb_conversion(self):
        return self.problem is None and self.mode not in ("RGB", "")


def probe_image(source, decode=False, defer_orientation=False):
    """Checks that an image can be decoded, without decoding it by default.

    The header is read with Pillow (size, mode, format). JPEG and PNG files
    must also end with their end-of-image marker, which catches truncated
    downloads cheaply: in JPEG entropy data an 0xFF byte is always stuffed,
    so 0xFFD9 near the end is the real end marker.

    Args:
        source: a file path, or the encoded image as bytes.
        decode: also decode the whole image with TensorFlow, which catches
            corrupt data inside a well-formed file at the cost of a full
            decode (a few ms per image).
        defer_orientation: leave a JPEG's EXIF orientation to a later
            `resolve_orientations` call over many probes at once (one
            TensorFlow call for all instead of one each); until then the
            probe's size is the stored one.

    Returns:
        An `ImageProbe`.
    """
    if isinstance(source, bytes):
        data = source
    else:
        if not os.path.isfile(source):
            return ImageProbe(problem=reasons.MISSING_IMAGE)
        if os.path.getsize(source) == 0:
            return ImageProbe(problem=reasons.EMPTY_IMAGE)
        with open(source, "rb") as file:
            data = file.read()
    if not data:
        return ImageProbe(problem=reasons.EMPTY_IMAGE)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. DecompressionBombWarning
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            mode, image_format = image.mode, image.format
    except Exception:  # Pillow raises many types for bad files
        return ImageProbe(problem=reasons.UNREADABLE_IMAGE)
    probe = ImageProbe(width=width, height=height, mode=mode)
    if image_format == "JPEG":
        # Sizes are those of the displayed image (EXIF orientation applied),
        # as the pipeline decodes it and as annotation tools show it; they
        # are turned once the orientation is read (see the end).
        probe.exif_head = _exif_head(data)
    if min(width, height) < MIN_IMAGE_SIDE:
        probe.problem = reasons.TINY_IMAGE
        return probe

    tail = data[-_TAIL_BYTES:]
    if image_format == "JPEG" and b"\xff\xd9" not in tail:
        probe.problem = reasons.TRUNCATED_IMAGE
        return probe
    if image_format == "PNG" and b"IEND" not in tail:
        probe.problem = reasons.TRUNCATED_IMAGE
        return probe

    if image_format not in TF_NATIVE_FORMATS:
        try:
            probe.data = _reencode_as_png(data)
        except Exception:
            probe.problem = reasons.UNREADABLE_IMAGE
            return probe
        data = probe.data
    if decode and not _tf_decodes(data, width, height):
        probe.problem = reasons.UNREADABLE_IMAGE
    if not defer_orientation:
        resolve_orientations([probe])
    return probe


def _exif_head(data):
    """The bytes the orientation parser can read, or None without an Exif
    segment signature (the parser then reads orientation 1 anyway)."""
    from yolor_keras.data.exif import HEADER_WINDOW

    if b"Exif\x00\x00" not in data[:HEADER_WINDOW]:
        return None
    # The segment starts within the window and is at most 64 KiB long.
    return data[: 2 * HEADER_WINDOW + 16]


def resolve_orientations(probes):
    """Applies the EXIF orientation of probes made with `defer_orientation`.

    Swaps width and height of the quarter-turned ones, in one batched call
    of the pipeline decoder's own parser (`exif.exif_orientations`).
    """
    waiting = [probe for probe in probes if probe.exif_head is not None]
    if not waiting:
        return
    from yolor_keras.data.exif import orientations_of  # deferred: needs TF

    for probe, orientation in zip(waiting, orientations_of([p.exif_head for p in waiting])):
        probe.exif_head = None
        if orientation >= 5:
            probe.width, probe.height = probe.height, probe.width


def _reencode_as_png(data):
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        if image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
    return buffer.getvalue()


def _tf_decodes(data, width, height):
    """Whether TensorFlow decodes the stored pixels at the header's size.

    The pipeline's decoder is this decode followed by the EXIF turn, which
    cannot fail; so checking the plain decode is enough, and cheaper.
    """
    import tensorflow as tf  # deferred: probing headers needs no TensorFlow

    try:
        decoded = tf.io.decode_image(data, channels=3, expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError):
        return False
    return tuple(decoded.shape[:2]) == (height, width)
