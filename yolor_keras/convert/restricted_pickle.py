"""A pickle module that can read official YOLOR checkpoints and nothing dangerous.

`yolor_keras.convert.archive` unpickles a checkpoint's ``data.pkl`` with it.
Unpickling can call any importable function a file names, so this module
resolves only an explicit allowlist of harmless globals (OrderedDict, set,
NumPy array reconstruction, and torch's tensor-rebuilding functions, which
are replaced by the inert checks of `yolor_keras.convert.tensors`; torch
itself is never imported). Classes of the official code (``models.*``,
``utils.*``) and of ``torch.nn`` become inert `StandIn` objects that merely
keep their pickled state, so the official code need not be installed and
no module code ever runs. Any other global, such as ``os.system``,
``builtins.eval`` or ``subprocess.Popen``, is refused with
`ForbiddenGlobalError` (a `pickle.UnpicklingError`) before it could be called.
"""

import collections
import functools
import pickle

import numpy as np

from yolor_keras.convert import tensors

# Module prefixes whose classes are replaced by stand-ins. These are the
# official code's packages and torch's module classes: they are only ever
# containers of state in a checkpoint.
STAND_IN_PREFIXES = ("models.", "utils.", "torch.nn.modules.", "__main__")


def _numpy_core(name):
    """numpy 2 keeps `numpy.core.multiarray` only as a deprecated alias."""
    core = getattr(np, "_core", None) or np.core
    return getattr(core.multiarray, name)


def _reconstruct(subtype, shape, dtype):
    """numpy's ``_reconstruct``, for the empty array numpy pickles.

    NumPy pickles an array as ``_reconstruct(ndarray, (0,), b"b")`` followed
    by ``__setstate__`` with the data; a larger shape would allocate (and,
    for object arrays, fill) memory that no byte of the file pays for.
    """
    if subtype is not np.ndarray:
        raise ForbiddenGlobalError("numpy _reconstruct may only rebuild a plain ndarray.")
    if not isinstance(shape, tuple) or any(type(dim) is not int or dim != 0 for dim in shape):
        raise ForbiddenGlobalError(f"numpy _reconstruct with shape {shape!r:.100} is refused.")
    return _numpy_core("_reconstruct")(subtype, shape, dtype)


_DTYPE_NAMES = (
    "float16",
    "float32",
    "float64",
    "bfloat16",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "bool",
)

# (module, name) -> zero-argument resolver of what the unpickler gets instead.
_ALLOWED = {
    ("collections", "OrderedDict"): lambda: collections.OrderedDict,
    ("builtins", "set"): lambda: set,
    ("__builtin__", "set"): lambda: set,
    ("builtins", "frozenset"): lambda: frozenset,
    ("__builtin__", "frozenset"): lambda: frozenset,
    # Protocol-2 pickles store bytes as latin-1 text encoded back by this.
    ("_codecs", "encode"): lambda: __import__("_codecs").encode,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): lambda: _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): lambda: _reconstruct,
    ("numpy.core.multiarray", "scalar"): lambda: _numpy_core("scalar"),
    ("numpy._core.multiarray", "scalar"): lambda: _numpy_core("scalar"),
    # Tensors are rebuilt as checked, unread views (see `tensors`).
    ("torch._utils", "_rebuild_tensor"): lambda: tensors.rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): lambda: tensors.rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): lambda: tensors.rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): lambda: tensors.rebuild_parameter,
    ("torch", "Size"): lambda: tuple,
}
for _dtype in _DTYPE_NAMES:
    # A dtype is only ever data in a checkpoint; keep its name.
    _ALLOWED[("torch", _dtype)] = functools.partial(str, f"torch.{_dtype}")
for _storage in tensors.STORAGE_DTYPES:
    _ALLOWED[("torch", _storage)] = functools.partial(tensors.storage_type, _storage)
for _kind in (
    "Float64DType",
    "Float32DType",
    "Float16DType",
    "Int64DType",
    "Int32DType",
    "BoolDType",
):
    _ALLOWED[("numpy.dtypes", _kind)] = functools.partial(lambda k: getattr(np.dtypes, k), _kind)


class ForbiddenGlobalError(pickle.UnpicklingError):
    """Raised for a global outside the allowlist; nothing was called."""


class StandIn:
    """An inert replacement for a pickled object of a class we do not import.

    It accepts any constructor arguments and any state, stores them, and
    does nothing else. ``class_path`` tells which class it replaces.
    """

    class_path = "?"

    def __init__(self, *args, **kwargs):
        self.__dict__["_stand_in_args"] = (args, kwargs)

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2:
            # (instance dict, slot dict): keep both, flattened.
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.__dict__["_stand_in_state"] = state

    def __repr__(self):
        return f"<stand-in for {self.class_path}>"


@functools.lru_cache(maxsize=4096)
def stand_in_class(module, name):
    """A `StandIn` subclass named after the class it replaces (cached, bounded)."""
    return type(name, (StandIn,), {"class_path": f"{module}.{name}", "__module__": __name__})


def resolve_global(module, name):
    """What the unpickler may use for global ``module.name``, or an error."""
    resolver = _ALLOWED.get((module, name))
    if resolver is not None:
        return resolver()
    if module.startswith(STAND_IN_PREFIXES) or module in ("models", "utils"):
        return stand_in_class(module, name)
    raise ForbiddenGlobalError(
        f"Refusing to load global '{module}.{name}': it is not on the allowlist of "
        "objects a YOLOR checkpoint may contain, and loading it could run code."
    )


class Unpickler(pickle.Unpickler):
    """`pickle.Unpickler` whose globals come only from `resolve_global`."""

    def find_class(self, module, name):
        return resolve_global(module, name)


def load(file, **kwargs):
    """`pickle.load` with the restricted `Unpickler`."""
    return Unpickler(file, **kwargs).load()


def loads(data, **kwargs):
    """`pickle.loads` with the restricted `Unpickler`."""
    import io

    return Unpickler(io.BytesIO(data), **kwargs).load()
