"""`train`: a YOLOR training run with `model.fit`, end to end, for any task.

recipe -> datasets -> task (+ optimizer, EMA) under a tf.distribute strategy
-> `fit` with per-epoch checkpoints and evaluation -> the EMA model.

The recipe's ``model.heads`` section says which heads the task has: a
detector (the default), or detection with classification and embedding
heads, trained together on batches that carry the extra targets.

A run is reproducible from its seed and resumable to the same result: the
model is initialised from the seed, and each epoch's batches are drawn from
the seed and the epoch's index (the pipeline is rebuilt for every epoch), so
a run killed after epoch k and resumed sees exactly the batches, and reaches
exactly the weights, of a run that never stopped.
"""

import dataclasses
import os
import shutil

import keras
import numpy as np

from yolor_keras.atomic import write_file_atomically
from yolor_keras.data import build_dataset
from yolor_keras.data import class_presence
from yolor_keras.data import identities_from
from yolor_keras.data import load_source
from yolor_keras.tasks import YOLORObjectDetector
from yolor_keras.training.callbacks import CHECKPOINTS_DIR
from yolor_keras.training.callbacks import POINTER_NAME
from yolor_keras.training.callbacks import CheckpointError
from yolor_keras.training.callbacks import EpochCheckpoint
from yolor_keras.training.callbacks import EvaluationCallback
from yolor_keras.training.callbacks import ResultsLog
from yolor_keras.training.callbacks import RunProgress
from yolor_keras.training.callbacks import TimeLimit
from yolor_keras.training.callbacks import load_checkpoint
from yolor_keras.training.callbacks import optimizer_counters
from yolor_keras.training.callbacks import read_pointer
from yolor_keras.training.callbacks import read_state
from yolor_keras.training.callbacks import resolve_checkpoint
from yolor_keras.training.callbacks import score_columns
from yolor_keras.training.distribute import is_chief
from yolor_keras.training.distribute import select_strategy
from yolor_keras.training.distribute import use_synchronized_batchnorm
from yolor_keras.training.ema import ema_weights
from yolor_keras.training.optimizer import build_optimizer
from yolor_keras.training.recipe import Recipe
from yolor_keras.training.recipe import build_heads
from yolor_keras.training.recipe import load_recipe
from yolor_keras.training.recipe import loss_settings
from yolor_keras.training.recipe import validate_recipe
from yolor_keras.training.schedules import continued_schedules

MODEL_NAME = "model.keras"
RESULTS_NAME = "results.csv"
STAGES = ("train", "tune")
# What a run writes into its directory; `exist_ok` clears exactly these.
RUN_ARTEFACTS = (POINTER_NAME, CHECKPOINTS_DIR, RESULTS_NAME, MODEL_NAME)


class RunDirectoryError(ValueError):
    """The run directory cannot be used as asked (not empty, nothing to resume)."""


@dataclasses.dataclass
class TrainingResult:
    """What `train` returns.

    Args:
        task: the trained `YOLORObjectDetector` (raw, non-EMA weights; its
            optimizer holds the EMA, see `yolor_keras.training.ema`).
        history: the `keras.callbacks.History` of the run's epochs.
        metrics: the last evaluation (EMA weights) of every head, or None.
        model_path: the saved EMA task (`model.keras`).
    """

    task: YOLORObjectDetector
    history: keras.callbacks.History
    metrics: dict
    model_path: str


def _recipe(recipe):
    if recipe is None:
        return Recipe()
    if isinstance(recipe, Recipe):
        return recipe
    return load_recipe(recipe)


def stage_recipe(recipe, stage):
    """The recipe of a training stage: "train" (4-image mosaic, the official
    ``train.py``) or "tune" (9-image mosaic, the official ``tune.py``)."""
    if stage not in STAGES:
        raise ValueError(f"Unknown stage {stage!r}; expected one of {STAGES}.")
    tiles = 9 if stage == "tune" else 4
    names = {field.name for field in dataclasses.fields(recipe.augment)}
    if "mosaic_tiles" not in names:
        if stage == "tune":
            raise ValueError(
                "This version's augmentation has no 9-image mosaic (AugmentationRecipe.mosaic_tiles)."
            )
        return recipe
    return dataclasses.replace(
        recipe, augment=dataclasses.replace(recipe.augment, mosaic_tiles=tiles)
    )


def epoch_seed(seed, epoch):
    """The data seed of one epoch: a fixed function of the run's seed and the epoch."""
    return int(np.random.SeedSequence([abs(int(seed)), int(epoch)]).generate_state(1)[0])


def prepare_run_directory(out_dir, resume=False, exist_ok=False):
    """Checks that ``out_dir`` can take the run, before anything is trained.

    A new run refuses a non-empty directory (it would mix with, and
    overwrite, another run's checkpoints) unless ``exist_ok``, which clears
    the previous run's artefacts first; ``resume`` needs a checkpoint there.
    """
    if resume:
        if read_pointer(out_dir) is None:
            raise RunDirectoryError(f"Nothing to resume in {out_dir}: it has no {POINTER_NAME}.")
        root = os.path.join(out_dir, CHECKPOINTS_DIR)
        if is_chief() and os.path.isdir(root):
            # Temporaries of checkpoint writes that a killed run left behind;
            # the run is the only writer, and it is not writing yet.
            for name in os.listdir(root):
                if name.startswith(".epoch_") and (".partial-" in name or ".previous-" in name):
                    shutil.rmtree(os.path.join(root, name), ignore_errors=True)
        return
    entries = sorted(os.listdir(out_dir)) if os.path.isdir(out_dir) else []
    if entries and not exist_ok:
        shown = ", ".join(entries[:4]) + (", ..." if len(entries) > 4 else "")
        raise RunDirectoryError(
            f"The output directory {out_dir} is not empty ({shown}). Pass --resume to continue "
            f"its run, --exist-ok to start a new run there (replacing its checkpoints, "
            f"{RESULTS_NAME} and {MODEL_NAME}), or choose another --out."
        )
    if entries and is_chief():
        for name in RUN_ARTEFACTS:
            path = os.path.join(out_dir, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            elif os.path.lexists(path):
                os.remove(path)


def _copy_optimizer_state(source, target, where):
    """Copies every optimizer variable of ``source`` onto ``target``'s (same model)."""
    source_paths = [variable.path for variable in source.variables]
    if source_paths == [variable.path for variable in target.variables]:
        for origin, variable in zip(source.variables, target.variables):
            variable.assign(origin)
        return
    if len(set(source_paths)) != len(source_paths):
        raise CheckpointError(
            f"{where}: the checkpoint's optimizer variables cannot be matched by name."
        )
    source_variables = dict(zip(source_paths, source.variables))
    missing = []
    for variable in target.variables:
        origin = source_variables.get(variable.path)
        if origin is None or tuple(origin.shape) != tuple(variable.shape):
            missing.append(variable.path)
            continue
        variable.assign(origin)
    # Gradient accumulators may be absent when the batch size changed; any
    # other missing variable would silently restart the optimizer.
    missing = [path for path in missing if "gradient_accumulator" not in path]
    if missing:
        raise CheckpointError(
            f"{where}: the checkpoint's optimizer state does not fit this run's optimizer "
            f"(no match for {missing[:3]}{'...' if len(missing) > 3 else ''})."
        )


def extra_targets(data, split, heads):
    """`build_dataset`'s extra targets for the non-detection heads of a task.

    The classification head learns which classes an image holds (from its
    boxes); the embedding head learns identities, the ``instance_id`` of an
    image's largest object, read from a COCO JSON file (``data`` itself, or
    ``data/annotations/instances_{split}.json``).
    """
    targets = {}
    if "classification" in heads:
        targets["classification"] = class_presence
    if "embedding" in heads:
        path = os.fspath(data)
        if not path.endswith(".json"):
            path = os.path.join(path, "annotations", f"instances_{split}.json")
        if not os.path.isfile(path):
            raise ValueError(
                f"{data}: the embedding head needs a COCO JSON with instance_id annotations; "
                f"{path} does not exist."
            )
        targets["embedding"] = identities_from(path)
    return targets or None


def compile_task(task, recipe, steps_per_epoch):
    """Compiles ``task`` with the recipe's `YOLORSGD` and loss settings."""
    settings = recipe.train
    optimizer = build_optimizer(
        dataclasses.asdict(recipe.optimizer),
        steps_per_epoch=steps_per_epoch,
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        nominal_batch_size=settings.nominal_batch_size,
    )
    task.compile(optimizer=optimizer, **loss_settings(recipe))
    return task


def _same_heads(task, heads):
    configs = [(head.name, head.get_config()) for head in heads]
    return [(head.name, head.get_config()) for head in task.heads] == configs


def initial_task(recipe, num_classes, class_names, weights=None):
    """The task a new run starts from: the recipe's preset and heads.

    With ``weights`` (a saved `YOLORObjectDetector`, e.g. converted official
    weights), its architecture and weights; a detector's weights start a
    task with more heads through `load_detector_weights`.
    """
    settings, model = recipe.train, recipe.model
    heads = build_heads(recipe, num_classes)
    if weights is None:
        return YOLORObjectDetector.from_preset(
            settings.model,
            width_multiplier=model.width_multiplier,
            depth_multiplier=model.depth_multiplier,
            heads=heads,
            class_names=list(class_names),
        )
    source = keras.saving.load_model(weights, compile=False)
    if not isinstance(source, YOLORObjectDetector):
        raise ValueError(f"{weights}: not a saved YOLORObjectDetector ({type(source).__name__}).")
    if source.num_classes != num_classes:
        raise ValueError(
            f"{weights}: the model predicts {source.num_classes} classes but the dataset has "
            f"{num_classes} ({list(class_names)[:5]}...)."
        )
    if _same_heads(source, heads):
        task = source
    else:
        task = YOLORObjectDetector.from_architecture(
            source.architecture,
            width_multiplier=source.width_multiplier,
            depth_multiplier=source.depth_multiplier,
            image_size=source.image_size,
            heads=heads,
        )
        task.load_detector_weights(source)
    task.class_names = list(class_names)
    return task


def copy_task(task):
    """A new, uncompiled task with ``task``'s configuration and weights."""
    copy = YOLORObjectDetector.from_config(task.get_config())
    copy.set_weights(task.get_weights())
    return copy


def continue_task(folder, recipe, steps, continue_weights):
    """The task and optimizer of a run that continues another run's checkpoint."""
    previous, state = load_checkpoint(folder)
    start_epoch = state["epoch"]
    settings = recipe.train
    if settings.epochs <= start_epoch:
        raise ValueError(
            f"{folder} was taken after {start_epoch} epochs; --epochs {settings.epochs} leaves "
            f"nothing to train (give the new total, e.g. 450 for the official tune stage)."
        )
    # The continued run trains the previous run's task with this recipe's
    # optimizer and loss; a fresh copy is compiled anew.
    task = copy_task(previous)
    compile_task(task, recipe, steps)
    optimizer = getattr(task.optimizer, "inner_optimizer", task.optimizer)
    previous_optimizer = getattr(previous.optimizer, "inner_optimizer", previous.optimizer)
    weights_lr, bias_lr, momentum = continued_schedules(
        optimizer, previous_optimizer, state["step"], start_epoch, steps
    )
    optimizer.learning_rate = weights_lr
    optimizer.bias_learning_rate = bias_lr
    optimizer.momentum = momentum
    inner = getattr(task.optimizer, "inner_optimizer", task.optimizer)
    inner.build(task.trainable_variables)
    _copy_optimizer_state(previous_optimizer, inner, folder)
    step, updates = optimizer_counters(inner)
    if (step, updates) != (state["step"], state["updates"]):
        raise CheckpointError(
            f"{folder}: after loading, the optimizer is at step {step}, update {updates}; "
            f"the checkpoint recorded step {state['step']}, update {state['updates']}."
        )
    if continue_weights == "ema":
        # The official checkpoints hold only the EMA model, so the official
        # continued run starts its weights (and its EMA) from the EMA.
        with ema_weights(task):
            values = [np.array(variable) for variable in task.weights]
        for variable, value in zip(task.weights, values):
            variable.assign(value)
    elif continue_weights != "raw":
        raise ValueError(f"continue_weights must be 'ema' or 'raw', got {continue_weights!r}.")
    return task, state


def train(
    data,
    out_dir,
    recipe=None,
    model=None,
    epochs=None,
    batch_size=None,
    image_size=None,
    val_data=None,
    train_split="train",
    val_split="val",
    width_multiplier=None,
    depth_multiplier=None,
    weights=None,
    resume=False,
    continue_from=None,
    continue_weights="ema",
    stage="train",
    save_epochs=None,
    exist_ok=False,
    strategy="auto",
    cache=True,
    seed=0,
    steps_per_epoch=None,
    time_limit_minutes=None,
    verbose=1,
):
    """Trains a YOLOR task (a detector, or several heads) with `model.fit` by a recipe.

    Args:
        data: the training dataset in any form `build_dataset` reads (COCO
            layout folder, COCO JSON, YOLO folder or data YAML, "tfds:NAME").
            A task with an embedding head needs COCO JSON annotations with
            ``instance_id`` (e.g. `yolor_keras.data.synthetic`).
        out_dir: run directory: a checkpoint every epoch (see
            `yolor_keras.training.callbacks`), ``results.csv``, and
            ``model.keras`` (EMA task) at the end. It must be empty or
            absent for a new run (see ``exist_ok``).
        recipe: a `Recipe`, a recipe YAML path, or None (hyp.scratch.1280).
        model: preset name; defaults to the recipe's ``train.model``.
        epochs, batch_size, image_size: override the recipe. ``epochs`` is
            the run's total, counted from epoch 0 also when continuing.
        val_data: the validation dataset; defaults to ``data`` with
            ``val_split``. False disables evaluation.
        train_split, val_split: split names inside ``data``.
        width_multiplier, depth_multiplier: override the recipe's
            ``model`` scaling (tiny models).
        weights: a saved `YOLORObjectDetector` (`.keras`, e.g. converted
            official weights) to start from; warmup, cosine and EMA start
            afresh. A detector's weights also start a task with more heads.
        resume: continue the run in ``out_dir`` from its latest checkpoint, at
            the same epoch and optimizer step, with optimizer and EMA state,
            exactly as if it had not stopped (with the run's own seed, stage
            and, unless ``epochs`` is given, total epochs).
        continue_from: a checkpoint folder (or a run directory: its latest
            checkpoint) of another run to continue in ``out_dir``, as the
            official ``tune.py``/``train.py`` do with ``--weights last_298.pt``:
            the epoch counter, optimizer state (momentum, counters) and EMA
            update count carry over, and the cosine is re-based to ``epochs``.
        continue_weights: with ``continue_from``: "ema" starts the weights
            from the checkpoint's EMA (official: its checkpoints hold only
            the EMA model), "raw" from its raw weights.
        stage: "train" (4-image mosaic) or "tune" (9-image mosaic, the
            official ``tune.py``).
        save_epochs: 0-based epoch indices whose checkpoints are kept for
            good (e.g. (298, 424)), besides the latest and previous one.
            A resumed run keeps its earlier choice by default.
        exist_ok: allow a new run into a non-empty ``out_dir``; the previous
            run's checkpoints, results and model there are removed first.
        strategy: "auto", "mirrored", "multi_worker" or "default".
        cache: cache decoded images in memory.
        seed: seed of the initial weights and of the data.
        steps_per_epoch: limit batches per epoch (quick runs).
        time_limit_minutes: stop after the first epoch past this budget
            (then evaluate and save as after the last epoch).
        verbose: Keras `fit` verbosity.

    Returns:
        A `TrainingResult`.
    """
    if sum(bool(x) for x in (resume, continue_from, weights)) > 1:
        raise ValueError("Give at most one of resume, continue_from and weights.")
    recipe = _recipe(recipe).override(
        model=model, epochs=epochs, batch_size=batch_size, image_size=image_size
    )
    scaling = {"width_multiplier": width_multiplier, "depth_multiplier": depth_multiplier}
    scaling = {key: float(value) for key, value in scaling.items() if value is not None}
    recipe = dataclasses.replace(recipe, model=dataclasses.replace(recipe.model, **scaling))
    validate_recipe(recipe, "train()")
    recipe = stage_recipe(recipe, stage)
    heads = recipe.head_names
    settings = recipe.train
    if continue_from is not None:
        continue_folder = resolve_checkpoint(continue_from)
        inside = os.path.commonpath([os.path.abspath(continue_folder), os.path.abspath(out_dir)])
        if inside == os.path.abspath(out_dir):
            raise RunDirectoryError(
                f"--continue-from {continue_from} lies inside --out {out_dir}; continue into a new directory."
            )
    prepare_run_directory(out_dir, resume=resume, exist_ok=exist_ok)
    if settings.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    strategy = select_strategy(strategy)
    # Seeds the initial weights; the data is seeded per epoch below.
    keras.utils.set_random_seed(int(seed))

    source = load_source(data, split=train_split, verbose=bool(verbose))

    def epoch_dataset(epoch, verbose_build=False):
        targets = extra_targets(data, train_split, heads)
        if targets is None:
            options = {"recipe": recipe.augment}
        else:
            # A mosaic (and any warp) mixes images whose per-image targets
            # (classes present, identity) would then no longer describe the
            # sample: letterboxed images, flipped as the recipe's fliplr says.
            options = {
                "augment": False,
                "flip": recipe.augment.fliplr > 0,
                "extra_targets": targets,
            }
        return build_dataset(
            source,
            image_size=settings.image_size,
            batch_size=settings.batch_size,
            training=True,
            seed=epoch_seed(seed, epoch),
            cache=cache,
            verbose=verbose_build,
            **options,
        )

    def evaluation_callback():
        if val_data is False:
            return None
        validation = val_data if val_data is not None else data
        val_dataset, val_info = build_dataset(
            validation,
            split=val_split,
            image_size=settings.image_size,
            batch_size=settings.batch_size,
            training=False,
            cache=cache,
            verbose=bool(verbose),
            extra_targets=extra_targets(validation, val_split, heads),
        )
        return EvaluationCallback(
            val_dataset,
            val_info,
            settings.eval_interval,
            verbose=bool(verbose),
            epochs=settings.epochs,
        )

    initial_epoch = 0
    first_dataset = None
    with strategy.scope():
        if resume:
            pointer = read_pointer(out_dir)
            folder = os.path.join(out_dir, CHECKPOINTS_DIR, pointer["latest"])
            task, state = load_checkpoint(folder)
            initial_epoch = state["epoch"]
            if save_epochs is None:
                save_epochs = state.get("keep_epochs", [])
            # The rest of the run follows its own seed, stage and length
            # (an explicit `epochs` may extend it).
            seed = state.get("seed", seed)
            stage = state.get("stage", stage)
            recipe = stage_recipe(recipe, stage)
            if epochs is None and "epochs" in state:
                recipe = recipe.override(epochs=state["epochs"])
            settings = recipe.train
            # The checkpoint's task decides the heads (and so the targets).
            heads = task.head_names
            if verbose:
                print(f"Resuming {out_dir} at epoch {initial_epoch}, step {state['step']}.")
            if initial_epoch >= settings.epochs:
                raise RunDirectoryError(
                    f"The run in {out_dir} has finished its {settings.epochs} epochs already."
                )
        elif continue_from is not None:
            initial_epoch = read_state(continue_folder)["epoch"]
            if settings.epochs <= initial_epoch:
                raise ValueError(
                    f"{continue_folder} was taken after {initial_epoch} epochs; --epochs "
                    f"{settings.epochs} leaves nothing to train (give the new total, e.g. 450 "
                    f"for the official tune stage)."
                )
        first_dataset, train_info = epoch_dataset(initial_epoch, verbose_build=bool(verbose))
        steps = (
            train_info.num_batches
            if steps_per_epoch is None
            else min(steps_per_epoch, train_info.num_batches)
        )
        if continue_from is not None:
            task, state = continue_task(continue_folder, recipe, steps, continue_weights)
            if verbose:
                print(
                    f"Continuing {continue_folder} at epoch {initial_epoch} of {settings.epochs}, "
                    f"step {state['step']}, {state['updates']} EMA updates."
                )
        elif not resume:
            task = initial_task(recipe, train_info.num_classes, train_info.class_names, weights)
            compile_task(task, recipe, steps)
        if task.num_classes != train_info.num_classes and "detection" in task.head_names:
            raise ValueError(
                f"The checkpoint's model predicts {task.num_classes} classes but the "
                f"dataset has {train_info.num_classes}."
            )
        if strategy.num_replicas_in_sync > 1:
            # Statistics over the global batch, as one device would see it.
            use_synchronized_batchnorm(task, True)

    # Order matters: the time limit decides whether this epoch is the last,
    # evaluation adds val_mAP to the logs, then the checkpoint and CSV see them.
    callbacks = [RunProgress(settings.epochs)]
    # Built once the heads are known (a resumed run reads them), with the
    # run's length (a resumed run may have read it too).
    evaluation = evaluation_callback()
    time_limit = None
    if time_limit_minutes is not None:
        time_limit = TimeLimit(time_limit_minutes)
        callbacks.append(time_limit)
    if evaluation is not None:
        callbacks.append(evaluation)
    run_state = {"seed": int(seed), "stage": stage, "epochs": settings.epochs}
    callbacks.append(EpochCheckpoint(out_dir, keep_epochs=save_epochs or (), extra_state=run_state))
    callbacks.append(
        ResultsLog(os.path.join(out_dir, RESULTS_NAME), score_columns(task.head_names))
    )
    os.makedirs(out_dir, exist_ok=True)
    history = keras.callbacks.History()
    history.set_model(task)
    history.epoch, history.history = [], {}
    for epoch in range(initial_epoch, settings.epochs):
        if first_dataset is not None:
            dataset, first_dataset = first_dataset, None
        else:
            # The previous epoch's pipeline is released before this one is
            # built; a memory cache of decoded images is kept and reused
            # (`pipeline.MEMORY_CACHES`).
            dataset = None
            dataset = epoch_dataset(epoch)[0]
        if steps_per_epoch is not None:
            dataset = dataset.take(steps)
        epoch_history = task.fit(
            dataset,
            # The pipeline's length is unknown to tf.data (images may be
            # skipped); without it, `fit` runs one step past the last batch.
            steps_per_epoch=steps,
            epochs=epoch + 1,
            initial_epoch=epoch,
            callbacks=callbacks,
            verbose=verbose,
            shuffle=False,  # the pipeline shuffles, by the epoch's seed
        )
        history.epoch.extend(epoch_history.epoch)
        for key, values in epoch_history.history.items():
            history.history.setdefault(key, []).extend(values)
        if (time_limit is not None and time_limit.stopped) or task.stop_training:
            break
    model_path = os.path.join(out_dir, MODEL_NAME)
    if is_chief():
        save_ema_detector(task, model_path)
    return TrainingResult(
        task=task,
        history=history,
        metrics=evaluation.last_metrics if evaluation is not None else None,
        model_path=model_path,
    )


def save_ema_detector(task, path):
    """Saves ``task`` with its EMA weights and without optimizer (what is deployed).

    BatchNorm synchronisation is a training-time TensorFlow setting; the
    saved task has it off so that it loads on any backend.
    """
    use_synchronized_batchnorm(task, False)
    with ema_weights(task):
        # An uncompiled copy: the deployed file holds no optimizer state.
        deployed = copy_task(task)
    write_file_atomically(path, deployed.save)
    return path
