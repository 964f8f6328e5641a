"""Opening the zip archives `torch.save` writes, and refusing anything else.

`torch.load` is never called: given a TorchScript archive it hands the file
to ``torch.jit.load`` whatever unpickler it was given, and the archive's own
scripted code then runs (it can, for instance, overwrite any file the user
can write). This module reads the archive with Python's `zipfile` and
checks it before a byte of it is unpickled:

- it must be a zip whose records all sit in one top-level folder and
  include ``data.pkl``; TorchScript archives (``constants.pkl``,
  ``code/``) are refused by name;
- every record must be stored uncompressed, as `torch.save` writes them,
  so no record can inflate (a DEFLATE record inflates up to ~1000:1), and
  the records' sizes must add up to no more than the file (records whose
  directory entries share bytes would be read again and again);
- ``data.pkl`` is at most `MAX_PICKLE_BYTES` and `MAX_PICKLE_OPS`
  operations, and stores no memo index beyond that (a 5-byte ``LONG_BINPUT``
  with a huge index makes Python's unpickler allocate and clear gigabytes);
- it is then unpickled with `restricted_pickle`, each storage reference is
  checked against the size of its record, and each record is read once,
  only when a tensor of the checkpoint's model is converted.

Only the zip format (the default of ``torch.save`` since torch 1.6, and the
format of the official YOLOR releases) is read. torch's older format is a
bare pickle stream whose storage sizes come from the stream itself; it is
refused with advice on re-saving it.
"""

import functools
import io
import os
import pickletools
import struct
import zipfile

from yolor_keras.convert import restricted_pickle
from yolor_keras.convert import tensors
from yolor_keras.convert.tensors import Refused

# An official checkpoint's data.pkl is about 150 kB and 60 000 operations
# (the model's structure; the weights live in the storage records).
MAX_PICKLE_BYTES = 64 << 20
MAX_PICKLE_OPS = 2_000_000
# Records: one per storage plus a handful; YOLOR-E6 with its EMA has ~3000.
MAX_RECORDS = 100_000
# Names whose presence makes an archive TorchScript rather than a checkpoint.
_TORCHSCRIPT_FILES = ("constants.pkl", "attributes.pkl")
_TORCHSCRIPT_FOLDERS = ("code/", "constants/")
_MEMO_WRITES = ("PUT", "BINPUT", "LONG_BINPUT")


def _declared_entries(handle, size):
    """The record count the zip's end-of-directory record declares (read before parsing it)."""
    tail_size = min(size, 22 + 0xFFFF)
    handle.seek(size - tail_size)
    tail = handle.read(tail_size)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + 22 > len(tail):
        raise Refused("is not a PyTorch checkpoint: its zip directory is missing or damaged.")
    (entries,) = struct.unpack_from("<H", tail, at + 10)
    if entries == 0xFFFF and at >= 20 and tail[at - 20 : at - 16] == b"PK\x06\x07":
        # Zip64: the real count is in the zip64 end record the locator points at.
        (offset,) = struct.unpack_from("<Q", tail, at - 12)
        if offset + 56 <= size:
            handle.seek(offset)
            record = handle.read(56)
            if record[:4] == b"PK\x06\x06":
                (entries,) = struct.unpack_from("<Q", record, 32)
    return entries


def check_pickle(data):
    """Refuses a pickle with too many operations or a memo index it could not have filled."""
    count = 0
    try:
        for opcode, argument, _ in pickletools.genops(data):
            count += 1
            if count > MAX_PICKLE_OPS:
                raise Refused(
                    f"has a data.pkl of more than {MAX_PICKLE_OPS:,} pickle operations; an "
                    "official checkpoint has about 60,000."
                )
            if opcode.name in _MEMO_WRITES and not 0 <= argument <= MAX_PICKLE_OPS:
                raise Refused(
                    f"has a data.pkl that stores memo entry {argument}, which would make the "
                    "unpickler allocate memory for that many entries."
                )
    except Refused:
        raise
    except Exception as error:
        raise Refused(
            f"is not a PyTorch checkpoint: its data.pkl is not a valid pickle ({error})."
        ) from None


class _Unpickler(restricted_pickle.Unpickler):
    """The restricted unpickler, with storage references resolved by the archive."""

    def __init__(self, file, archive):
        super().__init__(file, encoding="utf-8")
        self._archive = archive

    def persistent_load(self, pid):
        return self._archive.storage(pid)


class Archive:
    """A checked `torch.save` zip archive; use as a context manager.

    Args:
        path: the file.

    Raises:
        Refused: if the file is not a plain `torch.save` zip archive within
            the limits above; the message continues a sentence naming it.
    """

    def __init__(self, path):
        self.path = path
        self._file = open(path, "rb")
        self._zip = None
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.close()

    def close(self):
        if self._zip is not None:
            self._zip.close()
        self._file.close()

    def _open(self):
        size = os.fstat(self._file.fileno()).st_size
        head = self._file.read(4)
        if head != b"PK\x03\x04":
            if head[:1] == b"\x80":
                raise Refused(
                    "is in torch's legacy (before 1.6) format, which yolor convert does not "
                    "read: loading it means unpickling it whole. Re-save it in the zip format "
                    "(torch.save(torch.load(f, weights_only=True), f)) with a torch you trust "
                    "with this file."
                )
            raise Refused("is not a PyTorch checkpoint (not a zip archive written by torch.save).")
        if _declared_entries(self._file, size) > MAX_RECORDS:
            raise Refused(f"is a zip archive of more than {MAX_RECORDS:,} records.")
        self._file.seek(0)
        try:
            self._zip = zipfile.ZipFile(self._file)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError) as error:
            raise Refused(
                f"is not a PyTorch checkpoint (a damaged zip archive: {error})."
            ) from None
        infos = self._zip.infolist()
        if not infos or len(infos) > MAX_RECORDS:
            raise Refused(f"is a zip archive of {len(infos)} records, not a torch.save checkpoint.")
        folder = infos[0].filename.split("/", 1)[0] + "/"
        records = {}
        for info in infos:
            if not info.filename.startswith(folder):
                raise Refused(
                    f"is not a torch.save checkpoint: record '{info.filename:.200}' is outside "
                    f"the archive's folder '{folder}'."
                )
            name = info.filename[len(folder) :]
            if name in records:
                raise Refused(f"has two records named '{info.filename:.200}'.")
            records[name] = info
        if any(name in records for name in _TORCHSCRIPT_FILES) or any(
            name.startswith(_TORCHSCRIPT_FOLDERS) for name in records
        ):
            raise Refused(
                "is a TorchScript archive (torch.jit.save), not a torch.save checkpoint. Loading "
                "it runs the code it carries, so it is refused; convert the checkpoint that "
                "train.py wrote instead."
            )
        if "data.pkl" not in records:
            raise Refused("is a zip archive without data.pkl, not a torch.save checkpoint.")
        for name, info in records.items():
            if info.flag_bits & 0x1:
                raise Refused(f"has an encrypted record '{name:.200}'.")
            if info.compress_type != zipfile.ZIP_STORED:
                raise Refused(
                    f"has a compressed record '{name:.200}' (zip method {info.compress_type}, "
                    f"{info.file_size:,} bytes once inflated). torch.save stores every record "
                    "uncompressed, and inflating untrusted records can take unbounded memory, "
                    "so compressed archives are refused."
                )
            if info.file_size != info.compress_size:
                raise Refused(f"has a stored record '{name:.200}' whose two sizes differ.")
        total = sum(info.file_size for info in infos)
        if total > size:
            raise Refused(
                f"declares records whose sizes add up to {total:,} bytes, more than the file's "
                f"{size:,}: records share bytes, and reading each would multiply the file."
            )
        self._records = records
        self._storages = {}
        self._byteorder = "<"
        if "byteorder" in records:
            order = self._zip.read(records["byteorder"])
            if order not in (b"little", b"big"):
                raise Refused(f"has an unknown byte order {order[:20]!r}.")
            self._byteorder = "<" if order == b"little" else ">"

    def load(self):
        """Unpickles ``data.pkl``: plain data, `StandIn` modules and unread `tensors.Tensor`s."""
        info = self._records["data.pkl"]
        if info.file_size > MAX_PICKLE_BYTES:
            raise Refused(
                f"has a data.pkl of {info.file_size:,} bytes; at most {MAX_PICKLE_BYTES:,} are "
                "read (an official checkpoint's is about 150 kB)."
            )
        data = self._zip.read(info)
        check_pickle(data)
        return _Unpickler(io.BytesIO(data), self).load()

    def storage(self, pid):
        """The `tensors.Storage` named by ``('storage', type, key, location, numel)``."""
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] in ("storage", b"storage")):
            raise Refused("refers to a persistent object that is not a storage.")
        _, kind, key, _, numel = pid
        if isinstance(key, bytes):
            key = key.decode("ascii", "replace")
        if not isinstance(kind, tensors.StorageType) or not isinstance(key, str):
            raise Refused("has a storage reference of an unknown type.")
        if type(numel) is not int or numel < 0:
            raise Refused(f"has storage 'data/{key:.100}' with {numel!r:.50} elements.")
        storage = self._storages.get(key)
        if storage is not None:
            if storage.dtype_name != kind.dtype_name or storage.numel != numel:
                raise Refused(f"refers to storage 'data/{key:.100}' with two different types.")
            return storage
        info = self._records.get(f"data/{key}")
        if info is None:
            raise Refused(f"refers to a storage record 'data/{key:.100}' it does not hold.")
        expected = numel * tensors.item_size(kind.dtype_name)
        if info.file_size != expected:
            raise Refused(
                f"has storage record 'data/{key:.100}' of {info.file_size:,} bytes, but its "
                f"tensors claim {numel:,} {kind.dtype_name} elements ({expected:,} bytes)."
            )
        storage = tensors.Storage(
            key,
            kind.dtype_name,
            numel,
            functools.partial(self._zip.read, info),
            self._byteorder,
        )
        self._storages[key] = storage
        return storage
