"""Importing the package is light, and still registers the Keras classes."""

import subprocess
import sys
import textwrap


def _run(code, tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_import_does_not_load_keras(tmp_path):
    out = _run(
        """
        import sys
        import yolor_keras
        print("keras" in sys.modules, "tensorflow" in sys.modules)
        """,
        tmp_path,
    )
    assert out.split() == ["False", "False"]


def test_classes_register_whichever_is_imported_first(tmp_path):
    path = tmp_path / "implicit.keras"
    _run(
        f"""
        import keras
        from yolor_keras.layers import ImplicitAdd, ImplicitMultiply
        inputs = keras.Input((4, 4, 3))
        outputs = ImplicitMultiply()(ImplicitAdd()(inputs))
        keras.Model(inputs, outputs).save({str(path)!r})
        """,
        tmp_path,
    )
    for first, second in (("yolor_keras", "keras"), ("keras", "yolor_keras")):
        out = _run(
            f"""
            import {first}
            import {second}
            model = keras.saving.load_model({str(path)!r})
            print(sorted(type(layer).__name__ for layer in model.layers))
            """,
            tmp_path,
        )
        assert "ImplicitAdd" in out and "ImplicitMultiply" in out, (first, out)


def test_any_subpackage_imports_first_and_registers_every_class(tmp_path):
    # Keras is first imported from inside these subpackages; registration must
    # wait until they are complete instead of importing their dependants early.
    for subpackage in ("models", "layers", "tasks", "losses", "training", "data", "export"):
        out = _run(
            f"""
            import yolor_keras.{subpackage}
            import keras
            names = keras.saving.get_custom_objects()
            print(all(f"yolor_keras>{{name}}" in names
                      for name in ("ImplicitAdd", "YOLORObjectDetector", "YOLORObjectDetector")))
            """,
            tmp_path,
        )
        assert out.split()[-1] == "True", (subpackage, out)


def test_every_registering_module_is_listed():
    import pathlib

    import yolor_keras

    root = pathlib.Path(yolor_keras.__file__).parent
    registering = {
        ".".join(path.relative_to(root).with_suffix("").parts)
        for path in root.rglob("*.py")
        if "register_keras_serializable" in path.read_text(encoding="utf-8")
    }
    assert registering == set(yolor_keras.SERIALIZABLE_MODULES)


def test_command_line_help_loads_neither_keras_nor_tensorflow(tmp_path):
    out = _run(
        """
        import contextlib, io, sys
        from yolor_keras import cli
        for argv in (["--help"], ["convert", "--help"], ["train", "--help"],
                     ["evaluate", "--help"], ["detect", "--help"], ["export", "--help"],
                     ["serve", "--help"]):
            with contextlib.redirect_stdout(io.StringIO()):
                try:
                    cli.main(argv)
                except SystemExit:
                    pass
        print("keras" in sys.modules, "tensorflow" in sys.modules)
        """,
        tmp_path,
    )
    assert out.split() == ["False", "False"]


def test_no_exported_name_is_also_a_submodule():
    # A submodule import binds its name on the package, which would shadow a
    # lazily exported function of the same name.
    import importlib
    import pathlib

    import yolor_keras

    root = pathlib.Path(yolor_keras.__file__).parent
    for init in root.glob("*/__init__.py"):
        package = importlib.import_module(f"yolor_keras.{init.parent.name}")
        for name in getattr(package, "__all__", ()):
            assert not (init.parent / f"{name}.py").exists(), f"{package.__name__}.{name}"
            assert not (init.parent / name).is_dir(), f"{package.__name__}.{name}"
