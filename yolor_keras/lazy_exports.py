"""Subpackages export their public names lazily.

A subpackage lists ``{name: module}`` and gets a module ``__getattr__`` that
imports the module on first use. Importing a subpackage is then free of
TensorFlow and Keras, so light entry points (``yolor --help``, the
subcommands' own ``--help``, checkpoint reading) start at once.
"""

import importlib


def lazy_getattr(package, exports):
    """A PEP 562 ``__getattr__`` for ``package`` serving ``exports`` lazily.

    Args:
        package: the subpackage's ``__name__``.
        exports: maps each exported name to the submodule (relative to
            ``package``) that defines it.
    """

    def __getattr__(name):
        module_name = exports.get(name)
        if module_name is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module_name}"), name)
        return value

    return __getattr__
