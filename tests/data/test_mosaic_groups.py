"""mosaic_groups: each image decoded once per epoch, in `group` groups."""

import collections

import numpy as np
import tensorflow as tf

from yolor_keras.data import pipeline


def _decoded(count):
    """Fake decode outputs whose pixels and classes carry the image index."""

    def element(index):
        side = 2 + index % 3  # varied sizes, so chunks are padded
        return {
            "image": tf.fill([side, side + 1, 3], tf.cast(index, tf.uint8)),
            "source_size": tf.stack([side, side + 1]),
            "size": tf.stack([side, side + 1]),
            "boxes": tf.fill([1 + index % 2, 4], tf.cast(index, tf.float32)),
            "classes": tf.fill([1 + index % 2], tf.cast(index, tf.int32)),
        }

    return tf.data.Dataset.range(count).map(lambda i: element(tf.cast(i, tf.int32)))


def _members(groups):
    return [batch["image"].numpy()[:, 0, 0, 0].tolist() for batch in groups]


def test_every_image_is_in_group_groups_per_epoch():
    count, group = 37, 4  # two full chunks of 16 and one of 5
    groups = pipeline.mosaic_groups(_decoded(count), group, seed=3)
    epochs = [_members(groups) for _ in range(2)]
    for members in epochs:
        assert len(members) == count and all(len(g) == group for g in members)
        assert collections.Counter(i for g in members for i in g) == {
            i: group for i in range(count)
        }
        # Chunks are consecutive runs of 16 images: groups never mix chunks,
        # and in a full chunk a group's images are distinct.
        for index, g in enumerate(members):
            chunk = index // 16
            assert {i // 16 for i in g} == {chunk}
            if chunk < 2:
                assert len(set(g)) == group
    # Re-drawn each epoch, the same for the same seed.
    assert epochs[0] != epochs[1]
    assert _members(pipeline.mosaic_groups(_decoded(count), group, seed=3)) == epochs[0]


def test_groups_carry_each_image_with_its_own_boxes_and_sizes():
    groups = pipeline.mosaic_groups(_decoded(16), 4, seed=0)
    for batch in groups:
        ids = batch["image"].numpy()[:, 0, 0, 0]
        for row, index in enumerate(ids):
            side = 2 + index % 3
            np.testing.assert_array_equal(batch["size"][row], [side, side + 1])
            image = batch["image"][row].numpy()
            # The image sits top-left, zero padded to the chunk's largest size.
            assert (image[:side, : side + 1] == index).all()
            assert (image[side:] == 0).all() and (image[:, side + 1 :] == 0).all()
            classes = batch["classes"][row].numpy()
            assert (classes[: 1 + index % 2] == index).all() and (
                classes[1 + index % 2 :] == -1
            ).all()


def test_unshuffled_groups_take_consecutive_images():
    members = _members(pipeline.mosaic_groups(_decoded(8), 4, seed=0, shuffle=False))
    assert members == [[0, 1, 2, 3], [4, 5, 6, 7]] * 4
