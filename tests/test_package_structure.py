"""The package's shape: no import cycle between its parts, no private name used across files."""

import ast
import pathlib

import yolor_keras

PACKAGE = pathlib.Path(yolor_keras.__file__).parent


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), ast.parse(path.read_text(encoding="utf-8"), str(path))


def _part(module):
    """The top-level part a module belongs to: a subpackage or a root module."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "yolor_keras"


def _imports(tree):
    """(imported module, imported names) of every ``yolor_keras`` import, at any depth."""
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.startswith("yolor_keras")
        ):
            yield node.module, [alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("yolor_keras"):
                    yield alias.name, []


def _part_graph():
    graph = {}
    for module, tree in _modules():
        source = _part(module)
        for imported, _ in _imports(tree):
            target = _part(imported)
            if target != source and target != "yolor_keras":
                graph.setdefault(source, set()).add(target)
    return graph


def _find_cycle(graph):
    state = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return path + [node, nxt]
            if nxt not in state:
                found = visit(nxt, path + [node])
                if found:
                    return found
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node, [])
            if found:
                return found
    return None


def test_the_package_parts_import_each_other_without_a_cycle():
    graph = _part_graph()
    assert _find_cycle(graph) is None, f"import cycle: {' -> '.join(_find_cycle(graph))}"
    # The task sits below training, evaluation, inference and export.
    assert not graph.get("tasks", set()) & {"training", "evaluation", "inference", "export"}


def test_the_cycle_check_finds_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": {"c"}}) is None


def test_no_private_name_is_imported_across_files():
    private = [
        f"{module}: from {imported} import {name}"
        for module, tree in _modules()
        for imported, names in _imports(tree)
        for name in names
        if name.startswith("_") and not name.startswith("__")
    ]
    assert private == []


def test_every_keras_layer_lives_in_layers():
    misplaced = []
    for module, tree in _modules():
        if module.startswith("yolor_keras.layers"):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                bases = {ast.unparse(base) for base in node.bases}
                if bases & {"keras.layers.Layer", "Layer", "layers.Layer"}:
                    misplaced.append(f"{module}.{node.name}")
    assert misplaced == []
