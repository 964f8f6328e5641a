"""Reading official YOLOR checkpoints (either branch) without the official code."""

import dataclasses
import os

from yolor_keras.convert import archive
from yolor_keras.convert import restricted_pickle
from yolor_keras.convert import tensors
from yolor_keras.convert.tensors import Refused


@dataclasses.dataclass
class OfficialCheckpoint:
    """What a converter needs from an official ``.pt`` file.

    Args:
        path: the file read.
        branch: ``"main"`` (a darknet state_dict) or ``"paper"`` (a pickled
            YAML model that carries its architecture).
        state_dict: official parameter and buffer names -> NumPy arrays, in
            the official order; floating tensors as float32. Entries that
            view one storage share its memory, as they do in torch.
        yaml: the paper model's architecture dict (``nc``, multiples,
            ``anchors``, ``backbone``, ``head``), else None.
        batchnorm_epsilons: the distinct BatchNorm eps values stored in a
            pickled model (empty for a bare state_dict, which has none).
    """

    path: str
    branch: str
    state_dict: dict
    yaml: dict = None
    batchnorm_epsilons: tuple = ()


# Walking a pickled model: far more modules than any YOLOR (P6 has ~700).
MAX_MODULES = 100_000
MAX_ENTRIES = 1_000_000
# A yaml architecture is a few hundred values.
MAX_YAML_VALUES = 100_000
MAX_YAML_DEPTH = 32


def _name(prefix):
    return f"'{prefix[:-1]:.200}'" if prefix else "the model itself"


def _walk_modules(root):
    """Rebuilds ``module.state_dict()`` and the BatchNorm eps values of a pickled model.

    Follows PyTorch's order: a module's non-None parameters, then its
    persistent buffers, then each child module, names joined with dots. The
    walk keeps an explicit stack and remembers every module it visits: a
    module reached twice (shared by two parents, or inside itself) is
    refused, so neither a loop nor a lattice of shared children (2**40
    paths through 41 objects) makes it run away.

    Returns:
        (state, epsilons): official names -> tensors, and the set of eps.
    """
    state = {}
    epsilons = set()
    seen = {}
    stack = [("", root)]
    while stack:
        prefix, module = stack.pop()
        if id(module) in seen:
            raise Refused(
                f"has module {_name(prefix)} also reached as {seen[id(module)]}: modules that "
                "are shared or contain themselves are not a YOLOR model."
            )
        seen[id(module)] = _name(prefix)
        if len(seen) > MAX_MODULES:
            raise Refused(f"holds more than {MAX_MODULES:,} modules.")
        attributes = vars(module)
        if "BatchNorm" in type(module).class_path and "eps" in attributes:
            eps = attributes["eps"]
            if type(eps) not in (int, float):
                raise Refused(f"has BatchNorm {_name(prefix)} with eps {eps!r:.50}.")
            epsilons.add(float(eps))
        non_persistent = attributes.get("_non_persistent_buffers_set") or set()
        for field in ("_parameters", "_buffers"):
            values = attributes.get(field) or {}
            if not isinstance(values, dict):
                raise Refused(f"has module {_name(prefix)} whose {field} is not a dict.")
            for name, value in values.items():
                if value is None or (field == "_buffers" and name in non_persistent):
                    continue
                state[f"{prefix}{name}"] = value
        if len(state) > MAX_ENTRIES:
            raise Refused(f"holds more than {MAX_ENTRIES:,} parameters and buffers.")
        children = attributes.get("_modules") or {}
        if not isinstance(children, dict):
            raise Refused(f"has module {_name(prefix)} whose _modules is not a dict.")
        for name, child in reversed(list(children.items())):
            if child is None:
                continue
            if not isinstance(child, restricted_pickle.StandIn):
                raise Refused(
                    f"has a child module '{prefix}{name:.100}' that is a {type(child).__name__}."
                )
            stack.append((f"{prefix}{name}.", child))
    return state, epsilons


def module_state_dict(module):
    """``module.state_dict()`` of a pickled (stand-in) module, as `tensors.Tensor` views."""
    return _walk_modules(module)[0]


def _plain_yaml(value):
    """A copy of a model's yaml made only of plain values (refusing anything else).

    The copy visits at most `MAX_YAML_VALUES` values, so lists that share
    lists cannot make it (or the architecture checks after it) explode.
    """
    budget = [MAX_YAML_VALUES]

    def copy(item, depth):
        budget[0] -= 1
        if budget[0] < 0 or depth > MAX_YAML_DEPTH:
            raise Refused(
                f"has a model yaml of more than {MAX_YAML_VALUES:,} values or "
                f"{MAX_YAML_DEPTH} levels."
            )
        if item is None or type(item) in (bool, int, float, str):
            return item
        if type(item) in (list, tuple):
            return type(item)(copy(x, depth + 1) for x in item)
        if isinstance(item, dict):
            if not all(type(key) in (str, int) for key in item):
                raise Refused("has a model yaml with keys that are not names.")
            return {key: copy(x, depth + 1) for key, x in item.items()}
        raise Refused(f"has a model yaml holding a {type(item).__name__}, not plain data.")

    return copy(value, 0)


def _is_tensor_mapping(value):
    return (
        isinstance(value, dict)
        and value
        and all(isinstance(k, str) and isinstance(v, tensors.Tensor) for k, v in value.items())
    )


def read_checkpoint(path):
    """Reads an official YOLOR checkpoint safely.

    The file is opened as a zip archive and checked (`archive`) before a
    byte is unpickled, unpickled with `restricted_pickle`, and its tensors
    are converted from the raw records with NumPy: neither torch nor any
    code the file carries runs, and memory stays within a small multiple
    of the file's size. torch is not needed.

    Args:
        path: a ``.pt`` file written by the official ``train.py`` (a dict
            with ``model``), or a bare state_dict.

    Returns:
        An `OfficialCheckpoint`.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: naming the file, for anything else that goes wrong while
            reading it: not a plain ``torch.save`` zip archive (TorchScript,
            compressed or overlapping records, torch's legacy format),
            objects a checkpoint should not contain, tensors that do not fit
            their records or expand them, modules that are shared or contain
            themselves, or not a YOLOR checkpoint.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Checkpoint '{path}' does not exist.")
    try:
        with archive.Archive(path) as opened:
            return _read(path, opened)
    except Refused as error:
        raise ValueError(f"'{path}' {error}") from None
    except restricted_pickle.ForbiddenGlobalError as error:
        raise ValueError(f"'{path}' cannot be loaded safely: {error}") from None
    except Exception as error:
        # Whatever else a damaged or hostile file provokes (a bad pickle
        # opcode, an error inside a stand-in's state, MemoryError): one
        # message naming the file, which the command line prints as is.
        detail = str(error)
        detail = detail if len(detail) <= 300 else detail[:300] + "..."
        raise ValueError(
            f"'{path}' is not a PyTorch checkpoint that can be read ({type(error).__name__}: "
            f"{detail})."
        ) from None


def _read(path, opened):
    content = opened.load()
    if isinstance(content, dict) and "model" in content:
        model = content["model"]
        if model is None and content.get("ema") is not None:
            model = content["ema"]
    else:
        model = content
    if _is_tensor_mapping(model):
        state = dict(model)
        branch, yaml, epsilons = "main", None, ()
    elif isinstance(model, restricted_pickle.StandIn):
        state, found = _walk_modules(model)
        yaml = vars(model).get("yaml")
        branch = "paper" if isinstance(yaml, dict) else "main"
        yaml = _plain_yaml(yaml) if branch == "paper" else None
        epsilons = tuple(sorted(found))
    else:
        keys = None
        if isinstance(content, dict):
            keys = sorted(k for k in content if isinstance(k, str))[:10]
        raise Refused(
            "is not a YOLOR checkpoint: expected a dict with a 'model' entry (a "
            f"state_dict or a pickled model), got {type(content).__name__}"
            + (f" with keys {keys}" if keys is not None else "")
            + "."
        )
    if not state:
        raise Refused("holds a model without any parameters.")
    arrays = {}
    for name, value in state.items():
        if not isinstance(value, tensors.Tensor):
            raise Refused(
                f"has entry '{name:.200}' that is a {type(value).__name__}, not a tensor."
            )
        arrays[name] = value.numpy(name)
    return OfficialCheckpoint(
        path=path,
        branch=branch,
        state_dict=arrays,
        yaml=yaml,
        batchnorm_epsilons=epsilons,
    )
