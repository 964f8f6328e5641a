"""Head selection, implicit-knowledge settings and loss weights of `YOLORMultiTask`."""

import pytest

from yolor_keras.tasks.multi_task_config import normalize_heads
from yolor_keras.tasks.multi_task_config import normalize_implicit
from yolor_keras.tasks.multi_task_config import normalize_loss_weights


def test_heads_come_back_in_canonical_order():
    assert normalize_heads(["embedding", "detection"]) == ("detection", "embedding")
    assert normalize_heads("classification") == ("classification",)


@pytest.mark.parametrize(
    "heads, message",
    [
        (["segmentation"], "Unknown head"),
        ([], "at least one"),
        (["embedding", "embedding"], "more than once"),
    ],
)
def test_bad_head_selections_are_named(heads, message):
    with pytest.raises(ValueError, match=message):
        normalize_heads(heads)


def test_one_form_applies_to_every_head_and_use():
    assert normalize_implicit("network", ["detection", "embedding"]) == {
        "detection": {"add": "network", "multiply": "network"},
        "embedding": {"add": "network", "multiply": "network"},
    }
    for none in (None, "none"):
        assert normalize_implicit(none, ["classification"]) == {
            "classification": {"add": None, "multiply": None}
        }


def test_per_head_and_per_use_settings_with_vector_as_default():
    implicit = normalize_implicit(
        {"classification": {"add": "factorization"}, "embedding": None, "detection": "network"},
        ["classification", "embedding"],
    )
    # The detection entry is ignored (head off); the unspecified use is "vector".
    assert implicit == {
        "classification": {"add": "factorization", "multiply": "vector"},
        "embedding": {"add": None, "multiply": None},
    }
    assert normalize_implicit({}, ["detection"]) == {
        "detection": {"add": "vector", "multiply": "vector"}
    }


@pytest.mark.parametrize(
    "implicit, message",
    [
        ("matrix", r"implicit\['detection'\].*'matrix'"),
        ({"detection": {"shift": "vector"}}, "unknown key"),
        ({"detection": {"add": "mlp"}}, r"implicit\['detection'\]\['add'\]"),
        ({"tracking": "vector"}, "unknown head"),
    ],
)
def test_bad_implicit_settings_name_the_field(implicit, message):
    with pytest.raises(ValueError, match=message):
        normalize_implicit(implicit, ["detection"])


def test_loss_weights_default_to_one_and_must_be_non_negative():
    assert normalize_loss_weights({"embedding": 0.1}, ["detection", "embedding"]) == {
        "detection": 1.0,
        "embedding": 0.1,
    }
    with pytest.raises(ValueError, match=r"loss_weights\['embedding'\]"):
        normalize_loss_weights({"embedding": -1}, ["embedding"])
    with pytest.raises(ValueError, match="unknown head"):
        normalize_loss_weights({"depth": 1.0}, ["embedding"])
