"""The task heads of `YOLORMultiTask`, each with its own implicit knowledge.

Every head reads the neck's shared pyramid features and follows YOLOR's
pattern: an `ImplicitAdd` aligns the shared features to the task, a linear
map predicts, and an `ImplicitMultiply` refines the prediction. Both implicit
layers sit right next to a linear layer, so in the deploy form they fold
exactly into it (``fold_steps`` lists how) and cost nothing at inference.

* detection: the YOLOR head of `YOLORHead`, per level conv3x3 + BN + SiLU ->
  ImplicitAdd -> 1x1 conv -> ImplicitMultiply, with the official layer names.
* classification and embedding: average- and max-pooled levels, concatenated
  -> ImplicitAdd -> Dense + SiLU -> Dense -> ImplicitMultiply (and, for the
  embedding, L2 normalisation). Per channel, both poolings commute with
  adding a constant, so an ImplicitAdd on the feature maps is one on the
  pooled vector; this one is slightly more general (the average- and
  max-pooled entries of a channel get their own shifts).

Network and factorization implicit layers are rescaled at creation so that
they learn at the vector form's pace (`balance_implicit_learning_rate`).
"""

import math

import keras

from yolor_keras.layers import ImplicitAdd
from yolor_keras.layers import ImplicitMultiply
from yolor_keras.layers import AnchorSplit
from yolor_keras.models import keras_name
from yolor_keras.models.graph_builder import build_nodes
from yolor_keras.models.graph_builder import fold_steps
from yolor_keras.models.yolor_head import prior_bias

# Fold step of a linear layer (1x1 conv or Dense) with optional implicit
# layers around it: ("implicit_linear", layer, implicit_add or None,
# implicit_multiply or None).
IMPLICIT_LINEAR = "implicit_linear"


def _implicit(layer_class, form, name, inputs):
    """Applies a new implicit layer and balances its learning rate (see below)."""
    layer = layer_class(form=form, name=name)
    outputs = layer(inputs)
    balance_implicit_learning_rate(layer)
    return outputs


def balance_implicit_learning_rate(layer):
    """Rescales a network/factorization implicit layer so it learns like a vector.

    Those forms produce ``z = z0 W`` (or ``c Z``) with ``z0`` starting at
    ones of size d. A gradient step then changes z by about ``lr * |z0|^2 *
    dL/dz = lr * d * dL/dz``: d times (64 for the network form) the step of
    the plain vector, which makes YOLOR's learning rate diverge within the
    first epoch. Dividing ``z0`` by sqrt(d) and multiplying ``W`` by sqrt(d)
    leaves z unchanged and brings the step back to the vector form's.

    Args:
        layer: a built `ImplicitKnowledge` layer; vector forms are left as is.
    """
    if layer.form == "network":
        coefficients, matrix = layer.prior, layer.projection
    elif layer.form == "factorization":
        coefficients, matrix = layer.coefficients, layer.basis
    else:
        return
    scale = math.sqrt(coefficients.shape[0])
    coefficients.assign(coefficients / scale)
    matrix.assign(matrix * scale)


def _pooled_names(head):
    return {
        "add": f"{head}_implicit_add",
        "hidden": f"{head}_hidden",
        "output": f"{head}_output",
        "multiply": f"{head}_implicit_multiply",
    }


def build_detection_head(plan, features, implicit, deploy=False):
    """Builds the detection head on the neck's features.

    Args:
        plan: the model's `GraphPlan`.
        features: dict of level name -> neck output tensor.
        implicit: ``{"add": form or None, "multiply": form or None}``.
        deploy: build the deploy form (no BatchNorm, no implicit layers).

    Returns:
        A list of raw ``(batch, H, W, A, 5 + C)`` tensors, stride ascending.
    """
    outputs = []
    for level in plan.head_levels:
        tensors = build_nodes(
            [level.conv],
            {level.input_id: features[level.level]},
            bn_epsilon=plan.bn_epsilon,
            deploy=deploy,
        )
        x = tensors[level.conv["id"]]
        if implicit["add"] and not deploy:
            x = _implicit(ImplicitAdd, implicit["add"], keras_name(level.implicit_add_name), x)
        conv = keras.layers.Conv2D(
            plan.num_anchors * plan.outputs_per_anchor,
            1,
            use_bias=True,
            name=keras_name(level.output_conv_name),
        )
        x = conv(x)
        # The official prior: objectness and class scores start near their
        # expected rates, which keeps the first training steps stable.
        conv.bias.assign(prior_bias(plan.num_anchors, plan.num_classes, level.stride))
        if implicit["multiply"] and not deploy:
            x = _implicit(
                ImplicitMultiply, implicit["multiply"], keras_name(level.implicit_multiply_name), x
            )
        outputs.append(AnchorSplit(plan.num_anchors, name=f"{level.level}_raw")(x))
    return outputs


def detection_fold_steps(plan, implicit):
    """How the deploy detection head's weights derive from the training form.

    Returns:
        `graph_builder.fold_steps` for each level's 3x3 conv, then an
        `IMPLICIT_LINEAR` step for its 1x1 prediction conv.
    """
    steps = []
    for level in plan.head_levels:
        steps.extend(fold_steps([level.conv]))
        steps.append(
            (
                IMPLICIT_LINEAR,
                level.output_conv_name,
                level.implicit_add_name if implicit["add"] else None,
                level.implicit_multiply_name if implicit["multiply"] else None,
            )
        )
    return steps


def build_pooled_head(head, features, units, hidden_units, implicit, normalize, deploy=False):
    """Builds a global head (classification or embedding) on the neck's features.

    Args:
        head: the head's name, used as prefix of its layer names.
        features: dict of level name -> neck output tensor.
        units: output width (labels, or embedding dimension).
        hidden_units: width of the hidden Dense layer.
        implicit: ``{"add": form or None, "multiply": form or None}``.
        normalize: L2-normalise the output (embeddings).
        deploy: build the deploy form (no implicit layers).

    Returns:
        The ``(batch, units)`` output tensor.
    """
    names = _pooled_names(head)
    pooled = []
    for level, tensor in features.items():
        pooled.append(keras.layers.GlobalAveragePooling2D(name=f"{head}_avg_pool_{level}")(tensor))
        # Max pooling keeps small objects visible, which averaging dilutes.
        pooled.append(keras.layers.GlobalMaxPooling2D(name=f"{head}_max_pool_{level}")(tensor))
    x = keras.layers.Concatenate(name=f"{head}_pooled")(pooled)
    if implicit["add"] and not deploy:
        x = _implicit(ImplicitAdd, implicit["add"], names["add"], x)
    x = keras.layers.Dense(hidden_units, activation="silu", name=names["hidden"])(x)
    x = keras.layers.Dense(units, name=names["output"])(x)
    if implicit["multiply"] and not deploy:
        x = _implicit(ImplicitMultiply, implicit["multiply"], names["multiply"], x)
    if normalize:
        x = keras.layers.UnitNormalization(name=f"{head}_l2_normalize")(x)
    return x


def pooled_fold_steps(head, implicit):
    """Fold steps of `build_pooled_head`: the add folds into the hidden Dense,
    the multiply into the output Dense."""
    names = _pooled_names(head)
    return [
        (IMPLICIT_LINEAR, names["hidden"], names["add"] if implicit["add"] else None, None),
        (
            IMPLICIT_LINEAR,
            names["output"],
            None,
            names["multiply"] if implicit["multiply"] else None,
        ),
    ]
