"""Training: the official optimizer, schedules, EMA, recipes and the fit loop."""

from yolor_keras.lazy_exports import lazy_getattr

_EXPORTS = {
    "build_optimizer": "optimizer",
    "YOLORLearningRate": "schedules",
    "YOLORMomentum": "schedules",
    "YOLORSGD": "optimizer",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
