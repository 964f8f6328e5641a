"""EXIF orientation: the one decoder against Pillow's `ImageOps.exif_transpose`."""

import io
import struct

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from PIL import ImageOps

from yolor_keras.data import exif
from yolor_keras.data import image_decoding
from yolor_keras.data.image_check import probe_image

HEIGHT, WIDTH = 48, 80  # stored (landscape) size


def _pattern(height=HEIGHT, width=WIDTH):
    """Flat colour blocks, different in every corner, so that each of the 8
    orientations gives a different image (and JPEG error stays small)."""
    array = np.zeros((height, width, 3), np.uint8)
    array[: height // 2, : width // 2] = (230, 30, 30)
    array[: height // 2, width // 2 :] = (30, 230, 30)
    array[height // 2 :, : width // 2] = (30, 30, 230)
    array[height // 2 :, width // 2 :] = (230, 230, 30)
    array[: height // 4, : width // 8] = (250, 250, 250)  # breaks the diagonal symmetry
    return array


def _tiff(orientation, big_endian):
    """A minimal TIFF (IFD0 with Make and Orientation) in either byte order."""
    order = ">" if big_endian else "<"
    head = (b"MM" if big_endian else b"II") + struct.pack(order + "HI", 42, 8)
    make = struct.pack(order + "HHII", 0x010F, 2, 4, 0)  # 'Make', inline
    orient = struct.pack(order + "HHIHH", 0x0112, 3, 1, orientation, 0)
    return head + struct.pack(order + "H", 2) + make + orient + struct.pack(order + "I", 0)


def oriented_jpeg(orientation, big_endian=False, array=None):
    """JPEG bytes written by Pillow with an Exif Orientation tag."""
    array = _pattern() if array is None else array
    buffer = io.BytesIO()
    Image.fromarray(array).save(
        buffer, format="JPEG", quality=95, exif=b"Exif\x00\x00" + _tiff(orientation, big_endian)
    )
    return buffer.getvalue()


def pillow_displayed(data):
    """The independent reference: Pillow's decode, turned by exif_transpose."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(ImageOps.exif_transpose(image).convert("RGB"), np.int32)


def _eight_transforms(array):
    transposed = array.transpose(1, 0, 2)
    return [
        array,
        array[:, ::-1],
        array[::-1, ::-1],
        array[::-1],
        transposed,
        transposed[:, ::-1],
        transposed[::-1, ::-1],
        transposed[::-1],
    ]


@pytest.mark.parametrize("big_endian", [False, True], ids=["II", "MM"])
def test_decoder_matches_pillow_exif_transpose(big_endian):
    for orientation in range(1, 9):
        _check_against_pillow(oriented_jpeg(orientation, big_endian), orientation)


def _check_against_pillow(data, orientation):
    assert Image.open(io.BytesIO(data)).getexif()[0x0112] == orientation  # Pillow reads it
    expected = pillow_displayed(data)
    got = exif.decode_image_eagerly(data).numpy().astype(np.int32)
    assert exif.orientation_of(data) == orientation
    assert got.shape == expected.shape
    assert np.abs(got - expected).mean() < 3.0  # JPEG decoders differ by a few levels
    # ... while every other way up differs by far more: the test can tell.
    stored = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), np.int32)
    for other, candidate in enumerate(_eight_transforms(stored), start=1):
        if other != orientation and candidate.shape == got.shape:
            assert np.abs(got - candidate).mean() > 30.0


def test_images_without_orientation_decode_as_stored(encode):
    array = _pattern()
    for data in (encode(array, "PNG"), encode(array, "JPEG", quality=95), oriented_jpeg(1)):
        assert exif.orientation_of(data) == 1
        assert exif.decode_image_eagerly(data).shape == (HEIGHT, WIDTH, 3)


def test_damaged_exif_never_fails_and_reads_as_stored_or_a_valid_value():
    data = oriented_jpeg(6)
    start = data.index(b"Exif")
    rng = np.random.default_rng(0)
    for _ in range(150):
        damaged = bytearray(data)
        for position in rng.integers(start - 4, start + 60, size=3):
            damaged[position] = int(rng.integers(0, 256))
        assert 1 <= exif.orientation_of(bytes(damaged)) <= 8
    # Truncated inside the Exif segment, an IFD offset far past the end,
    # an out-of-range value, and a non-marker byte where a segment starts.
    far = data[: start + 10] + b"\xff\xff\xff\x7f" + data[start + 14 :]
    assert exif.orientation_of(far) == 1
    for damaged in (data[: start + 12], oriented_jpeg(9), oriented_jpeg(0), b"\xff\xd8\x00\x00"):
        assert exif.orientation_of(damaged) == 1


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_scaled_training_decode_is_oriented(orientation):
    array = _pattern(96, 160)
    data = oriented_jpeg(orientation, array=array)
    expected = pillow_displayed(data)
    # long_side 64 lets libjpeg decode at 1/2 scale (80 >= 64), then turn.
    pixels, original = image_decoding.read_image_for_size(tf.constant(data), tf.constant(False), 64)
    assert tuple(original.numpy()) == expected.shape[:2]
    assert pixels.shape[:2] == (expected.shape[0] // 2, expected.shape[1] // 2)
    half = np.asarray(
        Image.fromarray(expected.astype(np.uint8)).resize(pixels.shape[1::-1], Image.BOX),
        np.int32,
    )
    assert np.abs(pixels.numpy().astype(np.int32) - half).mean() < 6.0


@pytest.mark.parametrize("decode_fully", [False, True])
def test_probe_reports_the_displayed_size(decode_fully):
    for orientation in (1, 3, 5, 6, 7, 8):
        probe = probe_image(oriented_jpeg(orientation), decode=decode_fully)
        assert probe.problem is None
        expected = (HEIGHT, WIDTH) if orientation < 5 else (WIDTH, HEIGHT)
        assert (probe.width, probe.height) == expected[::-1]


def test_saved_model_keeps_the_orientation(tmp_path):
    module = tf.Module()
    module.decode = tf.function(
        lambda encoded: tf.shape(exif.decode_image(encoded)),
        input_signature=[tf.TensorSpec([], tf.string)],
    )
    tf.saved_model.save(module, str(tmp_path / "model"))
    loaded = tf.saved_model.load(str(tmp_path / "model"))
    assert tuple(loaded.decode(oriented_jpeg(6)).numpy()) == (WIDTH, HEIGHT, 3)
    assert tuple(loaded.decode(oriented_jpeg(3)).numpy()) == (HEIGHT, WIDTH, 3)
