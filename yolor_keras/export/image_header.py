"""Image size from the header of encoded bytes, as graph ops, before decoding.

A serving graph that decodes whatever it is sent can be made to allocate
gigabytes by one small file (a 20000 x 20000 PNG of zeros compresses to a
few hundred kilobytes). These ops read the size from the JPEG/PNG/GIF/BMP
header (and WebP's) and let the graph refuse oversized images, and bytes of
any other kind, before `decode_image`.
"""

import tensorflow as tf

# 8192 x 8192: far above any camera frame worth detecting on (the network
# sees at most a few thousand pixels a side), and a 200 MB decode at worst.
DEFAULT_MAX_IMAGE_PIXELS = 8192 * 8192

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_GIF_MAGIC = b"GIF8"
_BMP_MAGIC = b"BM"
_RIFF_MAGIC = b"RIFF"
_WEBP_MAGIC = b"WEBP"
# Enough zero bytes that every header field below can be sliced even from a
# truncated file; a truncated image still fails later, in the decoder.
_HEADER_PADDING = b"\x00" * 32


def _unsigned(data, start, length, big_endian):
    """Integer from `length` bytes of `data` at `start` (an int64 scalar)."""
    raw = tf.io.decode_raw(tf.strings.substr(data, start, length), tf.uint8)
    raw = tf.cast(raw, tf.int64)
    if big_endian:
        raw = tf.reverse(raw, [0])
    weights = tf.constant([256**index for index in range(length)], tf.int64)
    return tf.reduce_sum(raw * weights)


def _signed32_little_endian(data, start):
    value = _unsigned(data, start, 4, big_endian=False)
    return tf.where(value >= 2**31, value - 2**32, value)


def encoded_image_shape(encoded):
    """Reads `(height, width)` from an encoded image's header.

    Args:
        encoded: scalar tf.string, a JPEG, PNG, GIF, BMP or WebP file.

    Returns:
        int64 tensor `(2,)`: `(height, width)`, or `(-1, -1)` when the bytes
        start with none of the five signatures.
    """
    encoded = tf.convert_to_tensor(encoded, tf.string)
    padded = encoded + _HEADER_PADDING
    is_jpeg = tf.equal(tf.strings.substr(padded, 0, len(_JPEG_MAGIC)), _JPEG_MAGIC)
    is_png = tf.equal(tf.strings.substr(padded, 0, len(_PNG_MAGIC)), _PNG_MAGIC)
    is_gif = tf.equal(tf.strings.substr(padded, 0, len(_GIF_MAGIC)), _GIF_MAGIC)
    is_bmp = tf.equal(tf.strings.substr(padded, 0, len(_BMP_MAGIC)), _BMP_MAGIC)
    is_webp = tf.logical_and(
        tf.equal(tf.strings.substr(padded, 0, 4), _RIFF_MAGIC),
        tf.equal(tf.strings.substr(padded, 8, 4), _WEBP_MAGIC),
    )

    def jpeg_shape():
        # Walks the JPEG markers to the frame header; no pixel data is read.
        return tf.cast(tf.image.extract_jpeg_shape(encoded)[:2], tf.int64)

    def png_shape():
        # IHDR: width then height, big-endian, at bytes 16 and 20.
        return tf.stack(
            [_unsigned(padded, 20, 4, big_endian=True), _unsigned(padded, 16, 4, big_endian=True)]
        )

    def gif_shape():
        # Logical screen: width then height, little-endian 16-bit, at 6 and 8.
        return tf.stack(
            [_unsigned(padded, 8, 2, big_endian=False), _unsigned(padded, 6, 2, big_endian=False)]
        )

    def bmp_shape():
        # BITMAPINFOHEADER: width at 18, height at 22 (negative = top-down).
        return tf.stack(
            [
                tf.abs(_signed32_little_endian(padded, 22)),
                tf.abs(_signed32_little_endian(padded, 18)),
            ]
        )

    def webp_shape():
        # The first chunk after "WEBP" says which of three layouts follows.
        chunk = tf.strings.substr(padded, 12, 4)

        def lossy():  # "VP8 ": 14-bit sizes at 26 and 28
            return tf.stack(
                [
                    tf.bitwise.bitwise_and(_unsigned(padded, 28, 2, big_endian=False), 0x3FFF),
                    tf.bitwise.bitwise_and(_unsigned(padded, 26, 2, big_endian=False), 0x3FFF),
                ]
            )

        def lossless():  # "VP8L": two 14-bit (size - 1) fields packed from byte 21
            bits = _unsigned(padded, 21, 4, big_endian=False)
            width = tf.bitwise.bitwise_and(bits, 0x3FFF) + 1
            height = tf.bitwise.bitwise_and(tf.bitwise.right_shift(bits, 14), 0x3FFF) + 1
            return tf.stack([height, width])

        def extended():  # "VP8X": 24-bit (size - 1) fields at 24 and 27
            return tf.stack(
                [
                    _unsigned(padded, 27, 3, big_endian=False) + 1,
                    _unsigned(padded, 24, 3, big_endian=False) + 1,
                ]
            )

        return tf.case(
            [(tf.equal(chunk, b"VP8 "), lossy), (tf.equal(chunk, b"VP8L"), lossless)],
            default=lambda: tf.case([(tf.equal(chunk, b"VP8X"), extended)], default=unknown_shape),
        )

    def unknown_shape():
        return tf.constant([-1, -1], tf.int64)

    return tf.case(
        [
            (is_jpeg, jpeg_shape),
            (is_png, png_shape),
            (is_gif, gif_shape),
            (is_bmp, bmp_shape),
            (is_webp, webp_shape),
        ],
        default=unknown_shape,
        exclusive=False,
    )


def check_encoded_image_size(encoded, max_pixels=DEFAULT_MAX_IMAGE_PIXELS):
    """Fails with InvalidArgument unless the bytes are a JPEG, PNG, GIF, BMP or
    WebP image whose header announces at most `max_pixels` pixels.

    Args:
        encoded: scalar tf.string, an encoded image.
        max_pixels: the largest height x width accepted.

    Returns:
        The `(height, width)` read from the header (see `encoded_image_shape`),
        with a control dependency on the check.
    """
    shape = encoded_image_shape(encoded)
    pixels = shape[0] * shape[1]
    known = tf.debugging.Assert(
        shape[0] >= 0,
        ["Not an image: the bytes start with no JPEG, PNG, GIF, BMP or WebP signature."],
    )
    check = tf.debugging.Assert(
        pixels <= max_pixels,
        [
            "Image too large: its header announces height x width =",
            shape[0],
            "x",
            shape[1],
            f"pixels; the limit is {max_pixels} pixels.",
        ],
    )
    with tf.control_dependencies([known, check]):
        return tf.identity(shape)
