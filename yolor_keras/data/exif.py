"""EXIF orientation, read from JPEG bytes with graph ops and applied on decode.

Cameras store a portrait photo as landscape pixels plus an EXIF Orientation
tag (0x0112) saying how to turn them for display. Viewers, annotation tools,
OpenCV's `imread` and pycocotools-era datasets all work on the *displayed*
image, so a box drawn on a phone photo only fits the pixels once the tag is
applied. `decode_image` is the one decoder of the project (training,
evaluation, `detect` and the SavedModel's bytes signature): it decodes with
`tf.io.decode_image` and then turns the pixels as the tag says.

The tag is parsed with string ops only (`tf.strings.substr`,
`tf.io.decode_raw`), so the decoder stays exportable in a SavedModel. Only
JPEG carries it here (the APP1 "Exif" segment, where cameras write it);
other formats decode as stored.
"""

import tensorflow as tf

ORIENTATION_TAG = 0x0112
# The Exif segment must start within this many bytes of the file. Cameras
# and editors write it first or right after the 18-byte JFIF segment; a
# file with 64 KiB of other headers before it decodes as stored.
HEADER_WINDOW = 64 * 1024
# IFD0 entries looked at. IFD0 is sorted by tag and Orientation (0x0112) is
# among the first dozen (after ImageWidth, Make, Model, ...).
_MAX_ENTRIES = 128
_EXIF_HEADER = b"Exif\x00\x00"
_SHORT, _LONG = 3, 4


def _bytes_at(data, size, position, length):
    """`length` bytes of `data` from `position` as uint8, zero past the end.

    `tf.strings.substr` fails on a position past the end, so the position is
    clamped first; `decode_raw(fixed_length=...)` zero-fills a short read.
    A damaged header therefore reads as zeros, never as an error.
    """
    position = tf.clip_by_value(tf.cast(position, tf.int64), 0, tf.cast(size, tf.int64))
    piece = tf.strings.substr(data, tf.cast(position, tf.int32), length)
    return tf.cast(tf.io.decode_raw(piece, tf.uint8, fixed_length=length), tf.int64)


def _tiff_orientation(tiff):
    """The Orientation value in a TIFF structure (the body of an Exif segment)."""
    size = tf.strings.length(tiff)
    header = _bytes_at(tiff, size, 0, 8)
    little = tf.reduce_all(tf.equal(header[:2], [0x49, 0x49]))  # "II"
    big = tf.reduce_all(tf.equal(header[:2], [0x4D, 0x4D]))  # "MM"

    def number(raw):
        # raw (..., n) bytes in file order -> integer, by the file's byte order.
        n = raw.shape[-1]
        little_weights = tf.constant([256**k for k in range(n)], tf.int64)
        big_weights = tf.constant([256**k for k in reversed(range(n))], tf.int64)
        little_value = tf.reduce_sum(raw * little_weights, axis=-1)
        big_value = tf.reduce_sum(raw * big_weights, axis=-1)
        return tf.where(little, little_value, big_value)

    magic_ok = (little | big) & tf.equal(number(header[2:4]), 42)
    first_ifd = number(header[4:8])
    count = number(_bytes_at(tiff, size, first_ifd, 2))
    entries = tf.reshape(
        _bytes_at(tiff, size, first_ifd + 2, 12 * _MAX_ENTRIES), [_MAX_ENTRIES, 12]
    )
    tags = number(entries[:, 0:2])
    types = number(entries[:, 2:4])
    # A SHORT sits in the first 2 bytes of the 4-byte value field; a LONG
    # (written by a few tools) fills all 4.
    values = tf.where(tf.equal(types, _SHORT), number(entries[:, 8:10]), number(entries[:, 8:12]))
    match = (
        (tf.range(_MAX_ENTRIES, dtype=tf.int64) < count)
        & tf.equal(tags, ORIENTATION_TAG)
        & (tf.equal(types, _SHORT) | tf.equal(types, _LONG))
    )
    first = tf.argmax(tf.cast(match, tf.int32), output_type=tf.int32)
    value = tf.where(tf.reduce_any(match) & magic_ok, values[first], 1)
    # Values outside 1..8 (0 is common in broken files) mean "as stored".
    value = tf.where((value >= 1) & (value <= 8), value, 1)
    return tf.cast(value, tf.int32)


def exif_orientation(encoded):
    """Reads the EXIF Orientation (1..8) of an encoded image, as graph ops.

    The Exif segment is found by its signature (an APP1 marker, a length,
    then "Exif\\0\\0") in the first `HEADER_WINDOW` bytes, in one
    vectorised pass instead of a marker-by-marker loop: a loop of small ops
    per image cost more than the rest of the decode. The signature cannot
    occur in entropy-coded data (0xFF is always followed by 0x00 or a
    restart marker there), and the TIFF header after it is checked too.

    Args:
        encoded: scalar tf.string, the encoded image.

    Returns:
        int32 scalar in 1..8; 1 ("as stored") for non-JPEG data, JPEGs
        without an Exif segment or Orientation tag, and damaged headers.
    """
    encoded = tf.convert_to_tensor(encoded, tf.string)
    size = tf.strings.length(encoded)
    head = tf.io.decode_raw(
        tf.strings.substr(encoded, 0, HEADER_WINDOW), tf.uint8, fixed_length=HEADER_WINDOW
    )
    signature = [0xFF, 0xE1, None, None] + list(_EXIF_HEADER)
    span = HEADER_WINDOW - len(signature) + 1
    match = tf.logical_and(tf.equal(head[0], 0xFF), tf.equal(head[1], 0xD8))  # SOI
    found = tf.ones([span], tf.bool)
    for offset, value in enumerate(signature):
        if value is not None:
            found &= tf.equal(head[offset : offset + span], value)
    position = tf.argmax(tf.cast(found, tf.int32), output_type=tf.int32)
    match &= tf.reduce_any(found)
    length = tf.cast(head[position + 2], tf.int32) * 256 + tf.cast(head[position + 3], tf.int32)
    body = tf.minimum(position + 4 + len(_EXIF_HEADER), size)
    tiff_length = tf.maximum(length - 2 - len(_EXIF_HEADER), 0)
    return tf.cond(
        match,
        lambda: _tiff_orientation(tf.strings.substr(encoded, body, tiff_length)),
        lambda: tf.constant(1),
    )


def apply_orientation(image, orientation):
    """Turns stored pixels into the displayed image for an EXIF orientation.

    Args:
        image: (H, W, C) tensor, the pixels as stored.
        orientation: int32 scalar 1..8 (anything else is treated as 1).

    Returns:
        (H', W', C), the image as displayed; H' and W' are swapped for 5..8.
    """
    image = tf.convert_to_tensor(image)
    transposed = lambda: tf.transpose(image, [1, 0, 2])  # noqa: E731
    branches = [
        lambda: image,  # 1: as stored
        lambda: tf.reverse(image, [1]),  # 2: mirrored left-right
        lambda: tf.reverse(image, [0, 1]),  # 3: upside down
        lambda: tf.reverse(image, [0]),  # 4: mirrored top-bottom
        transposed,  # 5: mirrored along the main diagonal
        lambda: tf.reverse(transposed(), [1]),  # 6: turn 90 degrees clockwise
        lambda: tf.reverse(transposed(), [0, 1]),  # 7: the anti-diagonal
        lambda: tf.reverse(transposed(), [0]),  # 8: turn 90 degrees anti-clockwise
    ]
    index = tf.cast(orientation, tf.int32) - 1
    index = tf.where((index >= 0) & (index < 8), index, 0)
    return tf.switch_case(index, branches)


def swaps_axes(orientation):
    """True (a bool tensor) for the orientations that swap height and width."""
    return tf.cast(orientation, tf.int32) >= 5


def decode_image(encoded, channels=3):
    """Decodes an image and applies its EXIF orientation: the displayed pixels.

    This is the project's single image decoder; everything that turns bytes
    into pixels goes through it, so a photo is the same way up in training,
    evaluation, `detect` and TF Serving.

    Args:
        encoded: scalar tf.string, JPEG/PNG/GIF/BMP/WebP bytes.
        channels: output channels (3: grey, palette and RGBA become RGB).

    Returns:
        (H, W, channels) uint8, as displayed.
    """
    decoded = tf.io.decode_image(encoded, channels=channels, expand_animations=False)
    oriented = apply_orientation(decoded, exif_orientation(encoded))
    return tf.ensure_shape(oriented, [None, None, channels])


def displayed_size(encoded, stored_height, stored_width):
    """(height, width) of the displayed image, from the stored size."""
    swap = swaps_axes(exif_orientation(encoded))
    return (
        tf.where(swap, stored_width, stored_height),
        tf.where(swap, stored_height, stored_width),
    )


@tf.function(input_signature=[tf.TensorSpec([None], tf.string)], autograph=False)
def _orientations_of_batch(data):
    return tf.map_fn(exif_orientation, data, fn_output_signature=tf.int32)


def orientations_of(datas, batch_size=256):
    """EXIF orientations (1..8) of many encoded images, as Python ints.

    Index-time counterpart of `exif_orientation` (the same graph ops, traced
    once), for readers that need displayed sizes without decoding. Batched,
    as one call per image would cost more than the parsing.
    """
    result = []
    for start in range(0, len(datas), batch_size):
        batch = tf.constant(list(datas[start : start + batch_size]), tf.string)
        result += [int(value) for value in _orientations_of_batch(batch).numpy()]
    return result


def orientation_of(data):
    """The EXIF orientation (1..8) of one encoded image, as a Python int."""
    return orientations_of([data])[0]


@tf.function(input_signature=[tf.TensorSpec([], tf.string)], autograph=False)
def decode_image_eagerly(data):
    """`decode_image` compiled once, for callers outside a graph."""
    return decode_image(data)
