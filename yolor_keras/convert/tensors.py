"""A checkpoint's tensors as NumPy data, rebuilt without torch.

`torch.save` pickles each tensor as a call ``_rebuild_tensor_v2(storage,
offset, size, stride, ...)`` whose storage is a persistent reference to a
raw record ``data/<key>`` of the zip archive. The restricted unpickler maps
those calls to `rebuild_tensor` here, which only records and checks the
view; nothing is read or allocated until `Tensor.numpy` is called. A
storage is read and converted once, however many tensors view it, and a
view may not have more elements than its storage (an expanded view with
zero strides would otherwise turn a few bytes into gigabytes).
"""

import numpy as np

# torch storage class -> the NumPy dtype of its elements.
STORAGE_DTYPES = {
    "FloatStorage": "float32",
    "DoubleStorage": "float64",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
    "UntypedStorage": "uint8",
}
_ITEM_SIZES = {
    "float32": 4,
    "float64": 8,
    "float16": 2,
    "bfloat16": 2,
    "int64": 8,
    "int32": 4,
    "int16": 2,
    "int8": 1,
    "uint8": 1,
    "bool": 1,
}
# torch allows 64 dimensions; a checkpoint's weights have at most 5.
MAX_DIMENSIONS = 64


class Refused(ValueError):
    """A checkpoint is refused; the message continues a sentence naming the file."""


class StorageType:
    """What the unpickler returns for a global such as ``torch.HalfStorage``."""

    def __init__(self, name):
        self.name = name
        self.dtype_name = STORAGE_DTYPES[name]

    def __repr__(self):
        return f"torch.{self.name}"


_STORAGE_TYPES = {name: StorageType(name) for name in STORAGE_DTYPES}


def storage_type(name):
    """The `StorageType` for a torch storage class name (KeyError if unknown)."""
    return _STORAGE_TYPES[name]


def item_size(dtype_name):
    return _ITEM_SIZES[dtype_name]


def _numpy_dtype(dtype_name):
    if dtype_name == "bfloat16":
        try:
            import ml_dtypes
        except ImportError:
            raise Refused(
                "holds bfloat16 tensors, which need the ml_dtypes package (pip install ml_dtypes)."
            ) from None
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(dtype_name)


class Storage:
    """One storage record, read and converted to NumPy at most once.

    Floating storages become float32 (half-precision checkpoints load as
    float32); integer and boolean storages keep their type.

    Args:
        key: the record's key (``data/<key>``).
        dtype_name: the element type.
        numel: the number of elements, already checked against the record.
        read: called without arguments, returns the record's bytes.
        byteorder: ``"<"`` or ``">"``, the archive's byte order.
    """

    def __init__(self, key, dtype_name, numel, read, byteorder="<"):
        self.key = key
        self.dtype_name = dtype_name
        self.numel = numel
        self._read = read
        self._byteorder = byteorder
        self._array = None

    def array(self):
        if self._array is None:
            data = self._read()
            size = item_size(self.dtype_name)
            # Read the elements as unsigned integers of the file's byte order
            # and reinterpret them in this machine's order. Each step below
            # copies at most once, so the peak is the record plus one array.
            raw = np.frombuffer(data, dtype=np.dtype(f"{self._byteorder}u{size}"))
            if raw.dtype.isnative:
                values = raw.view(_numpy_dtype(self.dtype_name))
            else:
                values = raw.astype(raw.dtype.newbyteorder("=")).view(_numpy_dtype(self.dtype_name))
            if values.dtype != np.float32 and (
                values.dtype.kind == "f" or self.dtype_name == "bfloat16"
            ):
                values = values.astype(np.float32)
            elif not values.flags.writeable:
                values = values.copy()  # own, writable memory, not the record's bytes
            del data, raw
            self._array = values
            self._read = None
        return self._array


class Tensor:
    """A view ``(offset, size, stride)`` of a `Storage`, checked but not yet read."""

    def __init__(self, storage, offset, size, stride):
        self.storage = storage
        self.offset = offset
        self.shape = size
        self.stride = stride
        numel = 1
        for dim in size:
            numel *= dim
        self.numel = numel

    def numpy(self, name):
        """The view as a NumPy array that shares the converted storage.

        Raises:
            Refused: if the view has more elements than its storage.
        """
        if self.numel > self.storage.numel:
            raise Refused(
                f"has entry '{name}', a view of {self.numel} elements over a storage of "
                f"{self.storage.numel} element(s) (zero or overlapping strides); expanding "
                "it is refused."
            )
        base = self.storage.array()
        strides = tuple(step * base.itemsize for step in self.stride)
        return np.lib.stride_tricks.as_strided(
            base[self.offset :], shape=self.shape, strides=strides, writeable=True
        )


def _dims(value, what):
    if not isinstance(value, (tuple, list)) or len(value) > MAX_DIMENSIONS:
        raise Refused(f"has a tensor whose {what} is not a list of at most 64 numbers.")
    if not all(type(dim) is int and dim >= 0 for dim in value):
        raise Refused(f"has a tensor whose {what} is not made of counts: {value!r:.200}.")
    return tuple(value)


def rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    """Stands in for ``torch._utils._rebuild_tensor(_v2)``: checks and records a view."""
    if not isinstance(storage, Storage):
        raise Refused("has a tensor that does not refer to a storage record of the archive.")
    if type(storage_offset) is not int or storage_offset < 0:
        raise Refused(f"has a tensor with storage offset {storage_offset!r:.100}.")
    size = _dims(size, "size")
    stride = _dims(stride, "stride")
    if len(size) != len(stride):
        raise Refused(f"has a tensor with {len(size)} sizes but {len(stride)} strides.")
    tensor = Tensor(storage, storage_offset, size, stride)
    if tensor.numel:
        last = storage_offset + sum((dim - 1) * step for dim, step in zip(size, stride))
        if last >= storage.numel:
            raise Refused(
                f"has a tensor that reaches element {last} of a storage of {storage.numel} "
                "elements."
            )
    return tensor


def rebuild_parameter(data, *_ignored):
    """Stands in for ``torch._utils._rebuild_parameter(_with_state)``: the data itself."""
    if not isinstance(data, Tensor):
        raise Refused("has a parameter that does not hold a tensor.")
    return data
