"""Which heads a multi-task YOLOR has, and how each one models implicit knowledge.

The implicit-knowledge setting of a `YOLORMultiTask` is normalised here into
one explicit dict, ``{head: {"add": form, "multiply": form}}``, where a form
is one of `yolor_keras.layers.FORMS` or None (no implicit layer for that
use). ``"add"`` is the `ImplicitAdd` on the shared features entering the head
(feature alignment); ``"multiply"`` the `ImplicitMultiply` on its output
(prediction refinement).
"""

from yolor_keras.layers import FORMS

HEADS = ("detection", "classification", "embedding")
IMPLICIT_USES = ("add", "multiply")
# YOLOR's own choice, used wherever a setting does not say otherwise.
DEFAULT_FORM = "vector"


def normalize_heads(heads):
    """Checks a head selection and returns it in the canonical order of `HEADS`.

    Args:
        heads: a head name or a sequence of them.

    Returns:
        A tuple of head names, ordered as in `HEADS`.
    """
    if isinstance(heads, str):
        heads = [heads]
    heads = list(heads)
    unknown = sorted(set(heads) - set(HEADS))
    if unknown:
        raise ValueError(f"Unknown head(s) {unknown}; choose among {list(HEADS)}.")
    if not heads:
        raise ValueError(f"A multi-task model needs at least one head of {list(HEADS)}.")
    if len(set(heads)) != len(heads):
        raise ValueError(f"Heads are listed more than once: {heads}.")
    return tuple(head for head in HEADS if head in heads)


def _form(value, where):
    if value is None or value == "none":
        return None
    if value in FORMS:
        return value
    raise ValueError(
        f"{where}: an implicit form must be one of {list(FORMS)} or 'none'/None; got {value!r}."
    )


def _head_setting(value, head):
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(IMPLICIT_USES))
        if unknown:
            raise ValueError(
                f"implicit[{head!r}]: unknown key(s) {unknown}; expected {list(IMPLICIT_USES)}."
            )
        return {
            use: _form(value.get(use, DEFAULT_FORM), f"implicit[{head!r}][{use!r}]")
            for use in IMPLICIT_USES
        }
    form = _form(value, f"implicit[{head!r}]")
    return {use: form for use in IMPLICIT_USES}


def normalize_implicit(implicit, heads):
    """Expands an implicit-knowledge setting into ``{head: {"add": f, "multiply": f}}``.

    Args:
        implicit: one of
            - a form (``"vector"``, ``"network"``, ``"factorization"``) or
              None / ``"none"``: the same for every head and use;
            - a dict ``{head: setting}``, where a setting is a form or None,
              or a dict ``{"add": form, "multiply": form}``. Heads and uses
              left out get ``"vector"``; settings of heads that are not
              enabled are ignored.
        heads: the enabled heads (see `normalize_heads`).

    Returns:
        A plain dict over the enabled heads, in `HEADS` order.
    """
    heads = normalize_heads(heads)
    if isinstance(implicit, dict):
        unknown = sorted(set(implicit) - set(HEADS))
        if unknown:
            raise ValueError(
                f"implicit: unknown head(s) {unknown}; expected keys among {list(HEADS)}."
            )
        return {head: _head_setting(implicit.get(head, DEFAULT_FORM), head) for head in heads}
    return {head: _head_setting(implicit, head) for head in heads}


def normalize_loss_weights(loss_weights, heads):
    """``{head: weight}`` over the enabled heads; missing heads weigh 1.

    Args:
        loss_weights: None or a dict of non-negative numbers keyed by head.
        heads: the enabled heads.
    """
    heads = normalize_heads(heads)
    loss_weights = dict(loss_weights or {})
    unknown = sorted(set(loss_weights) - set(HEADS))
    if unknown:
        raise ValueError(f"loss_weights: unknown head(s) {unknown}; expected {list(HEADS)}.")
    weights = {}
    for head in heads:
        weight = loss_weights.get(head, 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
            raise ValueError(
                f"loss_weights[{head!r}] must be a non-negative number; got {weight!r}."
            )
        weights[head] = float(weight)
    return weights
