"""Helpers shared by the YOLOR model classes for their constructor arguments."""

import json


def plain_copy(value):
    """A JSON round trip: a plain, detached copy that is known to serialize.

    Keras wraps dicts and lists assigned to layers in tracking containers;
    configs should hand out plain data instead.
    """
    try:
        return json.loads(json.dumps(value))
    except TypeError as error:
        raise ValueError(f"Architecture must be JSON-serialisable data: {error}") from None


def image_shape(image_size):
    """``None`` / ``S`` / ``(H, W)`` -> the (H, W, 3) input shape (None = any size)."""
    if image_size is None:
        return (None, None, 3)
    if isinstance(image_size, int):
        return (image_size, image_size, 3)
    size = tuple(image_size)
    if len(size) != 2:
        raise ValueError(
            f"`image_size` must be None, an int or (height, width); got {image_size!r}."
        )
    return (size[0], size[1], 3)
