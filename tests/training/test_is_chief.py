"""`is_chief` decides which process writes checkpoints and the final model.

The reference is TensorFlow's own rule (`multi_worker_util.is_chief` on the
cluster that `TFConfigClusterResolver` reads from the same ``TF_CONFIG``):
the chief task, or worker 0 when the cluster has no chief. One deliberate
difference: TensorFlow counts an evaluator as a chief of its own, but an
evaluator does not train, so it must not write training checkpoints.
"""

import json

import pytest
from tensorflow.python.distribute import multi_worker_util
from tensorflow.python.distribute.cluster_resolver import TFConfigClusterResolver

from yolor_keras.training.distribute import is_chief

WITH_CHIEF = {"chief": ["h0:1"], "worker": ["h1:1", "h2:1"], "evaluator": ["h3:1"]}
WITHOUT_CHIEF = {"worker": ["h0:1", "h1:1", "h2:1"]}

CASES = [
    # (cluster, task type, task index, expected)
    (WITH_CHIEF, "chief", 0, True),
    (WITH_CHIEF, "worker", 0, False),  # the chief writes, not worker 0
    (WITH_CHIEF, "worker", 1, False),
    (WITHOUT_CHIEF, "worker", 0, True),
    (WITHOUT_CHIEF, "worker", 1, False),
    (WITHOUT_CHIEF, "worker", 2, False),
    (WITH_CHIEF, "evaluator", 0, False),
]


def _tensorflow_rule(config):
    resolver = TFConfigClusterResolver()
    return multi_worker_util.is_chief(resolver.cluster_spec(), resolver.task_type, resolver.task_id)


@pytest.mark.parametrize("cluster, kind, index, expected", CASES)
def test_chief_by_task_type_and_index(cluster, kind, index, expected, monkeypatch):
    config = {"cluster": cluster, "task": {"type": kind, "index": index}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(config))
    assert is_chief() is expected
    if kind != "evaluator":
        assert _tensorflow_rule(config) is expected
    else:
        assert _tensorflow_rule(config) is True  # the deliberate difference


def test_index_written_as_a_string_is_read_as_tensorflow_reads_it(monkeypatch):
    # TensorFlow reads the index with int(): "0" is worker 0, which is the
    # chief of a cluster without one. Comparing the string with 0 would
    # leave no process writing checkpoints.
    config = {"cluster": WITHOUT_CHIEF, "task": {"type": "worker", "index": "0"}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(config))
    assert _tensorflow_rule(config) is True
    assert is_chief() is True
    config["task"]["index"] = "1"
    monkeypatch.setenv("TF_CONFIG", json.dumps(config))
    assert is_chief() is False


@pytest.mark.parametrize("value", [None, "", "{}"])
def test_a_single_process_is_the_chief(value, monkeypatch):
    if value is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", value)
    assert is_chief() is True


@pytest.mark.parametrize(
    "value", ["{not json", '{"task": {"type": "worker", "index": "x"}}', "[1]"]
)
def test_a_malformed_tf_config_is_a_clear_error(value, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", value)
    with pytest.raises(ValueError, match="TF_CONFIG is not a valid cluster configuration"):
        is_chief()
