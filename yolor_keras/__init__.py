"""yolor-keras: YOLOR (You Only Learn One Representation) in Keras 3.

Subpackages export their names lazily, so importing the package (or the
command line) loads neither TensorFlow nor Keras.

Loading a `.keras` file needs this package's serializable classes (layers,
models, tasks, losses, optimizer and schedules) registered with Keras. They
are registered as soon as both this package and Keras are imported, in
either order, so ``import yolor_keras`` followed by
``keras.saving.load_model(...)`` works. When Keras is first imported from
inside one of the package's own modules, registration waits until that
module's import is complete. Those modules use only `keras.ops`, so they
load on any Keras backend.
"""

import importlib
import importlib.abc
import sys

__version__ = "0.1.0"

# Every module that registers a class with `keras.saving`; a test checks the
# list against the source tree.
SERIALIZABLE_MODULES = (
    "layers.anchor_split",
    "layers.batch_normalization",
    "layers.channel_affine",
    "layers.fused_conv",
    "layers.image_converter",
    "layers.implicit_add",
    "layers.implicit_concat",
    "layers.implicit_multiply",
    "layers.input_size_check",
    "layers.nms",
    "layers.reorg",
    "losses.multi_task",
    "losses.yolor_loss",
    "models.heads",
    "models.yolor_backbone",
    "tasks.yolor_object_detector",
    "training.optimizer",
    "training.schedules",
)
_SUBPACKAGES = (
    "convert",
    "data",
    "evaluation",
    "export",
    "inference",
    "layers",
    "losses",
    "models",
    "serving",
    "tasks",
    "training",
)
_registered = False


def _importing_own_module(except_for=None):
    """Whether one of this package's modules is being imported right now.

    Registering imports many modules; doing that while one of them is
    half-initialised (Keras was imported from inside it) would import its
    dependants before the names they need exist.
    """
    for name, module in list(sys.modules.items()):
        if not name.startswith(f"{__name__}.") or name == except_for:
            continue
        if getattr(getattr(module, "__spec__", None), "_initializing", False):
            return True
    return False


def register_serializable_classes(*_, finished=None):
    """Imports every module whose classes `.keras` files refer to.

    Runs once, after Keras is loaded and when no module of the package is
    still being imported (``finished`` names a module whose import has just
    completed).
    """
    global _registered
    if _registered or "keras" not in sys.modules or _importing_own_module(except_for=finished):
        return
    _registered = True
    try:
        for name in SERIALIZABLE_MODULES:
            importlib.import_module(f"{__name__}.{name}")
    except BaseException:
        _registered = False
        raise


class _RegisterAfterOwnImports(importlib.abc.MetaPathFinder):
    """Retries a postponed registration each time one of our modules loads."""

    def find_spec(self, fullname, path, target=None):
        if _registered or not fullname.startswith(f"{__name__}."):
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        execute = loader.exec_module

        def exec_module(module):
            execute(module)
            register_serializable_classes(finished=fullname)

        loader.exec_module = exec_module
        return spec


def __getattr__(name):
    # `yolor_keras.models` and friends without an explicit submodule import.
    if name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if "keras" in sys.modules:
    register_serializable_classes()
else:
    import wrapt

    sys.meta_path.insert(0, _RegisterAfterOwnImports())
    wrapt.register_post_import_hook(register_serializable_classes, "keras")
