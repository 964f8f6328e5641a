"""Hostile checkpoints: `yolor convert` refuses them fast, in bounded memory, touching nothing.

Each attack is built here from scratch, the way an attacker would: with
torch itself (`torch.jit.script`, `torch.save` of crafted tensors and modules)
or as a hand-written zip archive. Each read runs in a child process so its
peak resident memory (``ru_maxrss``) and its time are measured honestly,
including memory that native code (zlib, NumPy) allocates, and under an
address-space limit so that a regression fails the test instead of
exhausting the machine.
"""

import collections
import io
import json
import os
import pickle
import re
import struct
import subprocess
import sys
import zlib

import keras
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from yolor_keras.cli import main as yolor_main  # noqa: E402
from yolor_keras.convert import convert_checkpoint  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# A read may use at most this much resident memory in all (the child's
# Python, NumPy and the package take about 40 MiB), and this long. Every
# attack below would need at least 1 GiB, most of them far more.
PEAK_LIMIT_MIB = 200
SECONDS_LIMIT = 10
# The child cannot map more than this, so a regression dies there.
ADDRESS_SPACE_LIMIT = 3 << 30

_PROBE = r"""
import json, resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[2]), int(sys.argv[2])))
def peak_mib():
    # VmHWM belongs to this program's own memory map; ru_maxrss would also
    # count the pages of the (large) test process this child was forked from.
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
from yolor_keras.convert.checkpoint import read_checkpoint
start = time.perf_counter()
try:
    checkpoint = read_checkpoint(sys.argv[1])
    outcome, message = "read", f"{len(checkpoint.state_dict)} entries"
except ValueError as error:
    outcome, message = "ValueError", str(error)
except BaseException as error:
    outcome, message = type(error).__name__, str(error)[:500]
print(json.dumps({
    "outcome": outcome,
    "message": message,
    "seconds": time.perf_counter() - start,
    "peak_mib": peak_mib(),
}))
"""


def _probe(path):
    """Reads ``path`` in a child process; returns its outcome, time and peak memory."""
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, str(path), str(ADDRESS_SPACE_LIMIT)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    lines = result.stdout.strip().splitlines()
    assert lines, f"the reader died (status {result.returncode}): {result.stderr[-2000:]}"
    return json.loads(lines[-1])


def _assert_refused(path, pattern, untouched=()):
    """The read is refused with a ValueError that names the file, fast and in bounded memory."""
    before = {p: open(p, "rb").read() for p in (path, *untouched)}
    report = _probe(path)
    assert report["outcome"] == "ValueError", report
    assert str(path) in report["message"], report
    assert re.search(pattern, report["message"]), report
    assert report["peak_mib"] < PEAK_LIMIT_MIB, report
    assert report["seconds"] < SECONDS_LIMIT, report
    for name, content in before.items():
        with open(name, "rb") as handle:
            assert handle.read() == content, f"{name} changed"
    return report


def _cli_refuses(path, out, capsys, monkeypatch):
    """``yolor convert`` exits with status 2 and one error line, and writes nothing."""
    # In process, leave sys.stderr to capsys (the TensorFlow log filter would
    # replace it); the real command line is run in a subprocess below.
    monkeypatch.setenv("YOLOR_VERBOSE", "1")
    status = yolor_main(["convert", str(path), "--model", "yolor_p6", "--out", str(out)])
    captured = capsys.readouterr()
    assert status == 2
    assert f"yolor convert: error: '{path}'" in captured.err
    assert "Traceback" not in captured.err
    assert not os.path.exists(out)


# ----------------------------------------------------------------------------- builders


def _write_zip(path, entries):
    """A zip archive written byte by byte, so records can be compressed or lie.

    ``entries``: (name, payload, method, crc, uncompressed size, offset of
    an earlier local header to point at or None).
    """
    with open(path, "wb") as handle:
        central = []
        for name, payload, method, crc, size, reuse in entries:
            encoded = name.encode()
            if reuse is None:
                offset = handle.tell()
                handle.write(
                    struct.pack(
                        "<IHHHHHIIIHH",
                        0x04034B50,
                        20,
                        0,
                        method,
                        0,
                        33,
                        crc,
                        len(payload),
                        size,
                        len(encoded),
                        0,
                    )
                )
                handle.write(encoded + payload)
            else:
                offset = reuse
            central.append(
                struct.pack(
                    "<IHHHHHHIIIHHHHHII",
                    0x02014B50,
                    20,
                    20,
                    0,
                    method,
                    0,
                    33,
                    crc,
                    len(payload),
                    size,
                    len(encoded),
                    0,
                    0,
                    0,
                    0,
                    0,
                    offset,
                )
                + encoded
            )
        start = handle.tell()
        handle.write(b"".join(central))
        handle.write(
            struct.pack(
                "<IHHHHIIH",
                0x06054B50,
                0,
                0,
                len(central),
                len(central),
                handle.tell() - start,
                start,
                0,
            )
        )


def _records(path):
    """The (name, bytes) records of a `torch.save` archive, in order."""
    import zipfile

    with zipfile.ZipFile(path) as archive:
        return [(info.filename, archive.read(info)) for info in archive.infolist()]


def _deflate_bomb(path, inflated_bytes):
    """A real checkpoint whose storage record is DEFLATE data inflating ~1000:1.

    The compressed stream is one fully flushed block of 1 MiB of zeros
    repeated, so building a 1 GiB bomb takes milliseconds.
    """
    torch.save({"model": {"weight": torch.zeros(4)}}, path)
    chunk = 1 << 20
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(bytes(chunk)) + compressor.flush(zlib.Z_FULL_FLUSH)
    payload = block * (inflated_bytes // chunk) + zlib.compressobj(9, zlib.DEFLATED, -15).flush()
    crc = 0
    zeros = bytes(chunk)
    for _ in range(inflated_bytes // chunk):
        crc = zlib.crc32(zeros, crc)
    entries = []
    for name, data in _records(path):
        if name.endswith("/data/0"):
            entries.append((name, payload, 8, crc, inflated_bytes, None))
        else:
            entries.append((name, data, 0, zlib.crc32(data), len(data), None))
    _write_zip(path, entries)
    return len(payload)


class _Storage:
    """Stands for the storage record ``data/<key>`` of a hand-made checkpoint."""

    def __init__(self, key, numel, storage_type=torch.FloatStorage):
        self.key, self.numel, self.storage_type = key, numel, storage_type


class _Tensor:
    """Pickles like a tensor viewing a `_Storage`, as `torch.save` writes one."""

    def __init__(self, storage, offset, size, stride):
        self.arguments = (storage, offset, size, stride, False, collections.OrderedDict())

    def __reduce__(self):
        return torch._utils._rebuild_tensor_v2, self.arguments


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            return ("storage", obj.storage_type, obj.key, "cpu", obj.numel)
        return None


def _pickle(value):
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=2).dump(value)
    return buffer.getvalue()


class _Overwrite(torch.nn.Module):
    """A TorchScript module whose ``__setstate__`` overwrites the start of ``path``."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path
        self.scale = torch.ones(2)

    @torch.jit.export
    def __getstate__(self):
        return (self.path, self.scale)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, torch.Tensor]):
        self.path = state[0]
        self.training = False
        # Maps the file shared and fills its first 64 bytes with float 35.0.
        self.scale = torch.ops.aten.from_file(self.path, True, 16).fill_(35)

    def forward(self, x):
        return x


def _torchscript_archive(path, marker):
    torch.jit.save(torch.jit.script(_Overwrite(str(marker))), str(path))


def _shared_children(depth):
    """Modules where each level holds the level below twice: 2**depth paths, depth+1 objects."""
    module = torch.nn.Conv2d(1, 1, 1)
    for _ in range(depth):
        parent = torch.nn.Module()
        parent.add_module("a", module)
        parent.add_module("b", module)
        module = parent
    return module


@pytest.fixture(scope="module")
def fixtures_dir():
    """The official parity fixtures, found as tests/convert/conftest.py finds them."""
    folder = os.environ.get("YOLOR_FIXTURES") or os.path.join(REPO, "..", "shared", "fixtures")
    if not os.path.isfile(os.path.join(folder, "tiny_input.npz")):
        message = f"parity fixtures not found at {folder} (set $YOLOR_FIXTURES)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    import pathlib

    return pathlib.Path(folder)


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "precious.txt"
    path.write_bytes(b"precious data that no checkpoint may touch\n" * 4)
    return path


# ----------------------------------------------------------------------------- the attacks


def test_torchscript_archive_is_refused_and_runs_nothing(tmp_path, marker, capsys, monkeypatch):
    path = tmp_path / "scripted.pt"
    _torchscript_archive(path, marker)
    original = marker.read_bytes()
    # The archive really is an attack: loading it as TorchScript overwrites the marker.
    victim = tmp_path / "victim.txt"
    victim.write_bytes(original)
    evil = tmp_path / "evil_victim.pt"
    _torchscript_archive(evil, victim)
    torch.jit.load(str(evil))
    assert victim.read_bytes()[:8] == np.full(2, 35, "<f4").tobytes()

    _assert_refused(path, r"TorchScript archive", untouched=[marker])
    _cli_refuses(path, tmp_path / "scripted.keras", capsys, monkeypatch)
    assert marker.read_bytes() == original


def test_torchscript_archive_through_the_real_command_line(tmp_path, marker):
    path = tmp_path / "scripted.pt"
    _torchscript_archive(path, marker)
    original = marker.read_bytes()
    result = subprocess.run(
        [sys.executable, "-m", "yolor_keras.cli", "convert", str(path), "--model", "yolor_p6"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"yolor convert: error: '{path}'" in result.stderr
    assert "TorchScript" in result.stderr
    assert marker.read_bytes() == original
    assert not (tmp_path / "scripted.keras").exists()


def test_deflate_bomb_is_refused_without_inflating(tmp_path, capsys, monkeypatch):
    path = tmp_path / "deflate.pt"
    compressed = _deflate_bomb(path, 1 << 30)
    assert os.path.getsize(path) < 2 << 20 and compressed < (1 << 30) // 900  # ~1000:1
    _assert_refused(path, r"compressed")
    _cli_refuses(path, tmp_path / "deflate.keras", capsys, monkeypatch)


def test_zero_stride_expansion_is_refused_without_materialising(tmp_path, capsys, monkeypatch):
    # One float16 element viewed as 65536 x 65536: 16 GiB once copied to float32.
    path = tmp_path / "expanded.pt"
    weight = torch.zeros(1, dtype=torch.float16).expand(1 << 16, 1 << 16)
    torch.save({"model": {"weight": weight}}, path)
    assert os.path.getsize(path) < 4096
    _assert_refused(path, r"weight.*4294967296 elements.*storage of 1")
    _cli_refuses(path, tmp_path / "expanded.keras", capsys, monkeypatch)


def test_one_storage_under_many_names_is_converted_once(tmp_path):
    # 2000 names for one 8 Mi-element float16 tensor: 64 GiB if each were converted.
    path = tmp_path / "shared.pt"
    weight = torch.arange(1 << 23, dtype=torch.float16)
    torch.save({"model": {f"layer{i}.weight": weight for i in range(2000)}}, path)
    report = _probe(path)
    assert report["outcome"] == "read" and report["message"] == "2000 entries", report
    # The 16 MiB record plus one 32 MiB float32 copy, not 2000 copies.
    assert report["peak_mib"] < PEAK_LIMIT_MIB, report
    assert report["seconds"] < SECONDS_LIMIT, report

    from yolor_keras.convert.checkpoint import read_checkpoint

    state = read_checkpoint(path).state_dict
    first, last = state["layer0.weight"], state["layer1999.weight"]
    np.testing.assert_array_equal(last, weight.float().numpy())
    assert np.shares_memory(first, last)


def test_modules_sharing_children_are_refused_quickly(tmp_path, capsys, monkeypatch):
    # 41 module objects, but 2**40 paths through them.
    path = tmp_path / "shared_children.pt"
    torch.save({"model": _shared_children(40)}, path)
    _assert_refused(path, r"has module 'a(\.a)*\.b' also reached as 'a(\.a)*'")
    _cli_refuses(path, tmp_path / "shared_children.keras", capsys, monkeypatch)


def test_module_containing_itself_is_refused(tmp_path, capsys, monkeypatch):
    path = tmp_path / "self.pt"
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 1))
    model._modules["loop"] = model
    torch.save({"model": model}, path)
    _assert_refused(path, r"has module 'loop' also reached as the model itself")
    _cli_refuses(path, tmp_path / "self.keras", capsys, monkeypatch)


def test_records_sharing_their_bytes_are_refused(tmp_path, capsys, monkeypatch):
    # 500 storages whose central-directory entries all point at one 8 MiB
    # stored record: 4 GiB if each were read.
    path = tmp_path / "overlap.pt"
    numel = 1 << 21
    state = {f"w{i}": _Tensor(_Storage(str(i), numel), 0, (numel,), (1,)) for i in range(500)}
    data = bytes(4 * numel)
    entries = [("overlap/data.pkl", _pickle({"model": state}), None)]
    entries += [("overlap/version", b"3\n", None), ("overlap/byteorder", b"little", None)]
    # Where data/0's local header will start: after the three records above.
    header_size = sum(30 + len(name) + len(content) for name, content, _ in entries)
    entries.append(("overlap/data/0", data, None))
    entries += [(f"overlap/data/{i}", data, header_size) for i in range(1, 500)]
    crc = {id(d): zlib.crc32(d) for _, d, _ in entries}
    _write_zip(path, [(n, d, 0, crc[id(d)], len(d), reuse) for n, d, reuse in entries])
    assert os.path.getsize(path) < 9 << 20
    _assert_refused(path, r"records whose sizes add up to 4,194,346,172 bytes, more than the file")
    _cli_refuses(path, tmp_path / "overlap.keras", capsys, monkeypatch)


def _archive_with(path, data_pkl, storages=()):
    """A plain archive around a hand-made ``data.pkl`` and (key, bytes) storage records."""
    records = [("x/data.pkl", data_pkl), ("x/version", b"3\n"), ("x/byteorder", b"little")]
    records += [(f"x/data/{key}", data) for key, data in storages]
    _write_zip(path, [(n, d, 0, zlib.crc32(d), len(d), None) for n, d in records])


class _Reconstruct:
    """Unpickles as numpy's ``_reconstruct`` of a 2**28-element object array (2 GiB of pointers)."""

    def __reduce__(self):
        return np.ndarray.__reduce__(np.zeros(0))[0], (np.ndarray, (1 << 28,), np.dtype(object))


def test_memo_index_bomb_is_refused(tmp_path, capsys, monkeypatch):
    # 10 bytes of pickle: store None at memo index 2**28, which makes the
    # unpickler allocate (and clear) a 4 GiB memo table.
    path = tmp_path / "memo.pt"
    _archive_with(path, b"\x80\x02Nr" + struct.pack("<I", 1 << 28) + b".")
    _assert_refused(path, r"stores memo entry 268435456")
    _cli_refuses(path, tmp_path / "memo.keras", capsys, monkeypatch)


def test_numpy_reconstruct_bomb_is_refused(tmp_path, capsys, monkeypatch):
    path = tmp_path / "reconstruct.pt"
    _archive_with(path, pickle.dumps({"model": _Reconstruct()}, protocol=2))
    _assert_refused(path, r"cannot be loaded safely: numpy _reconstruct with shape \(268435456,\)")
    _cli_refuses(path, tmp_path / "reconstruct.keras", capsys, monkeypatch)


def test_storage_larger_than_its_record_is_refused(tmp_path):
    # The pickle claims 2**30 elements for a 16-byte record.
    path = tmp_path / "short.pt"
    tensor = _Tensor(_Storage("0", 1 << 30), 0, (1 << 30,), (1,))
    _archive_with(path, _pickle({"model": {"weight": tensor}}), [("0", bytes(16))])
    _assert_refused(path, r"record 'data/0' of 16 bytes, but its tensors claim 1,073,741,824")


def test_legacy_format_is_refused_with_advice(tmp_path):
    path = tmp_path / "legacy.pt"
    torch.save({"model": {"weight": torch.ones(2)}}, path, _use_new_zipfile_serialization=False)
    _assert_refused(path, r"legacy \(before 1\.6\) format.*Re-save it")


@pytest.mark.parametrize(
    "change, message",
    [
        # A zero-sized weight may claim any width: 2**20 filters, ~1000x the model.
        ("width", r"implies a width multiplier of 1024; at most 4"),
        ("classes", r"implies a number of classes of 20000; at most 10000"),
    ],
)
def test_sizes_a_file_claims_are_bounded_before_the_model_is_built(
    change, message, fixtures_dir, tmp_path, monkeypatch
):
    from yolor_keras.convert import convert as convert_module
    from yolor_keras.convert.checkpoint import read_checkpoint

    state = {
        k: torch.from_numpy(np.array(v))
        for k, v in read_checkpoint(fixtures_dir / "tiny_yolor_csp_main.pt").state_dict.items()
    }
    if change == "width":
        state["module_list.0.Conv2d.weight"] = torch.zeros((1 << 20, 3, 3, 0))
    else:
        for key in [k for k in state if k.endswith("Conv2d.bias")]:
            state[key] = torch.zeros(3 * (5 + 20000))
    path = tmp_path / f"{change}.pt"
    torch.save({"model": state}, path)

    def no_model(*args, **kwargs):
        raise AssertionError("a model was built from the file's claimed sizes")

    monkeypatch.setattr(convert_module, "YOLORObjectDetector", no_model)
    with pytest.raises(ValueError, match=message) as error:
        convert_checkpoint(path, "yolor_csp")
    assert str(path) in str(error.value)


@pytest.fixture(scope="module")
def previous_output(fixtures_dir, tmp_path_factory):
    """The bytes of a converted model that loads back with the converted weights."""
    out = tmp_path_factory.mktemp("previous") / "model.keras"
    source = fixtures_dir / "tiny_yolor_p6_paper.pt"
    model = convert_checkpoint(source, "yolor_p6_paper", out_path=out)
    restored = keras.saving.load_model(out)
    assert len(restored.weights) == len(model.weights)
    for expected, got in zip(model.weights, restored.weights):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(got), keras.ops.convert_to_numpy(expected)
        )
    return out.read_bytes()


def _assert_untouched(out, previous):
    # Byte for byte the file that was loaded back above, and no partial file beside it.
    assert out.read_bytes() == previous
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]


def test_failed_save_leaves_the_previous_keras_file_loadable(
    fixtures_dir, previous_output, tmp_path, monkeypatch
):
    out = tmp_path / "model.keras"
    out.write_bytes(previous_output)

    def broken_save(self, path, *args, **kwargs):
        with open(path, "wb") as handle:
            handle.write(b"PK\x03\x04 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(keras.Model, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        convert_checkpoint(fixtures_dir / "tiny_yolor_p6_paper.pt", "yolor_p6_paper", out_path=out)
    _assert_untouched(out, previous_output)


def test_save_that_writes_a_bad_file_is_caught_before_the_rename(
    fixtures_dir, previous_output, tmp_path, monkeypatch
):
    out = tmp_path / "model.keras"
    out.write_bytes(previous_output)
    real_save = keras.Model.save

    def truncating_save(self, path, *args, **kwargs):
        real_save(self, path, *args, **kwargs)
        with open(path, "r+b") as handle:  # a save that "succeeded" but is cut short
            handle.truncate(os.path.getsize(path) // 2)

    monkeypatch.setattr(keras.Model, "save", truncating_save)
    with pytest.raises(ValueError, match=r"does not load back.*was not changed"):
        convert_checkpoint(fixtures_dir / "tiny_yolor_p6_paper.pt", "yolor_p6_paper", out_path=out)
    _assert_untouched(out, previous_output)
