"""The task heads of `YOLORObjectDetector`, each with its own implicit knowledge.

Every head reads the backbone's shared pyramid features and follows YOLOR's
pattern: an `ImplicitAdd` aligns the shared features to the task, a linear
map predicts, and an `ImplicitMultiply` refines the prediction. Both implicit
layers sit right next to a linear layer, so the deploy form folds them
exactly into it (``fold_steps`` lists how) and they cost nothing at inference.

* `DetectionHead`: per level conv3x3 + BN + SiLU -> ImplicitAdd -> 1x1 conv
  -> ImplicitMultiply, with the official layer names, so official
  checkpoints map by name.
* `ClassificationHead` and `EmbeddingHead`: average- and max-pooled levels,
  concatenated -> ImplicitAdd -> Dense + SiLU -> Dense -> ImplicitMultiply
  (and, for the embedding, L2 normalisation). Per channel, both poolings
  commute with adding a constant, so an ImplicitAdd on the feature maps is one
  on the pooled vector; this one is slightly more general (the average- and
  max-pooled entries of a channel get their own shifts).

A head is a small description (its settings and ``get_config``); ``build``
adds its layers to the task's functional graph.
"""

import math

import keras
import numpy as np

from yolor_keras.layers import FORMS
from yolor_keras.layers import AnchorSplit
from yolor_keras.layers import ImplicitAdd
from yolor_keras.layers import ImplicitMultiply
from yolor_keras.models.graph_builder import build_nodes
from yolor_keras.models.graph_builder import fold_steps
from yolor_keras.models.graph_builder import torch_conv_initializers
from yolor_keras.models.graph_plan import keras_name

# Head names, in the order the task lists its outputs.
HEADS = ("detection", "classification", "embedding")
IMPLICIT_USES = ("add", "multiply")
# Fold step of a linear layer (1x1 conv or Dense) with optional implicit
# layers around it: ("implicit_linear", layer, implicit_add or None,
# implicit_multiply or None).
IMPLICIT_LINEAR = "implicit_linear"


def normalize_implicit(implicit, where="implicit"):
    """Expands an implicit-knowledge setting into ``{"add": form, "multiply": form}``.

    Args:
        implicit: a form (``"vector"``, ``"network"``, ``"factorization"``),
            None / ``"none"`` (no implicit layer), or a dict ``{"add": form,
            "multiply": form}`` (a use left out gets ``"vector"``).
        where: the field named in errors.
    """
    if isinstance(implicit, dict):
        unknown = sorted(set(implicit) - set(IMPLICIT_USES))
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; expected {list(IMPLICIT_USES)}.")
        return {
            use: _form(implicit.get(use, "vector"), f"{where}[{use!r}]") for use in IMPLICIT_USES
        }
    form = _form(implicit, where)
    return {use: form for use in IMPLICIT_USES}


def _form(value, where):
    if value is None or value == "none":
        return None
    if value in FORMS:
        return value
    raise ValueError(
        f"{where}: an implicit form must be one of {list(FORMS)} or 'none'/None; got {value!r}."
    )


def _positive_int(name, value):
    if isinstance(value, bool) or int(value) != value or int(value) < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    return int(value)


def prior_bias(num_anchors, num_classes, stride):
    """The official initial bias of a level's prediction conv (RetinaNet-style).

    Objectness starts near 8 objects per 640x640 image and class scores near
    1 / num_classes, which keeps the first training steps stable. The
    official code adds it to the conv's randomly initialised bias.
    """
    bias = np.zeros((num_anchors, 5 + num_classes), "float32")
    bias[:, 4] += math.log(8 / (640 / stride) ** 2)
    bias[:, 5:] += math.log(0.6 / (num_classes - 0.99))
    return bias.reshape(-1)


@keras.saving.register_keras_serializable(package="yolor_keras")
class DetectionHead:
    """YOLOR's detection head, one branch per pyramid level.

    Its output is a list of raw tensors ``(batch, H / s, W / s, A, 5 + C)``,
    stride ascending, with pre-sigmoid ``[x, y, w, h, obj, cls...]``; the
    task decodes them (``task.decode``) and its prediction decoder runs NMS.

    Args:
        num_classes: number of object classes.
        implicit: the head's implicit knowledge (see `normalize_implicit`);
            the official model uses ``"vector"``.
    """

    name = "detection"

    def __init__(self, num_classes=80, implicit="vector"):
        self.num_classes = _positive_int("num_classes", num_classes)
        self.implicit = normalize_implicit(implicit, "DetectionHead implicit")

    def build(self, plan, features, deploy=False):
        outputs = []
        for level in plan.head_levels:
            tensors = build_nodes(
                [level.conv],
                {level.input_id: features[level.level]},
                bn_epsilon=plan.bn_epsilon,
                deploy=deploy,
            )
            x = tensors[level.conv["id"]]
            if self.implicit["add"] and not deploy:
                x = ImplicitAdd(
                    form=self.implicit["add"], name=keras_name(level.implicit_add_name)
                )(x)
            kernel_initializer, bias_initializer = torch_conv_initializers(1, x.shape[-1])
            conv = keras.layers.Conv2D(
                plan.num_anchors * plan.outputs_per_anchor,
                1,
                use_bias=True,
                kernel_initializer=kernel_initializer,
                bias_initializer=bias_initializer,
                name=keras_name(level.output_conv_name),
            )
            x = conv(x)
            # Both official branches add the prior to the conv's default
            # (random uniform) bias rather than replacing it.
            conv.bias.assign(
                np.asarray(conv.bias) + prior_bias(plan.num_anchors, plan.num_classes, level.stride)
            )
            if self.implicit["multiply"] and not deploy:
                x = ImplicitMultiply(
                    form=self.implicit["multiply"], name=keras_name(level.implicit_multiply_name)
                )(x)
            outputs.append(AnchorSplit(plan.num_anchors, name=f"{level.level}_raw")(x))
        return outputs

    def layer_names(self, plan):
        names = set()
        for level in plan.head_levels:
            conv = level.conv
            names.update(
                keras_name(path)
                for path in (conv["conv_name"], conv["bn_name"], conv["act_name"])
                if path
            )
            names.add(keras_name(level.output_conv_name))
            if self.implicit["add"]:
                names.add(keras_name(level.implicit_add_name))
            if self.implicit["multiply"]:
                names.add(keras_name(level.implicit_multiply_name))
            names.add(f"{level.level}_raw")
        return names

    def fold_steps(self, plan):
        """`graph_builder.fold_steps` for each level's 3x3 conv, then an
        `IMPLICIT_LINEAR` step for its 1x1 prediction conv."""
        steps = []
        for level in plan.head_levels:
            steps.extend(fold_steps([level.conv]))
            steps.append(
                (
                    IMPLICIT_LINEAR,
                    level.output_conv_name,
                    level.implicit_add_name if self.implicit["add"] else None,
                    level.implicit_multiply_name if self.implicit["multiply"] else None,
                )
            )
        return steps

    def get_config(self):
        return {"num_classes": self.num_classes, "implicit": dict(self.implicit)}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


class PooledHead:
    """A global head on the pooled pyramid: classification or embedding.

    Args:
        units: output width (labels, or embedding dimension).
        hidden_units: width of the hidden Dense layer.
        implicit: the head's implicit knowledge (see `normalize_implicit`).
    """

    name = None
    normalize = False

    def __init__(self, units, hidden_units=256, implicit="vector"):
        self.units = _positive_int(f"{self.name} units", units)
        self.hidden_units = _positive_int("hidden_units", hidden_units)
        self.implicit = normalize_implicit(implicit, f"{type(self).__name__} implicit")

    def _names(self):
        return {
            "add": f"{self.name}_implicit_add",
            "hidden": f"{self.name}_hidden",
            "output": f"{self.name}_output",
            "multiply": f"{self.name}_implicit_multiply",
        }

    def build(self, plan, features, deploy=False):
        names = self._names()
        pooled = []
        for level, tensor in features.items():
            pooled.append(
                keras.layers.GlobalAveragePooling2D(name=f"{self.name}_avg_pool_{level}")(tensor)
            )
            # Max pooling keeps small objects visible, which averaging dilutes.
            pooled.append(
                keras.layers.GlobalMaxPooling2D(name=f"{self.name}_max_pool_{level}")(tensor)
            )
        x = keras.layers.Concatenate(name=f"{self.name}_pooled")(pooled)
        if self.implicit["add"] and not deploy:
            x = ImplicitAdd(form=self.implicit["add"], name=names["add"])(x)
        x = keras.layers.Dense(self.hidden_units, activation="silu", name=names["hidden"])(x)
        x = keras.layers.Dense(self.units, name=names["output"])(x)
        if self.implicit["multiply"] and not deploy:
            x = ImplicitMultiply(form=self.implicit["multiply"], name=names["multiply"])(x)
        if self.normalize:
            x = keras.layers.UnitNormalization(name=f"{self.name}_l2_normalize")(x)
        return x

    def layer_names(self, plan):
        return None  # every layer whose name starts with the head's

    def fold_steps(self, plan):
        """The add folds into the hidden Dense, the multiply into the output Dense."""
        names = self._names()
        return [
            (
                IMPLICIT_LINEAR,
                names["hidden"],
                names["add"] if self.implicit["add"] else None,
                None,
            ),
            (
                IMPLICIT_LINEAR,
                names["output"],
                None,
                names["multiply"] if self.implicit["multiply"] else None,
            ),
        ]


@keras.saving.register_keras_serializable(package="yolor_keras")
class ClassificationHead(PooledHead):
    """Multi-label image classification: ``(batch, num_labels)`` logits.

    Args:
        num_labels: number of labels.
        hidden_units: width of the hidden Dense layer.
        implicit: the head's implicit knowledge (see `normalize_implicit`).
    """

    name = "classification"

    def __init__(self, num_labels, hidden_units=256, implicit="vector"):
        super().__init__(num_labels, hidden_units, implicit)

    @property
    def num_labels(self):
        return self.units

    def get_config(self):
        return {
            "num_labels": self.units,
            "hidden_units": self.hidden_units,
            "implicit": dict(self.implicit),
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="yolor_keras")
class EmbeddingHead(PooledHead):
    """An image embedding: ``(batch, embedding_dim)`` L2-normalised vectors.

    Args:
        embedding_dim: size of the embedding.
        hidden_units: width of the hidden Dense layer.
        implicit: the head's implicit knowledge (see `normalize_implicit`).
    """

    name = "embedding"
    normalize = True

    def __init__(self, embedding_dim=128, hidden_units=256, implicit="vector"):
        super().__init__(embedding_dim, hidden_units, implicit)

    @property
    def embedding_dim(self):
        return self.units

    def get_config(self):
        return {
            "embedding_dim": self.units,
            "hidden_units": self.hidden_units,
            "implicit": dict(self.implicit),
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def normalize_heads(heads):
    """Checks a head list and returns it as a tuple in the order of `HEADS`.

    Args:
        heads: a head, or a list of heads (`DetectionHead`,
            `ClassificationHead`, `EmbeddingHead`), at most one of each.
    """
    if isinstance(heads, (DetectionHead, PooledHead)):
        heads = [heads]
    heads = list(heads)
    for head in heads:
        if not isinstance(head, (DetectionHead, PooledHead)):
            raise ValueError(
                "`heads` must hold DetectionHead, ClassificationHead or EmbeddingHead "
                f"objects; got {type(head).__name__}."
            )
    names = [head.name for head in heads]
    if not names:
        raise ValueError(f"A task needs at least one head of {list(HEADS)}.")
    if len(set(names)) != len(names):
        raise ValueError(f"Heads are listed more than once: {names}.")
    return tuple(sorted(heads, key=lambda head: HEADS.index(head.name)))
