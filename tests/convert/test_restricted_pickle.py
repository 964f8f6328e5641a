"""The restricted unpickler: official checkpoints load, hostile pickles do nothing."""

import collections
import os
import pickle
import subprocess
import sys
import types

import numpy as np
import pytest
import torch

from yolor_keras.convert import convert_checkpoint
from yolor_keras.convert import read_checkpoint
from yolor_keras.convert import restricted_pickle


class _Payload:
    """Unpickling this calls ``function(*arguments)``: the classic pickle exploit."""

    def __init__(self, function, arguments):
        self.function, self.arguments = function, arguments

    def __reduce__(self):
        return self.function, self.arguments


def _hostile_payloads(marker):
    command = f"touch {marker}"
    return {
        "os.system": _Payload(os.system, (command,)),
        "builtins.eval": _Payload(eval, (f"open({str(marker)!r}, 'w')",)),
        "builtins.exec": _Payload(exec, (f"open({str(marker)!r}, 'w')",)),
        "subprocess.Popen": _Payload(subprocess.Popen, (["touch", str(marker)],)),
        # getattr is the usual stepping stone to reach other callables.
        "builtins.getattr": _Payload(getattr, ("text", "upper")),
    }


@pytest.mark.parametrize(
    "kind", ["os.system", "builtins.eval", "builtins.exec", "subprocess.Popen", "builtins.getattr"]
)
def test_hostile_globals_are_refused_and_never_run(kind, tmp_path):
    marker = tmp_path / "pwned"
    payload = _hostile_payloads(marker)[kind]
    # Hide it inside an allowed container, as an attacker would.
    data = pickle.dumps(collections.OrderedDict(weights=payload), protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="Refusing to load global"):
        restricted_pickle.loads(data)
    assert not marker.exists()
    # The unrestricted pickle really would have run it (so the test is meaningful).
    if kind == "os.system":
        pickle.loads(data)
        assert marker.exists()


def test_hostile_checkpoint_file_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"epoch": -1, "model": _Payload(os.system, (f"touch {marker}",))}, path)
    out = tmp_path / "evil.keras"
    with pytest.raises(ValueError, match=r"cannot be loaded safely.*(posix|os)\.system"):
        convert_checkpoint(path, "yolor_p6", out_path=out)
    assert not marker.exists()
    assert not out.exists()


def test_official_classes_become_inert_stand_ins(tmp_path, monkeypatch):
    marker = tmp_path / "ran"

    class Conv:
        """Pretends to be models.common.Conv; its code must never run on load."""

        def __init__(self):
            self.channels = 8

        def __setstate__(self, state):
            marker.write_text("official code ran")

    fake_module = types.ModuleType("models.common")
    Conv.__module__, Conv.__qualname__ = "models.common", "Conv"
    fake_module.Conv = Conv
    monkeypatch.setitem(sys.modules, "models", types.ModuleType("models"))
    monkeypatch.setitem(sys.modules, "models.common", fake_module)
    data = pickle.dumps({"layer": Conv()}, protocol=2)
    monkeypatch.delitem(sys.modules, "models.common")

    loaded = restricted_pickle.loads(data)["layer"]
    assert isinstance(loaded, restricted_pickle.StandIn)
    assert loaded.class_path == "models.common.Conv"
    assert loaded.channels == 8
    assert not marker.exists()


def test_allowed_containers_round_trip():
    value = {
        "ordered": collections.OrderedDict(a=1),
        "set": {1, 2},
        "array": np.arange(6, dtype=np.float64).reshape(2, 3),
        "bytes": b"\x00\xff",
    }
    loaded = restricted_pickle.loads(pickle.dumps(value, protocol=2))
    assert loaded["ordered"] == value["ordered"] and loaded["set"] == {1, 2}
    assert loaded["bytes"] == value["bytes"]
    np.testing.assert_array_equal(loaded["array"], value["array"])


def test_paper_checkpoint_reads_without_official_code(fixtures_dir):
    assert "models" not in sys.modules or not hasattr(sys.modules["models"], "yolo")
    checkpoint = read_checkpoint(fixtures_dir / "tiny_yolor_p6_paper.pt")
    assert checkpoint.branch == "paper"
    state = checkpoint.state_dict
    assert len(state) == 528
    keys = list(state)
    assert keys[0] == "model.1.conv.weight"
    # Registration order, not execution order: cv4 comes before bn and m.
    csp = [k for k in keys if k.startswith("model.3.") and k.endswith("weight")]
    assert csp[:4] == [
        "model.3.cv1.conv.weight",
        "model.3.cv1.bn.weight",
        "model.3.cv2.weight",
        "model.3.cv4.conv.weight",
    ]
    assert state["model.41.ia.0.implicit"].shape == (1, 32, 1, 1)
    assert state["model.41.m.0.weight"].shape == (24, 32, 1, 1)
    weight = state["model.3.cv1.conv.weight"]
    assert weight.dtype == np.float32
    np.testing.assert_array_equal(weight.astype(np.float16).astype(np.float32), weight)
    assert state["model.1.bn.num_batches_tracked"].dtype == np.int64
    assert checkpoint.yaml["nc"] == 3 and checkpoint.yaml["width_multiple"] == 0.125
    assert checkpoint.batchnorm_epsilons == (1e-3,)


@pytest.mark.parametrize(
    "name, entries", [("tiny_yolor_p6_main", 862), ("tiny_yolor_csp_main", 684)]
)
def test_main_checkpoint_is_a_float32_state_dict(name, entries, fixtures_dir):
    checkpoint = read_checkpoint(fixtures_dir / f"{name}.pt")
    assert checkpoint.branch == "main" and checkpoint.yaml is None
    assert len(checkpoint.state_dict) == entries
    reference = torch.load(fixtures_dir / f"{name}.pt", weights_only=False)["model"]
    assert list(checkpoint.state_dict) == list(reference)
    for key, value in reference.items():
        np.testing.assert_array_equal(checkpoint.state_dict[key], value.numpy())


def test_pickled_modules_with_sync_batchnorm(tmp_path):
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, bias=False),
        torch.nn.SyncBatchNorm(8),
        torch.nn.Sequential(torch.nn.BatchNorm2d(8), torch.nn.SiLU()),
    )
    model.register_buffer("scratch", torch.ones(2), persistent=False)
    path = tmp_path / "sync.pt"
    torch.save({"model": model.half()}, path)
    checkpoint = read_checkpoint(path)
    expected = model.state_dict()
    assert list(checkpoint.state_dict) == list(expected)
    assert "1.running_var" in checkpoint.state_dict and "scratch" not in checkpoint.state_dict
    for key, value in expected.items():
        got = checkpoint.state_dict[key]
        np.testing.assert_array_equal(
            got, value.float().numpy() if value.is_floating_point() else value.numpy()
        )
        assert got.dtype == (np.float32 if value.is_floating_point() else np.int64)
    assert checkpoint.batchnorm_epsilons == (1e-5,)
