"""Training recipes: typed, validated configuration loaded from YAML.

A recipe is data (``recipes/*.yaml``). Its sections map onto dataclasses so
that a misspelt key or a wrong type fails at load time with the file and the
field named, not hours into a run.
"""

import dataclasses
import pathlib

import yaml

from yolor_keras.data.recipe import AugmentationRecipe


@dataclasses.dataclass
class TrainConfig:
    model: str = "yolor_p6"
    image_size: int = 1280
    epochs: int = 300
    batch_size: int = 64
    nominal_batch_size: int = 64
    mixed_precision: bool = False
    eval_interval: int = 1


@dataclasses.dataclass
class OptimizerConfig:
    lr0: float = 0.01
    lrf: float = 0.2
    momentum: float = 0.937
    weight_decay: float = 0.0005
    warmup_epochs: float = 3.0
    warmup_momentum: float = 0.8
    warmup_bias_lr: float = 0.1
    warmup_min_steps: int = 1000
    ema_decay: float = 0.9999


@dataclasses.dataclass
class LossConfig:
    box: float = 0.05
    cls: float = 0.5
    cls_pw: float = 1.0
    obj: float = 1.0
    obj_pw: float = 1.0
    anchor_t: float = 4.0
    fl_gamma: float = 0.0


@dataclasses.dataclass
class Recipe:
    """A full training recipe (defaults: the official hyp.scratch.1280)."""

    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    augment: AugmentationRecipe = dataclasses.field(default_factory=AugmentationRecipe)

    @property
    def hyp(self):
        """All values under the official hyperparameter names, flat."""
        flat = {}
        for section in (self.optimizer, self.loss, self.augment):
            flat.update(dataclasses.asdict(section))
        return flat

    def to_dict(self):
        return dataclasses.asdict(self)

    def override(self, **train_fields):
        """A copy with some `train` fields replaced (None values are ignored)."""
        changes = {k: v for k, v in train_fields.items() if v is not None}
        return dataclasses.replace(self, train=dataclasses.replace(self.train, **changes))


_SECTIONS = {
    "train": TrainConfig,
    "optimizer": OptimizerConfig,
    "loss": LossConfig,
    "augment": AugmentationRecipe,
}


def _coerce(source, section, field, value, expected):
    if expected is bool:
        if isinstance(value, bool):
            return value
    elif expected is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif expected is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif expected is str:
        if isinstance(value, str):
            return value
    raise ValueError(
        f"{source}: `{section}.{field}` must be {expected.__name__}, got {value!r}."
    )


def recipe_from_dict(data, source="<recipe>"):
    """Builds a validated `Recipe` from a nested dict."""
    if not isinstance(data, dict):
        raise ValueError(f"{source}: a recipe is a mapping of sections, got {type(data).__name__}.")
    unknown = set(data) - set(_SECTIONS)
    if unknown:
        raise ValueError(
            f"{source}: unknown section(s) {sorted(unknown)}; expected {sorted(_SECTIONS)}."
        )
    sections = {}
    for name, cls in _SECTIONS.items():
        values = data.get(name) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{source}: section `{name}` must be a mapping.")
        fields = {f.name: f.type for f in dataclasses.fields(cls)}
        unknown = set(values) - set(fields)
        if unknown:
            raise ValueError(
                f"{source}: unknown key(s) {sorted(unknown)} in section `{name}`; "
                f"known keys: {sorted(fields)}."
            )
        types = {"int": int, "float": float, "bool": bool, "str": str}
        try:
            sections[name] = cls(
                **{
                    key: _coerce(source, name, key, value, types.get(fields[key], fields[key]))
                    for key, value in values.items()
                }
            )
        except (TypeError, ValueError) as error:
            raise ValueError(f"{source}: section `{name}`: {error}") from None
    recipe = Recipe(**sections)
    _validate(recipe, source)
    return recipe


def _validate(recipe, source):
    checks = [
        (recipe.train.epochs >= 1, "train.epochs must be >= 1"),
        (recipe.train.batch_size >= 1, "train.batch_size must be >= 1"),
        (recipe.train.image_size % 32 == 0, "train.image_size must be a multiple of 32"),
        (recipe.optimizer.lr0 > 0, "optimizer.lr0 must be > 0"),
        (0 < recipe.optimizer.lrf <= 1, "optimizer.lrf must be in (0, 1]"),
        (recipe.loss.anchor_t > 1, "loss.anchor_t must be > 1"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(f"{source}: {message}.")


def read_recipe_yaml(path):
    """The parsed mapping of a recipe YAML file, with errors naming the file."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Recipe file not found: {path}")
    with open(path, encoding="utf-8") as handle:
        try:
            data = yaml.safe_load(handle)
        except yaml.YAMLError as error:
            raise ValueError(f"{path}: not valid YAML: {error}") from None
    return data or {}


def load_recipe(path):
    """Loads and validates a recipe YAML file."""
    return recipe_from_dict(read_recipe_yaml(path), source=str(path))
