"""Training: the official optimizer, schedules, EMA, recipes and the fit loop."""

from yolor_keras.training.optimizer import YOLORSGD
from yolor_keras.training.optimizer import build_optimizer
from yolor_keras.training.schedules import YOLORLearningRate
from yolor_keras.training.schedules import YOLORMomentum

# Keras is loaded by now; make sure `.keras` files can find every class.
from yolor_keras import register_serializable_classes  # noqa: E402

register_serializable_classes(finished=__name__)
