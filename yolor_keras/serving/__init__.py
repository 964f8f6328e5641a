"""Serving exported detectors: a TF Serving client and a TF-Serving-compatible server.

The server (`yolor serve`, `yolor_keras.serving.server.serve`) needs the
``serve`` extra (KServe); it is imported lazily.
"""

from yolor_keras.lazy_exports import lazy_getattr

_EXPORTS = {
    "Client": "client",
    "ServingError": "client",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
