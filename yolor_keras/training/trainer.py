"""`train`: a YOLOR training run with `model.fit`, end to end.

recipe -> datasets -> task (+ optimizer, EMA) under a tf.distribute strategy
-> `fit` with per-epoch checkpoints and COCO evaluation -> the EMA model.
"""

import dataclasses
import os

import keras

from yolor_keras.data import build_dataset
from yolor_keras.models import YOLORDetector
from yolor_keras.tasks import YOLORObjectDetector
from yolor_keras.training.callbacks import CHECKPOINT_NAME
from yolor_keras.training.callbacks import COCOEvaluationCallback
from yolor_keras.training.callbacks import EpochCheckpoint
from yolor_keras.training.callbacks import TimeLimit
from yolor_keras.training.callbacks import atomic_write
from yolor_keras.training.callbacks import read_state
from yolor_keras.training.distribute import is_chief
from yolor_keras.training.distribute import select_strategy
from yolor_keras.training.distribute import use_synchronized_batchnorm
from yolor_keras.training.ema import ema_weights
from yolor_keras.training.optimizer import build_optimizer
from yolor_keras.training.recipe import Recipe
from yolor_keras.training.recipe import load_recipe

MODEL_NAME = "model.keras"


@dataclasses.dataclass
class TrainingResult:
    """What `train` returns.

    Args:
        task: the trained `YOLORObjectDetector` (raw, non-EMA weights).
        history: the `keras.callbacks.History` of `fit`.
        metrics: the last COCO evaluation (EMA weights), or None.
        model_path: the saved EMA detector (`model.keras`).
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
    width_multiplier=1.0,
    depth_multiplier=1.0,
    weights=None,
    resume=False,
    strategy="auto",
    cache=True,
    seed=0,
    steps_per_epoch=None,
    time_limit_minutes=None,
    verbose=1,
):
    """Trains a YOLOR detector with `model.fit` by a recipe.

    Args:
        data: the training dataset in any form `build_dataset` reads (COCO
            layout folder, COCO JSON, YOLO folder or data YAML, "tfds:NAME").
        out_dir: run directory: ``last.keras`` and ``state.json`` every
            epoch, ``model.keras`` (EMA detector) at the end.
        recipe: a `Recipe`, a recipe YAML path, or None (hyp.scratch.1280).
        model: preset name; defaults to the recipe's ``train.model``.
        epochs, batch_size, image_size: override the recipe.
        val_data: the validation dataset; defaults to ``data`` with
            ``val_split``. False disables evaluation.
        train_split, val_split: split names inside ``data``.
        width_multiplier, depth_multiplier: model scaling (tiny models).
        weights: a `.keras` detector (e.g. converted official weights) to
            start from.
        resume: continue the run in ``out_dir`` from its last checkpoint, at
            the same epoch and optimizer step, with optimizer and EMA state.
        strategy: "auto", "mirrored", "multi_worker" or "default".
        cache: cache decoded images in memory.
        seed: data seed.
        steps_per_epoch: limit batches per epoch (quick runs).
        time_limit_minutes: stop after the first epoch past this budget
            (then evaluate and save as after the last epoch).
        verbose: Keras `fit` verbosity.

    Returns:
        A `TrainingResult`.
    """
    recipe = _recipe(recipe).override(
        model=model, epochs=epochs, batch_size=batch_size, image_size=image_size
    )
    settings = recipe.train
    if settings.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    strategy = select_strategy(strategy)

    train_dataset, train_info = build_dataset(
        data,
        split=train_split,
        image_size=settings.image_size,
        batch_size=settings.batch_size,
        training=True,
        recipe=recipe.augment,
        seed=seed,
        cache=cache,
        verbose=bool(verbose),
    )
    evaluation = None
    if val_data is not False:
        val_dataset, val_info = build_dataset(
            val_data if val_data is not None else data,
            split=val_split,
            image_size=settings.image_size,
            batch_size=settings.batch_size,
            training=False,
            cache=cache,
            verbose=bool(verbose),
        )
        evaluation = COCOEvaluationCallback(
            val_dataset, val_info, settings.eval_interval, verbose=bool(verbose)
        )

    steps = train_info.num_batches if steps_per_epoch is None else min(steps_per_epoch, train_info.num_batches)
    accumulate = max(round(settings.nominal_batch_size / settings.batch_size), 1)
    initial_epoch = 0
    with strategy.scope():
        if resume:
            state = read_state(out_dir)
            checkpoint = os.path.join(out_dir, CHECKPOINT_NAME)
            if state is None or not os.path.isfile(checkpoint):
                raise FileNotFoundError(f"Nothing to resume in {out_dir}: no {CHECKPOINT_NAME}/state.json.")
            task = keras.saving.load_model(checkpoint)
            initial_epoch = state["epoch"]
            if verbose:
                print(f"Resuming {out_dir} at epoch {initial_epoch}, step {state['step']}.")
        else:
            if weights is not None:
                detector = keras.saving.load_model(weights, compile=False)
                if isinstance(detector, YOLORObjectDetector):
                    detector = detector.detector
            else:
                detector = YOLORDetector.from_preset(
                    settings.model,
                    num_classes=train_info.num_classes,
                    width_multiplier=width_multiplier,
                    depth_multiplier=depth_multiplier,
                    class_names=list(train_info.class_names),
                )
            if detector.num_classes != train_info.num_classes:
                raise ValueError(
                    f"The model predicts {detector.num_classes} classes but the dataset has "
                    f"{train_info.num_classes} ({list(train_info.class_names)[:5]}...)."
                )
            task = YOLORObjectDetector.from_recipe(
                detector,
                recipe,
                loss_scale=settings.batch_size * accumulate,
                class_names=train_info.class_names,
            )
            optimizer = build_optimizer(
                dataclasses.asdict(recipe.optimizer),
                steps_per_epoch=steps,
                epochs=settings.epochs,
                batch_size=settings.batch_size,
                nominal_batch_size=settings.nominal_batch_size,
            )
            task.compile(optimizer=optimizer)
        if strategy.num_replicas_in_sync > 1:
            # Statistics over the global batch, as one device would see it.
            use_synchronized_batchnorm(task, True)

    # Order matters: the time limit decides whether this epoch is the last,
    # evaluation adds val_mAP to the logs, then the checkpoint and CSV see them.
    callbacks = []
    if time_limit_minutes is not None:
        callbacks.append(TimeLimit(time_limit_minutes))
    if evaluation is not None:
        callbacks.append(evaluation)
    callbacks.append(EpochCheckpoint(out_dir))
    callbacks.append(keras.callbacks.CSVLogger(os.path.join(out_dir, "results.csv"), append=resume))
    os.makedirs(out_dir, exist_ok=True)
    if steps_per_epoch is not None:
        # A capped epoch must not exhaust the finite dataset for the next one.
        train_dataset = train_dataset.repeat()
    history = task.fit(
        train_dataset,
        epochs=settings.epochs,
        initial_epoch=initial_epoch,
        steps_per_epoch=steps if steps_per_epoch is not None else None,
        callbacks=callbacks,
        verbose=verbose,
    )
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
    """Saves ``task``'s detector with its EMA weights (what is deployed).

    BatchNorm synchronisation is a training-time TensorFlow setting; the
    saved detector has it off so that it loads on any backend.
    """
    use_synchronized_batchnorm(task, False)
    with ema_weights(task):
        atomic_write(path, task.detector.save)
    return path
