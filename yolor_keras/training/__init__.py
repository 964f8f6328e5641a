"""Training: the official optimizer, schedules, EMA, recipes and the fit loop."""

from yolor_keras.training.optimizer import YOLORSGD
from yolor_keras.training.optimizer import build_optimizer
from yolor_keras.training.schedules import YOLORLearningRate
from yolor_keras.training.schedules import YOLORMomentum
