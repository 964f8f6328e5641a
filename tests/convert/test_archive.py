"""The checkpoint reader returns exactly what torch.load would, without torch.

torch is the reference here: every tensor read from a `torch.save` archive
must equal ``torch.load(...)``'s, for every dtype, view and byte order a
checkpoint can hold.
"""

import collections
import io
import pickle
import sys
import zipfile

import numpy as np
import pytest
import torch

from yolor_keras.convert import read_checkpoint


def _reference(value):
    value = value.detach()
    return value.float().numpy() if value.is_floating_point() else value.numpy()


def test_every_dtype_and_view_matches_torch(tmp_path):
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6) / 7
    state = collections.OrderedDict(
        [
            ("transposed", base.t()),
            ("strided", base[1:, ::2]),
            ("offset", base.view(-1)[5:11]),
            ("scalar", torch.tensor(3.25)),
            ("half", (base / 3).half()),
            ("bfloat16", (base * 1.1).bfloat16()),
            ("double", base.double() / 3),
            ("long", torch.arange(-3, 3).view(2, 3)),
            ("int", torch.arange(4, dtype=torch.int32)),
            ("bool", torch.tensor([True, False, True])),
            ("uint8", torch.arange(250, 256, dtype=torch.uint8)),
            ("small_expand", torch.arange(2.0).expand(1, 2)),
            ("parameter", torch.nn.Parameter(base[:2])),
            ("empty", torch.zeros(0, 3)),
        ]
    )
    path = tmp_path / "views.pt"
    torch.save({"model": state}, path)
    got = read_checkpoint(path).state_dict
    assert list(got) == list(state)
    for name, value in state.items():
        expected = _reference(value)
        assert got[name].shape == expected.shape, name
        assert got[name].dtype == expected.dtype, name
        np.testing.assert_array_equal(got[name], expected, err_msg=name)


def test_views_of_one_storage_share_memory_like_torch(tmp_path):
    weight = torch.arange(6.0)
    path = tmp_path / "tied.pt"
    torch.save({"model": {"a": weight, "b": weight[2:]}}, path)
    state = read_checkpoint(path).state_dict
    state["a"][3] = -1.0
    assert state["b"][1] == -1.0  # one converted storage, two views of it


class _Storage:
    def __init__(self, key, storage_type, numel):
        self.key, self.storage_type, self.numel = key, storage_type, numel


class _Tensor:
    def __init__(self, storage, size):
        self.arguments = (storage, 0, size, (1,), False, collections.OrderedDict())

    def __reduce__(self):
        return torch._utils._rebuild_tensor_v2, self.arguments


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            return ("storage", obj.storage_type, obj.key, "cpu", obj.numel)
        return None


@pytest.mark.parametrize("byteorder", ["little", "big"])
def test_byte_order_record_is_honoured(byteorder, tmp_path):
    # torch writes its machine's order and names it in a 'byteorder' record.
    values = {
        "half": (torch.HalfStorage, np.array([1.5, -2.25, 65504.0], "float16")),
        "float": (torch.FloatStorage, np.array([1e-3, 3.5, -7.0], "float32")),
        "long": (torch.LongStorage, np.array([1, -2, 1 << 40], "int64")),
    }
    order = "<" if byteorder == "little" else ">"
    state, records = {}, []
    for key, (storage_type, array) in enumerate(values.values()):
        storage = _Storage(str(key), storage_type, array.size)
        state[list(values)[key]] = _Tensor(storage, array.shape)
        records.append((f"c/data/{key}", array.astype(array.dtype.newbyteorder(order)).tobytes()))
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=2).dump({"model": state})
    path = tmp_path / f"{byteorder}.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("c/data.pkl", buffer.getvalue())
        archive.writestr("c/byteorder", byteorder)
        for name, data in records:
            archive.writestr(name, data)
    got = read_checkpoint(path).state_dict
    for name, (_, array) in values.items():
        expected = array.astype("float32") if array.dtype.kind == "f" else array
        np.testing.assert_array_equal(got[name], expected)
        assert got[name].dtype == expected.dtype


def test_reading_needs_neither_torch_nor_keras(fixtures_dir):
    import subprocess

    code = (
        "import sys\n"
        "sys.modules['torch'] = None  # importing torch now fails\n"
        "from yolor_keras.convert.checkpoint import read_checkpoint\n"
        f"c = read_checkpoint({str(fixtures_dir / 'tiny_yolor_p6_paper.pt')!r})\n"
        "assert 'keras' not in sys.modules and 'tensorflow' not in sys.modules\n"
        "print(c.branch, len(c.state_dict))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["paper", "528"]


def test_bfloat16_bits_become_float32():
    # Independent of torch: bfloat16 bits 0x3FC0 are 1.5, 0xC049 is -3.140625.
    from yolor_keras.convert.tensors import Storage

    data = np.array([0x3FC0, 0xC049], "<u2").tobytes()
    storage = Storage("0", "bfloat16", 2, lambda: data)
    np.testing.assert_array_equal(storage.array(), np.array([1.5, -3.140625], "float32"))
