"""Serving exported detectors: a TF Serving client and a TF-Serving-compatible server.

The server (`yolor serve`, `yolor_keras.serving.server.serve`) needs the
``serve`` extra (KServe); it is imported lazily.
"""

from yolor_keras.serving.client import Client
from yolor_keras.serving.client import ServingError

__all__ = ["Client", "ServingError"]
