"""`train_multi_task`: a multi-task YOLOR trained with `model.fit` by a recipe.

recipe -> synthetic data (written once) -> multi-task batches ->
`YOLORMultiTask` with `YOLORSGD` (the official optimizer, warmup and EMA) ->
`fit` -> scores of every head with the EMA weights.
"""

import dataclasses
import os
import time

import keras

from yolor_keras.data.multi_task import build_multi_task_dataset
from yolor_keras.tasks.multi_task_evaluation import evaluate_multi_task
from yolor_keras.tasks.multi_task_recipe import MultiTaskRecipe
from yolor_keras.tasks.multi_task_recipe import load_multi_task_recipe
from yolor_keras.training.ema import average_batchnorm_statistics
from yolor_keras.training.ema import ema_weights
from yolor_keras.training.optimizer import build_optimizer


@dataclasses.dataclass
class MultiTaskTrainingResult:
    """What `train_multi_task` returns.

    Args:
        model: the trained `YOLORMultiTask` (raw weights; its optimizer
            holds the EMA, see `yolor_keras.training.ema.ema_weights`).
        history: the `keras.callbacks.History` of `fit`.
        metrics: `evaluate_multi_task` scores with the EMA weights, or None.
        train_seconds: wall time of `fit`.
    """

    model: keras.Model
    history: keras.callbacks.History
    metrics: dict
    train_seconds: float


def ensure_synthetic_dataset(data_dir, data_config, verbose=True):
    """Writes the recipe's synthetic dataset into ``data_dir`` unless it is there.

    Args:
        data_dir: the dataset folder (COCO layout).
        data_config: a `SyntheticDataConfig`.
        verbose: say what happens.

    Returns:
        ``data_dir``.
    """
    from yolor_keras.data.synthetic import generate_dataset

    if os.path.isfile(os.path.join(data_dir, "annotations", "instances_val.json")):
        return data_dir
    if verbose:
        print(f"Writing the synthetic dataset to {data_dir} ...")
    generate_dataset(data_dir, **dataclasses.asdict(data_config))
    return data_dir


def train_multi_task(recipe, data_dir, epochs=None, evaluate=True, cache=True, verbose=1):
    """Trains the multi-task model a recipe describes, then scores every head.

    Args:
        recipe: a `MultiTaskRecipe` or the path of a recipe YAML file.
        data_dir: a COCO-layout folder with ``train`` and ``val`` splits
            whose annotations carry ``instance_id`` (see
            `ensure_synthetic_dataset`).
        epochs: override ``recipe.train.epochs``.
        evaluate: score the heads on the ``val`` split after training.
        cache: keep decoded images in memory.
        verbose: Keras `fit` verbosity; also progress of data and scoring.

    Returns:
        A `MultiTaskTrainingResult`.
    """
    if not isinstance(recipe, MultiTaskRecipe):
        recipe = load_multi_task_recipe(recipe)
    settings = recipe.train
    epochs = settings.epochs if epochs is None else int(epochs)
    keras.utils.set_random_seed(settings.seed)
    image_size = recipe.model.image_size
    train_dataset, train_info = build_multi_task_dataset(
        data_dir,
        split="train",
        image_size=image_size,
        batch_size=settings.batch_size,
        training=True,
        flip=settings.flip,
        seed=settings.seed,
        cache=cache,
        verbose=bool(verbose),
    )
    accumulate = max(round(settings.nominal_batch_size / settings.batch_size), 1)
    model = recipe.build_model(
        num_classes=train_info.num_classes,
        # The detection loss is tuned for the official magnitude: the mean
        # times the nominal batch (see `YOLORObjectDetector`).
        loss_scale=settings.batch_size * accumulate,
        class_names=list(train_info.class_names),
    )
    model.compile(
        optimizer=build_optimizer(
            dataclasses.asdict(recipe.optimizer),
            steps_per_epoch=train_info.num_batches,
            epochs=epochs,
            batch_size=settings.batch_size,
            nominal_batch_size=settings.nominal_batch_size,
        )
    )
    # The EMA model carries averaged BatchNorm statistics, as the official one.
    average_batchnorm_statistics(model)
    start = time.perf_counter()
    # A diverged run stops at once; its history ends in NaN.
    history = model.fit(
        train_dataset, epochs=epochs, verbose=verbose, callbacks=[keras.callbacks.TerminateOnNaN()]
    )
    train_seconds = time.perf_counter() - start

    metrics = None
    if evaluate:
        val_dataset, val_info = build_multi_task_dataset(
            data_dir,
            split="val",
            image_size=image_size,
            batch_size=settings.batch_size,
            training=False,
            cache=cache,
            verbose=bool(verbose),
        )
        with ema_weights(model):
            metrics = evaluate_multi_task(model, val_dataset, val_info, verbose=bool(verbose))
    return MultiTaskTrainingResult(model, history, metrics, train_seconds)
