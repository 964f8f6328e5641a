"""`make demo`: the whole pipeline on its embedded defaults.

1. Model: build YOLOR-P6 (random weights, or converted official weights with
   ``--weights``), print its summary and parameter count, and run it on the
   bundled image: boxes above 0.25 and the latency.
2. Train: write the synthetic dataset, train a tiny YOLOR on it with
   `model.fit` for a few minutes, evaluate COCO mAP, save the model.
3. Deploy: fold and export the trained model (SavedModel, TFLite fp32/fp16/
   int8, ONNX), serve the SavedModel locally for one request, and draw the
   detections on held-out images.

Usage: ``python -m yolor_keras.demo [--weights yolor_p6.pt] [--out demo_output]
[--minutes 6] [--skip-train] [--skip-deploy]``
"""

import argparse
import os
import pathlib
import time

from yolor_keras.native_logs import quiet_native_logs

ASSETS = pathlib.Path(__file__).parent / "assets"
BUNDLED_IMAGE = ASSETS / "shapes.jpg"

# The training run of the demo: a tiny YOLOR-P6 on the synthetic shapes
# dataset, with the official recipe except for a short warmup (the official
# minimum of 1000 iterations would be most of a few-minute run).
DEMO_RECIPE = {
    "train": {
        "model": "yolor_p6",
        "image_size": 256,
        "epochs": 40,
        "batch_size": 16,
        "nominal_batch_size": 16,
        "eval_interval": 10,
    },
    "optimizer": {"lr0": 0.02, "warmup_epochs": 1.0, "warmup_min_steps": 30},
    "augment": {"translate": 0.1, "scale": 0.3, "mosaic": 0.5},
}
DEMO_MODEL = {"width_multiplier": 0.25, "depth_multiplier": 0.33}
DEMO_DATA = {"num_train": 480, "num_val": 96, "image_size": 256, "seed": 0}


def _header(text):
    print(f"\n{'=' * 78}\n{text}\n{'=' * 78}", flush=True)


def _median_latency(function, argument, repeats=5):
    function(argument)  # trace and warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function(argument)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def model_stage(weights=None, image_size=640):
    """Builds YOLOR-P6 and runs it on the bundled image."""
    import numpy as np
    import tensorflow as tf

    from yolor_keras.inference import Predictor
    from yolor_keras.tasks import YOLORObjectDetector

    _header("1. YOLOR-P6: implicit knowledge in a functional Keras model")
    if weights:
        from yolor_keras.convert import convert_checkpoint

        detector = convert_checkpoint(weights, "yolor_p6")
        print(f"Converted official weights from {weights}.")
    else:
        detector = YOLORObjectDetector.from_preset("yolor_p6", num_classes=80)
        print("Random weights (pass --weights yolor_p6.pt for the official ones).")
    detector.summary(line_length=100)
    print(f"Parameters: {detector.count_params():,}")

    predictor = Predictor(detector, image_size=image_size, conf_threshold=0.25)
    image = np.asarray(tf.io.decode_jpeg(tf.io.read_file(str(BUNDLED_IMAGE))))
    start = time.perf_counter()
    [result] = predictor.predict([image])
    first_call = time.perf_counter() - start
    latency = _median_latency(lambda batch: predictor.predict(batch), [image])
    print(
        f"Bundled image {BUNDLED_IMAGE.name} ({image.shape[1]}x{image.shape[0]}) at {image_size}: "
        f"{len(result['boxes'])} boxes above 0.25; latency {latency * 1000:.0f} ms "
        f"(first call with tracing {first_call:.1f} s)."
    )
    return detector


def train_stage(out_dir, minutes):
    """Trains a tiny YOLOR on the synthetic dataset and evaluates it."""
    import keras

    from yolor_keras.data.synthetic import generate_dataset
    from yolor_keras.training.recipe import recipe_from_dict
    from yolor_keras.training.trainer import train

    _header(f"2. Training a tiny YOLOR on synthetic shapes with model.fit (~{minutes} min)")
    data_dir = os.path.join(out_dir, "synthetic")
    if not os.path.isfile(os.path.join(data_dir, "annotations", "instances_val.json")):
        generate_dataset(data_dir, **DEMO_DATA)
    recipe = recipe_from_dict(DEMO_RECIPE, source="yolor_keras.demo.DEMO_RECIPE")
    start = time.perf_counter()
    result = train(
        data_dir,
        out_dir=os.path.join(out_dir, "run"),
        recipe=recipe,
        time_limit_minutes=minutes,
        exist_ok=True,  # a rerun of the demo trains afresh in its own folder
        verbose=1,
        **DEMO_MODEL,
    )
    elapsed = (time.perf_counter() - start) / 60
    metrics = result.metrics or {}
    epochs = len(result.history.history.get("loss", []))
    print(
        f"Trained {epochs} epochs in {elapsed:.1f} min: mAP@.5:.95 {metrics.get('mAP', float('nan')):.3f}, "
        f"mAP@.5 {metrics.get('mAP50', float('nan')):.3f}. Saved {result.model_path}."
    )
    keras.utils.clear_session()
    return result.model_path, data_dir


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", help="an official yolor_p6 checkpoint to convert")
    parser.add_argument("--out", default="demo_output")
    parser.add_argument("--minutes", type=float, default=8.0, help="training time budget")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-deploy", action="store_true")
    parser.add_argument("--verbose", action="store_true", help="show TensorFlow's log lines")
    args = parser.parse_args(argv)
    quiet_native_logs(verbose=args.verbose)
    os.makedirs(args.out, exist_ok=True)

    model_stage(args.weights)
    if args.skip_train:
        return 0
    model_path, data_dir = train_stage(args.out, args.minutes)
    if not args.skip_deploy:
        from yolor_keras.demo_deploy import deploy_stage

        deploy_stage(model_path, data_dir, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
