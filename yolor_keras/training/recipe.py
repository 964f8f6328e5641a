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


STAGE_KINDS = ("train", "tune")


@dataclasses.dataclass(frozen=True)
class StagePlan:
    """One stage of a multi-stage training schedule (`load_stage_plan`).

    Args:
        name: the stage's name in the plan.
        stage: "train" (4-image mosaic) or "tune" (9-image mosaic).
        recipe: the recipe YAML path, resolved against the plan's folder.
        epochs: the stage's total epochs, counted from epoch 0.
        out: the stage's run directory.
        model, image_size, batch_size: `train` overrides shared by the plan.
        continue_from: the checkpoint folder the stage continues, or None.
        save_epochs: 0-based epochs whose checkpoints the stage keeps.
    """

    name: str
    stage: str
    recipe: str
    epochs: int
    out: str
    model: str
    image_size: int
    batch_size: int
    continue_from: str = None
    save_epochs: tuple = ()

    def command(self, data):
        """The `yolor train` arguments that run this stage on ``data``."""
        args = [
            "train", "--data", str(data), "--recipe", self.recipe, "--model", self.model,
            "--image-size", str(self.image_size), "--batch-size", str(self.batch_size),
            "--epochs", str(self.epochs), "--stage", self.stage, "--out", self.out,
        ]
        if self.continue_from:
            args += ["--continue-from", self.continue_from]
        if self.save_epochs:
            args += ["--save-epochs", ",".join(str(epoch) for epoch in self.save_epochs)]
        return args


def load_stage_plan(path):
    """Reads a multi-stage schedule (e.g. ``recipes/paper_p6.yaml``), validated.

    Each stage names its recipe file, kind, total epochs and run directory,
    and which earlier stage's kept checkpoint (by 0-based epoch) it
    continues from; that epoch must be in the earlier stage's
    ``save_epochs``, so the earlier stage keeps it.

    Returns:
        A list of `StagePlan`, in order.
    """
    path = pathlib.Path(path)
    data = read_recipe_yaml(path)
    source = str(path)
    top = {"model", "image_size", "batch_size", "stages"}
    unknown = set(data) - top
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {sorted(unknown)}; expected {sorted(top)}.")
    shared = {}
    for key, kind in (("model", str), ("image_size", int), ("batch_size", int)):
        value = data.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ValueError(f"{source}: `{key}` must be {kind.__name__}, got {value!r}.")
        shared[key] = value
    stages = data.get("stages")
    if not isinstance(stages, list) or not stages:
        raise ValueError(f"{source}: `stages` must be a non-empty list.")
    keys = {"name", "stage", "recipe", "epochs", "out", "continue_from", "save_epochs"}
    plans = {}
    for index, stage in enumerate(stages):
        where = f"{source}: stages[{index}]"
        if not isinstance(stage, dict):
            raise ValueError(f"{where} must be a mapping.")
        unknown = set(stage) - keys
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; known keys: {sorted(keys)}.")
        name = stage.get("name")
        if not isinstance(name, str) or name in plans:
            raise ValueError(f"{where}: `name` must be a new string, got {name!r}.")
        if stage.get("stage") not in STAGE_KINDS:
            raise ValueError(f"{where}: `stage` must be one of {STAGE_KINDS}, got {stage.get('stage')!r}.")
        epochs = stage.get("epochs")
        if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
            raise ValueError(f"{where}: `epochs` must be an integer >= 1, got {epochs!r}.")
        for key in ("recipe", "out"):
            if not isinstance(stage.get(key), str):
                raise ValueError(f"{where}: `{key}` must be a string path, got {stage.get(key)!r}.")
        recipe = path.parent / stage["recipe"]
        if not recipe.is_file():
            raise ValueError(f"{where}: recipe file not found: {recipe}.")
        save_epochs = stage.get("save_epochs", [])
        if not isinstance(save_epochs, list) or not all(
            isinstance(e, int) and not isinstance(e, bool) and 0 <= e < epochs for e in save_epochs
        ):
            raise ValueError(f"{where}: `save_epochs` must list epochs in [0, {epochs}), got {save_epochs!r}.")
        continue_from = None
        origin = stage.get("continue_from")
        if origin is not None:
            if not isinstance(origin, dict) or set(origin) != {"stage", "epoch"}:
                raise ValueError(f"{where}: `continue_from` must be {{stage: NAME, epoch: N}}, got {origin!r}.")
            earlier = plans.get(origin["stage"])
            if earlier is None:
                raise ValueError(f"{where}: `continue_from` names {origin['stage']!r}, not an earlier stage.")
            if origin["epoch"] not in earlier.save_epochs:
                raise ValueError(
                    f"{where}: continues from epoch {origin['epoch']} of {earlier.name!r}, which "
                    f"keeps only {list(earlier.save_epochs)} (add it to its save_epochs)."
                )
            if origin["epoch"] + 1 >= epochs:
                raise ValueError(f"{where}: epochs {epochs} leaves nothing to train after epoch {origin['epoch']}.")
            continue_from = f"{earlier.out}/checkpoints/epoch_{origin['epoch']:03d}"
        plans[name] = StagePlan(
            name=name, stage=stage["stage"], recipe=str(recipe), epochs=epochs, out=stage["out"],
            continue_from=continue_from, save_epochs=tuple(save_epochs), **shared,
        )
    return list(plans.values())
