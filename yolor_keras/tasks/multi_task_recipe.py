"""Multi-task recipes: typed, validated configuration loaded from YAML.

A recipe (``recipes/multi_task_synthetic.yaml``) says which heads the model
has and how each one models implicit knowledge, the per-task loss weights,
the training budget and the synthetic data. The ``optimizer`` section is the
detection recipe's (`yolor_keras.training.recipe.OptimizerConfig`). A
misspelt key or a wrong type fails at load time, naming the file and field.

The ``heads`` section lists the enabled heads; each maps to its implicit
setting: a form (``vector``, ``network``, ``factorization``), ``none`` (no
implicit knowledge), or ``{add: FORM, multiply: FORM}``.
"""

import dataclasses

from yolor_keras.models import get_preset
from yolor_keras.models import make_plan
from yolor_keras.tasks.multi_task_config import HEADS
from yolor_keras.tasks.multi_task_config import normalize_heads
from yolor_keras.tasks.multi_task_config import normalize_implicit
from yolor_keras.tasks.multi_task_config import normalize_loss_weights
from yolor_keras.training.recipe import OptimizerConfig
from yolor_keras.training.recipe import read_recipe_yaml


@dataclasses.dataclass
class MultiTaskModelConfig:
    preset: str = "yolor_p6"
    width_multiplier: float = 0.125
    depth_multiplier: float = 0.33
    image_size: int = 128
    head_width: int = 128
    embedding_dim: int = 64


@dataclasses.dataclass
class MultiTaskLossConfig:
    box: float = 0.05
    obj: float = 1.0
    cls: float = 0.5
    anchor_t: float = 4.0
    label_pos_weight: float = 1.0
    temperature: float = 0.1
    weights: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class MultiTaskTrainConfig:
    epochs: int = 12
    batch_size: int = 16
    nominal_batch_size: int = 16
    flip: bool = True
    seed: int = 0


@dataclasses.dataclass
class SyntheticDataConfig:
    """Arguments of `yolor_keras.data.synthetic.generate_dataset`."""

    num_train: int = 400
    num_val: int = 100
    image_size: int = 256
    seed: int = 0


def _default_heads():
    return {head: "vector" for head in HEADS}


@dataclasses.dataclass
class MultiTaskRecipe:
    """A multi-task training recipe; ``heads`` maps enabled heads to implicit settings."""

    model: MultiTaskModelConfig = dataclasses.field(default_factory=MultiTaskModelConfig)
    heads: dict = dataclasses.field(default_factory=_default_heads)
    loss: MultiTaskLossConfig = dataclasses.field(default_factory=MultiTaskLossConfig)
    train: MultiTaskTrainConfig = dataclasses.field(default_factory=MultiTaskTrainConfig)
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    data: SyntheticDataConfig = dataclasses.field(default_factory=SyntheticDataConfig)

    @property
    def implicit(self):
        """The normalised ``{head: {"add": form, "multiply": form}}``."""
        return normalize_implicit(self.heads, list(self.heads))

    def with_heads(self, heads):
        """A copy with another ``heads`` mapping (checked like a loaded one)."""
        recipe = dataclasses.replace(self, heads=dict(heads))
        _check_heads(recipe.heads, "<with_heads>")
        return recipe

    def build_model(self, num_classes, loss_scale=1.0, class_names=None):
        """The `YOLORMultiTask` this recipe describes, randomly initialised.

        Args:
            num_classes: object classes (and classification labels).
            loss_scale: multiplier of the mean loss (the nominal batch).
            class_names: optional class names kept with the model.
        """
        from yolor_keras.tasks.yolor_multi_task import YOLORMultiTask

        model = self.model
        loss = self.loss
        return YOLORMultiTask.from_preset(
            model.preset,
            num_classes=num_classes,
            embedding_dim=model.embedding_dim,
            heads=list(self.heads),
            implicit=self.implicit,
            head_width=model.head_width,
            width_multiplier=model.width_multiplier,
            depth_multiplier=model.depth_multiplier,
            loss_weights={head: loss.weights.get(head, 1.0) for head in self.heads},
            box_gain=loss.box,
            obj_gain=loss.obj,
            cls_gain=loss.cls,
            anchor_t=loss.anchor_t,
            label_pos_weight=loss.label_pos_weight,
            temperature=loss.temperature,
            loss_scale=loss_scale,
            class_names=class_names,
        )

    def to_dict(self):
        return dataclasses.asdict(self)


_SECTIONS = {
    "model": MultiTaskModelConfig,
    "loss": MultiTaskLossConfig,
    "train": MultiTaskTrainConfig,
    "optimizer": OptimizerConfig,
    "data": SyntheticDataConfig,
}
_TYPES = {"int": int, "float": float, "bool": bool, "str": str, "dict": dict}


def _typed(source, where, value, expected):
    if expected is bool and isinstance(value, bool):
        return value
    if expected is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if expected is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if expected in (str, dict) and isinstance(value, expected):
        return value
    raise ValueError(f"{source}: `{where}` must be {expected.__name__}, got {value!r}.")


def _section(source, name, cls, values):
    if not isinstance(values, dict):
        raise ValueError(f"{source}: section `{name}` must be a mapping.")
    fields = {field.name: field.type for field in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(
            f"{source}: unknown key(s) {unknown} in section `{name}`; known keys: {sorted(fields)}."
        )
    kwargs = {}
    for key, value in values.items():
        expected = fields[key]
        expected = _TYPES.get(expected, expected) if isinstance(expected, str) else expected
        kwargs[key] = _typed(source, f"{name}.{key}", value, expected)
    return cls(**kwargs)


def _check_heads(heads, source):
    if not isinstance(heads, dict) or not heads:
        raise ValueError(
            f"{source}: section `heads` must map at least one of {list(HEADS)} to its "
            "implicit setting."
        )
    try:
        normalize_implicit(heads, normalize_heads(list(heads)))
    except ValueError as error:
        raise ValueError(f"{source}: section `heads`: {error}") from None


def multi_task_recipe_from_dict(data, source="<recipe>"):
    """Builds a validated `MultiTaskRecipe` from a nested dict."""
    if not isinstance(data, dict):
        raise ValueError(f"{source}: a recipe is a mapping of sections, got {type(data).__name__}.")
    unknown = sorted(set(data) - set(_SECTIONS) - {"heads"})
    if unknown:
        raise ValueError(
            f"{source}: unknown section(s) {unknown}; expected {sorted([*_SECTIONS, 'heads'])}."
        )
    sections = {
        name: _section(source, name, cls, data.get(name) or {}) for name, cls in _SECTIONS.items()
    }
    heads = data.get("heads", _default_heads())
    _check_heads(heads, source)
    recipe = MultiTaskRecipe(heads=dict(heads), **sections)
    _validate(recipe, source)
    return recipe


def _validate(recipe, source):
    try:
        normalize_loss_weights(recipe.loss.weights, HEADS)
    except ValueError as error:
        raise ValueError(f"{source}: loss.weights: {error}") from None
    try:
        architecture = get_preset(recipe.model.preset)["architecture"]
    except ValueError as error:
        raise ValueError(f"{source}: model.preset: {error}") from None
    checks = [
        (recipe.model.width_multiplier > 0, "model.width_multiplier must be > 0"),
        (recipe.model.depth_multiplier > 0, "model.depth_multiplier must be > 0"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(f"{source}: {message}.")
    stride = make_plan(architecture).max_stride
    checks = [
        (
            recipe.model.image_size % stride == 0,
            f"model.image_size must be a multiple of {stride}, the largest stride of "
            f"{recipe.model.preset}",
        ),
        (recipe.train.epochs >= 1, "train.epochs must be >= 1"),
        (recipe.train.batch_size >= 2, "train.batch_size must be >= 2 (in-batch negatives)"),
        (recipe.loss.temperature > 0, "loss.temperature must be > 0"),
        (recipe.optimizer.lr0 > 0, "optimizer.lr0 must be > 0"),
        (
            recipe.data.num_train >= recipe.train.batch_size,
            "data.num_train must be >= train.batch_size",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(f"{source}: {message}.")


def load_multi_task_recipe(path):
    """Loads and validates a multi-task recipe YAML file."""
    return multi_task_recipe_from_dict(read_recipe_yaml(path), source=str(path))
