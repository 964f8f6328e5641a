"""Training recipes: typed, validated configuration loaded from YAML.

A recipe is data (``recipes/*.yaml``). Each section maps onto a dataclass
through one helper, `dataclass_from_dict`, so that a misspelt key or a wrong
type fails at load time with the file, the section and the field named, not
hours into a run.

Sections:

- ``train``: the preset, image size, epochs, batch sizes, precision and
  evaluation interval;
- ``model``: the backbone scaling and the task's heads: which heads, the
  implicit knowledge of each (a form ``vector`` / ``network`` /
  ``factorization``, ``none``, or ``{add: FORM, multiply: FORM}``), its
  loss weight and its own settings;
- ``optimizer``, ``loss``, ``augment``: the official hyperparameters, under
  the official hyp-file names.

`loss_settings` turns a recipe into the loss arguments of
`YOLORObjectDetector.compile`, and `build_heads` into the task's heads.
"""

import dataclasses
import pathlib
import typing

import yaml

from yolor_keras.data.recipe import AugmentationRecipe
from yolor_keras.models.heads import normalize_implicit


def _implicit_field(default="vector"):
    # A form, none, or {add, multiply}: checked by the heads' own rule.
    return dataclasses.field(default=default, metadata={"parse": _parse_implicit})


def _parse_implicit(value, where):
    normalize_implicit(value, where)
    return dict(value) if isinstance(value, dict) else value


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
class DetectionHeadConfig:
    implicit: typing.Any = _implicit_field()
    loss_weight: float = 1.0


@dataclasses.dataclass
class ClassificationHeadConfig:
    """Multi-label classification of the classes present in an image."""

    implicit: typing.Any = _implicit_field()
    loss_weight: float = 1.0
    hidden_units: int = 256
    pos_weight: float = 1.0  # BCE weight of present labels


@dataclasses.dataclass
class EmbeddingHeadConfig:
    """An identity embedding trained with the supervised contrastive loss."""

    implicit: typing.Any = _implicit_field()
    loss_weight: float = 1.0
    hidden_units: int = 256
    embedding_dim: int = 128
    temperature: float = 0.1


HEAD_CONFIGS = {
    "detection": DetectionHeadConfig,
    "classification": ClassificationHeadConfig,
    "embedding": EmbeddingHeadConfig,
}


def _parse_heads(value, where):
    if not isinstance(value, dict) or not value:
        raise ValueError(
            f"`{where}` must map at least one of {list(HEAD_CONFIGS)} to its settings."
        )
    unknown = sorted(set(value) - set(HEAD_CONFIGS))
    if unknown:
        raise ValueError(
            f"`{where}`: unknown head(s) {unknown}; choose among {list(HEAD_CONFIGS)}."
        )
    heads = {}
    for name in HEAD_CONFIGS:  # canonical order
        if name in value:
            settings = value[name]
            # `detection: vector` is short for `detection: {implicit: vector}`.
            if settings is None or isinstance(settings, str):
                settings = {"implicit": settings}
            heads[name] = dataclass_from_dict(HEAD_CONFIGS[name], settings, f"{where}.{name}")
    return heads


@dataclasses.dataclass
class ModelConfig:
    width_multiplier: float = 1.0
    depth_multiplier: float = 1.0
    heads: dict = dataclasses.field(
        default_factory=lambda: {"detection": DetectionHeadConfig()},
        metadata={"parse": _parse_heads},
    )


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
    """A full training recipe (defaults: the official hyp.scratch.1280, one detection head)."""

    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
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

    @property
    def head_names(self):
        """The task's heads, in canonical order."""
        return tuple(self.model.heads)

    @property
    def accumulate(self):
        """Batches whose gradients add up to one step (official ``round(nbs / bs)``)."""
        return max(round(self.train.nominal_batch_size / self.train.batch_size), 1)

    def to_dict(self):
        return dataclasses.asdict(self)

    def override(self, **train_fields):
        """A copy with some `train` fields replaced (None values are ignored)."""
        changes = {k: v for k, v in train_fields.items() if v is not None}
        return dataclasses.replace(self, train=dataclasses.replace(self.train, **changes))

    def with_heads(self, heads):
        """A copy with another ``model.heads`` mapping, checked like a loaded one."""
        parsed = _parse_heads(heads, "model.heads")
        return dataclasses.replace(self, model=dataclasses.replace(self.model, heads=parsed))


SECTIONS = {
    "train": TrainConfig,
    "model": ModelConfig,
    "optimizer": OptimizerConfig,
    "loss": LossConfig,
    "augment": AugmentationRecipe,
}
_TYPES = {"int": int, "float": float, "bool": bool, "str": str, "dict": dict}


def _typed(value, expected, where):
    """``value`` as the type a field declares, or a ValueError naming the field."""
    if expected is bool and isinstance(value, bool):
        return value
    # bool is an int to Python, never to a recipe.
    if expected is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if expected is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if expected in (str, dict) and isinstance(value, expected):
        return value
    raise ValueError(f"`{where}` must be {expected.__name__}, got {value!r}.")


def dataclass_from_dict(cls, values, where):
    """Builds the dataclass ``cls`` from a mapping, every field checked.

    A field's annotation (int, float, bool, str, dict) is its type; a field
    whose metadata has ``"parse"`` is read by that function instead (called
    with the value and the field's dotted name). Errors are ValueErrors that
    name the field by its dotted path (``where.field``); the caller adds the
    file.

    Args:
        cls: a dataclass.
        values: the mapping read from YAML (None: all defaults).
        where: the dotted name of the section, e.g. ``"optimizer"``.
    """
    values = {} if values is None else values
    if not isinstance(values, dict):
        raise ValueError(f"section `{where}` must be a mapping, got {type(values).__name__}.")
    fields = {field.name: field for field in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(
            f"unknown key(s) {unknown} in section `{where}`; known keys: {sorted(fields)}."
        )
    kwargs = {}
    for key, value in values.items():
        field = fields[key]
        parse = field.metadata.get("parse")
        if parse is not None:
            kwargs[key] = parse(value, f"{where}.{key}")
            continue
        expected = _TYPES.get(field.type, field.type) if isinstance(field.type, str) else field.type
        kwargs[key] = _typed(value, expected, f"{where}.{key}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as error:
        # The dataclass's own checks (e.g. an augmentation probability > 1).
        raise ValueError(f"section `{where}`: {error}") from None


def recipe_from_dict(data, source="<recipe>"):
    """Builds a validated `Recipe` from a nested dict; errors name ``source``."""
    if not isinstance(data, dict):
        raise ValueError(f"{source}: a recipe is a mapping of sections, got {type(data).__name__}.")
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ValueError(f"{source}: unknown section(s) {unknown}; expected {sorted(SECTIONS)}.")
    try:
        sections = {
            name: dataclass_from_dict(cls, data.get(name), name) for name, cls in SECTIONS.items()
        }
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from None
    recipe = Recipe(**sections)
    validate_recipe(recipe, source)
    return recipe


def largest_stride(preset):
    """The largest stride of a preset's architecture (64 for the P6 family, 32 for CSP)."""
    from yolor_keras.models import get_preset
    from yolor_keras.models import make_plan

    return int(make_plan(get_preset(preset)["architecture"]).max_stride)


def validate_recipe(recipe, source="<recipe>"):
    """Checks the values of a recipe that no single field can check alone."""
    try:
        stride = largest_stride(recipe.train.model)
    except ValueError as error:
        raise ValueError(f"{source}: train.model: {error}") from None
    train, model = recipe.train, recipe.model
    checks = [
        (train.epochs >= 1, "train.epochs must be >= 1"),
        (train.batch_size >= 1, "train.batch_size must be >= 1"),
        (train.nominal_batch_size >= 1, "train.nominal_batch_size must be >= 1"),
        (train.eval_interval >= 1, "train.eval_interval must be >= 1"),
        (
            train.image_size >= stride and train.image_size % stride == 0,
            f"train.image_size {train.image_size} must be a multiple of {stride}, the largest "
            f"stride of {train.model}",
        ),
        (model.width_multiplier > 0, "model.width_multiplier must be > 0"),
        (model.depth_multiplier > 0, "model.depth_multiplier must be > 0"),
        (recipe.optimizer.lr0 > 0, "optimizer.lr0 must be > 0"),
        (0 < recipe.optimizer.lrf <= 1, "optimizer.lrf must be in (0, 1]"),
        (recipe.loss.anchor_t > 1, "loss.anchor_t must be > 1"),
    ]
    for name, head in model.heads.items():
        checks.append((head.loss_weight >= 0, f"model.heads.{name}.loss_weight must be >= 0"))
    embedding = model.heads.get("embedding")
    if embedding is not None:
        checks += [
            (embedding.temperature > 0, "model.heads.embedding.temperature must be > 0"),
            # The contrastive loss compares each image with the others of its batch.
            (train.batch_size >= 2, "train.batch_size must be >= 2 for the embedding head"),
        ]
    for ok, message in checks:
        if not ok:
            raise ValueError(f"{source}: {message}.")


def loss_settings(recipe):
    """The loss arguments of `YOLORObjectDetector.compile` a recipe gives.

    The official names map onto the task's (``box`` -> ``box_gain``,
    ``cls_pw`` -> ``cls_pos_weight``, ``fl_gamma`` -> ``focal_gamma``, ...);
    the per-head loss weights and settings come from ``model.heads``; the
    loss scale is the batch times the accumulation, the images whose
    gradients one optimizer step sums (the official nominal batch).
    """
    loss, heads = recipe.loss, recipe.model.heads
    settings = {
        "box_gain": loss.box,
        "obj_gain": loss.obj,
        "cls_gain": loss.cls,
        "anchor_t": loss.anchor_t,
        "cls_pos_weight": loss.cls_pw,
        "obj_pos_weight": loss.obj_pw,
        "focal_gamma": loss.fl_gamma,
        "loss_scale": float(recipe.train.batch_size * recipe.accumulate),
        "loss_weights": {name: head.loss_weight for name, head in heads.items()},
    }
    if "classification" in heads:
        settings["label_pos_weight"] = heads["classification"].pos_weight
    if "embedding" in heads:
        settings["temperature"] = heads["embedding"].temperature
    return settings


def build_heads(recipe, num_classes):
    """The task heads a recipe describes, for a dataset of ``num_classes`` classes.

    The classification head predicts which of the dataset's classes an image
    holds, so it has one label per class.
    """
    from yolor_keras.models import ClassificationHead
    from yolor_keras.models import DetectionHead
    from yolor_keras.models import EmbeddingHead

    heads = []
    for name, head in recipe.model.heads.items():
        if name == "detection":
            heads.append(DetectionHead(num_classes, implicit=head.implicit))
        elif name == "classification":
            heads.append(
                ClassificationHead(
                    num_classes, hidden_units=head.hidden_units, implicit=head.implicit
                )
            )
        else:
            heads.append(
                EmbeddingHead(
                    head.embedding_dim, hidden_units=head.hidden_units, implicit=head.implicit
                )
            )
    return heads


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
            "train",
            "--data",
            str(data),
            "--recipe",
            self.recipe,
            "--model",
            self.model,
            "--image-size",
            str(self.image_size),
            "--batch-size",
            str(self.batch_size),
            "--epochs",
            str(self.epochs),
            "--stage",
            self.stage,
            "--out",
            self.out,
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
            raise ValueError(
                f"{where}: unknown key(s) {sorted(unknown)}; known keys: {sorted(keys)}."
            )
        name = stage.get("name")
        if not isinstance(name, str) or name in plans:
            raise ValueError(f"{where}: `name` must be a new string, got {name!r}.")
        if stage.get("stage") not in STAGE_KINDS:
            raise ValueError(
                f"{where}: `stage` must be one of {STAGE_KINDS}, got {stage.get('stage')!r}."
            )
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
            raise ValueError(
                f"{where}: `save_epochs` must list epochs in [0, {epochs}), got {save_epochs!r}."
            )
        continue_from = None
        origin = stage.get("continue_from")
        if origin is not None:
            if not isinstance(origin, dict) or set(origin) != {"stage", "epoch"}:
                raise ValueError(
                    f"{where}: `continue_from` must be {{stage: NAME, epoch: N}}, got {origin!r}."
                )
            earlier = plans.get(origin["stage"])
            if earlier is None:
                raise ValueError(
                    f"{where}: `continue_from` names {origin['stage']!r}, not an earlier stage."
                )
            if origin["epoch"] not in earlier.save_epochs:
                raise ValueError(
                    f"{where}: continues from epoch {origin['epoch']} of {earlier.name!r}, which "
                    f"keeps only {list(earlier.save_epochs)} (add it to its save_epochs)."
                )
            if origin["epoch"] + 1 >= epochs:
                raise ValueError(
                    f"{where}: epochs {epochs} leaves nothing to train after epoch {origin['epoch']}."
                )
            continue_from = f"{earlier.out}/checkpoints/epoch_{origin['epoch']:03d}"
        plans[name] = StagePlan(
            name=name,
            stage=stage["stage"],
            recipe=str(recipe),
            epochs=epochs,
            out=stage["out"],
            continue_from=continue_from,
            save_epochs=tuple(save_epochs),
            **shared,
        )
    return list(plans.values())
