"""The demo's deployment stage: export, serve, and draw detections.

Kept apart from `yolor_keras.demo` because it needs the `export` and
`serve` extras.
"""

import json
import os
import socket
import subprocess
import sys
import time

DEMO_IMAGE_SIZE = 256


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_server(url, process, timeout=180.0):
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"`yolor serve` exited with code {process.returncode}.")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(1.0)
    raise TimeoutError(f"The local server did not answer {url} within {timeout:.0f} s.")


def _draw(image_path, result):
    from PIL import Image
    from PIL import ImageDraw

    image = Image.open(image_path).convert("RGB")
    draw = ImageDraw.Draw(image)
    for box, name, score in zip(result["boxes"], result["class_names"], result["scores"]):
        draw.rectangle([float(v) for v in box], outline=(255, 40, 40), width=2)
        draw.text((float(box[0]) + 2, float(box[1]) + 1), f"{name} {score:.2f}", fill=(255, 255, 0))
    return image


def deploy_stage(model_path, data_dir, out_dir):
    """Exports the trained model to every format, serves it once, draws detections."""
    from PIL import Image

    from yolor_keras.export import export_onnx
    from yolor_keras.export import export_saved_model
    from yolor_keras.export import export_tflite
    from yolor_keras.export import serving_directory
    from yolor_keras.inference import Predictor
    from yolor_keras.inference import load_detector
    from yolor_keras.serving.client import Client

    print(f"\n{'=' * 78}\n3. Deployment: fold, export, serve, detect\n{'=' * 78}", flush=True)
    detector = load_detector(model_path)
    names = detector.class_names
    val_dir = os.path.join(data_dir, "val")
    held_out = sorted(os.path.join(val_dir, f) for f in os.listdir(val_dir))[:6]
    export_root = os.path.join(out_dir, "saved_models")
    saved_model_dir = serving_directory(export_root, "yolor_demo", 1)
    export_saved_model(
        detector, saved_model_dir, image_size=DEMO_IMAGE_SIZE, class_names=names, overwrite=True
    )
    print(f"SavedModel (TF Serving layout): {saved_model_dir}")
    for quantize in ("none", "fp16", "int8"):
        path = os.path.join(out_dir, f"yolor_demo_{quantize}.tflite")
        export_tflite(
            detector,
            path,
            image_size=DEMO_IMAGE_SIZE,
            quantize=quantize,
            representative_images=val_dir if quantize == "int8" else None,
        )
        print(f"TFLite {quantize:>4}: {path} ({os.path.getsize(path) / 1e6:.1f} MB)")
    onnx_path = os.path.join(out_dir, "yolor_demo.onnx")
    export_onnx(detector, onnx_path, image_size=DEMO_IMAGE_SIZE, nms=True)
    print(f"ONNX with NMS: {onnx_path} ({os.path.getsize(onnx_path) / 1e6:.1f} MB)")

    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "yolor_keras.cli",
            "serve",
            export_root,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_for_server(f"{url}/v1/models/yolor_demo", server)
        [served] = Client(url, "yolor_demo", class_names=names).predict([held_out[0]])
        print(
            f"Served by `yolor serve` on {url}: {len(served['boxes'])} detections for {os.path.basename(held_out[0])}."
        )
    finally:
        server.terminate()
        server.wait(timeout=30)

    predictor = Predictor(detector, class_names=names, image_size=DEMO_IMAGE_SIZE)
    results = predictor.predict(held_out)
    tiles = [_draw(path, result) for path, result in zip(held_out, results)]
    width, height = sum(t.width for t in tiles), max(t.height for t in tiles)
    canvas = Image.new("RGB", (width, height))
    x = 0
    for tile in tiles:
        canvas.paste(tile, (x, 0))
        x += tile.width
    picture = os.path.join(out_dir, "detections.png")
    canvas.save(picture)
    with open(os.path.join(out_dir, "detections.json"), "w", encoding="utf-8") as handle:
        json.dump(
            [
                {
                    "image": os.path.basename(p),
                    "boxes": r["boxes"].tolist(),
                    "scores": r["scores"].tolist(),
                    "class_names": r["class_names"],
                }
                for p, r in zip(held_out, results)
            ],
            handle,
            indent=1,
        )
    print(f"Detections on {len(held_out)} held-out images drawn in {picture}.")
