"""Reading official YOLOR checkpoints (either branch) without the official code."""

import dataclasses
import os
import pickle
import zipfile

from yolor_keras.convert import restricted_pickle


@dataclasses.dataclass
class OfficialCheckpoint:
    """What a converter needs from an official ``.pt`` file.

    Args:
        path: the file read.
        branch: ``"main"`` (a darknet state_dict) or ``"paper"`` (a pickled
            YAML model that carries its architecture).
        state_dict: official parameter and buffer names -> NumPy arrays, in
            the official order; floating tensors as float32.
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


def _torch():
    try:
        import torch
    except ImportError:
        raise ImportError(
            "Reading PyTorch checkpoints needs torch: pip install 'yolor-keras[convert]' "
            "(or any recent torch)."
        ) from None
    return torch


def _to_numpy(tensor):
    tensor = tensor.detach().cpu()
    if tensor.is_floating_point():
        tensor = tensor.float()  # half-precision checkpoints load as float32
    return tensor.numpy()


def module_state_dict(module, prefix=""):
    """Rebuilds ``module.state_dict()`` from a pickled (stand-in) module.

    Follows PyTorch's order: the module's non-None parameters, then its
    persistent buffers, then each child module, names joined with dots.
    """
    attributes = vars(module)
    state = {}
    for name, value in (attributes.get("_parameters") or {}).items():
        if value is not None:
            state[prefix + name] = value
    non_persistent = attributes.get("_non_persistent_buffers_set") or set()
    for name, value in (attributes.get("_buffers") or {}).items():
        if value is not None and name not in non_persistent:
            state[prefix + name] = value
    for name, child in (attributes.get("_modules") or {}).items():
        if child is not None:
            state.update(module_state_dict(child, f"{prefix}{name}."))
    return state


def _batchnorm_epsilons(module, found=None):
    found = set() if found is None else found
    if "BatchNorm" in getattr(module, "class_path", "") and "eps" in vars(module):
        found.add(float(vars(module)["eps"]))
    for child in (vars(module).get("_modules") or {}).values():
        if child is not None:
            _batchnorm_epsilons(child, found)
    return found


def _is_tensor_mapping(value):
    torch = _torch()
    return (
        isinstance(value, dict)
        and value
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())
    )


def read_checkpoint(path):
    """Reads an official YOLOR checkpoint safely (see `restricted_pickle`).

    Args:
        path: a ``.pt`` file written by the official ``train.py`` (a dict
            with ``model``), or a bare state_dict.

    Returns:
        An `OfficialCheckpoint`.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the file is not a readable YOLOR checkpoint, or holds
            objects a checkpoint should not contain.
    """
    torch = _torch()
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Checkpoint '{path}' does not exist.")
    try:
        content = torch.load(
            path, map_location="cpu", weights_only=False, pickle_module=restricted_pickle
        )
    except restricted_pickle.ForbiddenGlobalError as error:
        raise ValueError(f"'{path}' cannot be loaded safely: {error}") from None
    except (
        pickle.UnpicklingError,
        RuntimeError,
        EOFError,
        zipfile.BadZipFile,
        UnicodeDecodeError,
        ValueError,
    ) as error:
        raise ValueError(
            f"'{path}' is not a PyTorch checkpoint ({type(error).__name__}: {error})."
        ) from None

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
        state = module_state_dict(model)
        yaml = vars(model).get("yaml")
        branch = "paper" if isinstance(yaml, dict) else "main"
        epsilons = tuple(sorted(_batchnorm_epsilons(model)))
    else:
        keys = sorted(content)[:10] if isinstance(content, dict) else None
        raise ValueError(
            f"'{path}' is not a YOLOR checkpoint: expected a dict with a 'model' entry (a "
            f"state_dict or a pickled model), got {type(content).__name__}"
            + (f" with keys {keys}" if keys is not None else "")
            + "."
        )
    if not state:
        raise ValueError(f"'{path}' holds a model without any parameters.")
    arrays = {}
    for name, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"'{path}': entry '{name}' is a {type(value).__name__}, not a tensor.")
        arrays[name] = _to_numpy(value)
    return OfficialCheckpoint(
        path=path,
        branch=branch,
        state_dict=arrays,
        yaml=yaml,
        batchnorm_epsilons=epsilons,
    )
