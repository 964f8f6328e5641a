"""Packaging for yolor-keras."""

import os
import pathlib

from setuptools import find_packages
from setuptools import setup

HERE = pathlib.Path(__file__).parent

# The TensorFlow distribution to depend on. The CPU build is the default (it
# is what CI and most notebook/serving hosts use); on a CUDA machine install
# with YOLOR_KERAS_TF="tensorflow[and-cuda]" so that pip does not put the CPU
# build next to the GPU one.
TENSORFLOW = os.environ.get("YOLOR_KERAS_TF", "tensorflow-cpu")

EXTRAS = {
    # Reading official checkpoints needs no torch (the archive is parsed
    # directly); the extra stays so that `pip install yolor-keras[convert]`
    # keeps working.
    "convert": [],
    "export": [
        "tf2onnx>=1.17,<1.18",
        "onnx>=1.17",
        "onnxruntime>=1.20",
        "ai-edge-litert>=2.3,<2.4",
    ],
    "eval": ["faster-coco-eval>=1.8,<1.9", "pycocotools>=2.0.8,<2.1"],
    # tensorflow-serving-api is installed separately with --no-deps (see the
    # Makefile): its own requirement pulls the full GPU tensorflow wheel.
    "serve": ["kserve>=0.21,<0.22", "requests>=2.31", "grpcio>=1.60", "fastapi>=0.110"],
    "datasets": ["tensorflow-datasets>=4.9.10,<4.10"],
}
EXTRAS["dev"] = [
    # The tests build hostile checkpoints and compare with torch.load. Any
    # recent torch works; constraints.txt pins the CPU build.
    "torch>=2.1",
    "pytest>=8",
    "pytest-timeout>=2.3",
    # Two workers: most of the suite's time is tracing, export and subprocess
    # start-up, which overlap well even on 2 cores.
    "pytest-xdist>=3.5,<4",
    "nbmake>=1.5,<1.6",
    "jax>=0.10",
    # `make test` checks formatting and lint first (ruff.toml).
    "ruff>=0.17,<0.18",
]
EXTRAS["all"] = sorted({req for reqs in EXTRAS.values() for req in reqs})

setup(
    name="yolor-keras",
    version="0.1.0",
    description=(
        "YOLOR (You Only Learn One Representation) in Keras 3: implicit knowledge, "
        "the official model family, training with model.fit, and deployment."
    ),
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10,<3.14",
    packages=find_packages(include=["yolor_keras", "yolor_keras.*"]),
    package_data={"yolor_keras": ["assets/*"]},
    install_requires=[
        f"{TENSORFLOW}>=2.21,<2.22",
        "keras>=3.15,<3.16",
        "numpy>=1.26,<3",
        "pyyaml>=6",
        "pillow>=10",
        "tqdm>=4.66",
        # Registers the Keras classes when Keras is imported, not before.
        "wrapt>=1.14",
    ],
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["yolor=yolor_keras.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Framework :: Keras",
        "Topic :: Scientific/Engineering :: Image Recognition",
    ],
)
