"""yolor-keras: YOLOR (You Only Learn One Representation) in Keras 3.

Loading a `.keras` file needs this package's serializable classes (layers,
models, tasks, losses) registered with Keras. They are registered as soon as
both this package and Keras are imported, in either order, so
``import yolor_keras`` followed by ``keras.saving.load_model(...)`` works.
Until Keras is imported nothing heavy is loaded, which keeps ``yolor --help``
and other light entry points fast. Those modules use only `keras.ops`, so
they load on any Keras backend.
"""

import importlib
import sys

__version__ = "0.1.0"

_SERIALIZABLE_SUBPACKAGES = ("layers", "losses", "models", "tasks")


def _importing_own_module(except_for=None):
    """Whether one of this package's modules is being imported right now.

    Registration imports every serializable subpackage; doing that while one
    of them is half-initialised (Keras was imported from inside it) would
    import its dependants too early.
    """
    for name, module in list(sys.modules.items()):
        if not name.startswith(f"{__name__}.") or name == except_for:
            continue
        if getattr(getattr(module, "__spec__", None), "_initializing", False):
            return True
    return False


def register_serializable_classes(*_, finished=None):
    """Imports the subpackages whose classes `.keras` files refer to.

    Called when Keras is imported and at the end of each serializable
    subpackage (``finished`` names it), it does its work once no other module
    of the package is still being imported, and only after Keras is loaded.
    """
    if "keras" not in sys.modules or _importing_own_module(except_for=finished):
        return
    for name in _SERIALIZABLE_SUBPACKAGES:
        importlib.import_module(f"{__name__}.{name}")


def __getattr__(name):
    # `yolor_keras.layers` and friends without an explicit submodule import.
    if name in _SERIALIZABLE_SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if "keras" in sys.modules:
    register_serializable_classes()
else:
    import wrapt

    wrapt.register_post_import_hook(register_serializable_classes, "keras")
