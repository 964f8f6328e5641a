"""Shared fixtures of the data tests: tiny datasets written to tmp_path."""

import io
import json

import numpy as np
import pytest
from PIL import Image


def _encode(array, image_format="JPEG", mode=None, **options):
    """Encodes an (H, W, 3) uint8 array, optionally converted to `mode`."""
    picture = Image.fromarray(array)
    if mode is not None:
        picture = picture.convert(mode)
    buffer = io.BytesIO()
    picture.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def _plain_image(height, width, value=(90, 90, 90), rectangles=()):
    """A flat image with filled rectangles: [(x1, y1, x2, y2, (r, g, b)), ...]."""
    array = np.empty((height, width, 3), np.uint8)
    array[:] = value
    for x1, y1, x2, y2, color in rectangles:
        array[y1:y2, x1:x2] = color
    return array


@pytest.fixture
def encode():
    """encode(array, image_format="JPEG", mode=None) -> bytes."""
    return _encode


@pytest.fixture
def plain_image():
    """plain_image(height, width, value, rectangles) -> uint8 array."""
    return _plain_image


@pytest.fixture
def write_coco(tmp_path):
    """Writes a COCO dataset: images as {file_name: bytes} plus annotations."""

    def write(images, annotations, categories, image_entries=None):
        image_dir = tmp_path / "images"
        image_dir.mkdir(exist_ok=True)
        entries = []
        for index, (name, data) in enumerate(images.items()):
            if data is not None:
                (image_dir / name).write_bytes(data)
            entries.append({"id": index + 1, "file_name": name})
        if image_entries is not None:
            entries = image_entries
        path = tmp_path / "instances_test.json"
        path.write_text(
            json.dumps(
                {
                    "images": entries,
                    "annotations": annotations,
                    "categories": categories,
                }
            )
        )
        return str(path), str(image_dir)

    return write
