"""Deploy-time folding of implicit vectors and BatchNorm into convolutions.

Both folds are exact algebra on the weights (NumPy in, NumPy out), so that at
inference the implicit layers and BatchNorm cost nothing.
"""

import numpy as np


def fold_implicit_conv1x1(kernel, bias, add_vector=None, mul_vector=None):
    """Folds `ImplicitAdd` a (before) and `ImplicitMultiply` m (after) into a 1x1 conv.

    The head computes ``m ⊙ (W (x + a) + b)``. With ``W' = W diag(m)`` and
    ``b' = m ⊙ (b + aᵀW)`` this equals ``W' x + b'`` exactly. ``aᵀW`` uses the
    unscaled W.

    Args:
        kernel: conv kernel of shape (1, 1, Cin, Cout).
        bias: conv bias of shape (Cout,), or None for no bias.
        add_vector: the (Cin,) vector added to the conv's input, or None.
        mul_vector: the (Cout,) vector multiplying the conv's output, or None.

    Returns:
        ``(kernel, bias)`` of the folded conv, float64 arithmetic cast back to
        the kernel's dtype.
    """
    kernel = np.asarray(kernel)
    if kernel.ndim != 4 or kernel.shape[:2] != (1, 1):
        raise ValueError(
            f"fold_implicit_conv1x1 needs a 1x1 kernel of shape (1, 1, Cin, Cout); "
            f"got {kernel.shape}. Larger kernels see zero padding at the border, "
            "so an input shift does not fold exactly."
        )
    cin, cout = kernel.shape[2:]
    weights = kernel.reshape(cin, cout).astype(np.float64)
    new_bias = np.zeros(cout) if bias is None else np.asarray(bias, np.float64)
    if new_bias.shape != (cout,):
        raise ValueError(f"bias must have shape ({cout},); got {new_bias.shape}.")
    if add_vector is not None:
        add_vector = np.asarray(add_vector, np.float64)
        if add_vector.shape != (cin,):
            raise ValueError(
                f"add_vector must have shape ({cin},) to match the kernel's input "
                f"channels; got {add_vector.shape}."
            )
        new_bias = new_bias + add_vector @ weights
    if mul_vector is not None:
        mul_vector = np.asarray(mul_vector, np.float64)
        if mul_vector.shape != (cout,):
            raise ValueError(
                f"mul_vector must have shape ({cout},) to match the kernel's output "
                f"channels; got {mul_vector.shape}."
            )
        weights = weights * mul_vector
        new_bias = new_bias * mul_vector
    dtype = kernel.dtype
    return weights.reshape(1, 1, cin, cout).astype(dtype), new_bias.astype(dtype)


def fold_batchnorm(kernel, bias, gamma, beta, moving_mean, moving_variance, epsilon):
    """Folds an inference-mode BatchNorm that follows a conv into the conv.

    ``BN(conv(x)) = s ⊙ (W x + b - mean) + beta`` with
    ``s = gamma / sqrt(var + eps)``, so ``W' = W diag(s)`` and
    ``b' = s ⊙ (b - mean) + beta``.

    Args:
        kernel: conv kernel (kh, kw, Cin, Cout) (or (kh, kw, C, 1) depthwise
            is not supported).
        bias: conv bias (Cout,) or None.
        gamma, beta, moving_mean, moving_variance: BN parameters, each (Cout,).
            ``gamma`` or ``beta`` may be None when the BN has no scale/center.
        epsilon: the BN's epsilon.

    Returns:
        ``(kernel, bias)`` of the equivalent conv.
    """
    kernel = np.asarray(kernel)
    cout = kernel.shape[-1]
    gamma = np.ones(cout) if gamma is None else np.asarray(gamma, np.float64)
    beta = np.zeros(cout) if beta is None else np.asarray(beta, np.float64)
    mean = np.asarray(moving_mean, np.float64)
    variance = np.asarray(moving_variance, np.float64)
    for name, value in (("gamma", gamma), ("beta", beta), ("mean", mean), ("variance", variance)):
        if value.shape != (cout,):
            raise ValueError(
                f"BatchNorm {name} must have shape ({cout},) to match the conv's "
                f"output channels; got {value.shape}."
            )
    scale = gamma / np.sqrt(variance + epsilon)
    conv_bias = np.zeros(cout) if bias is None else np.asarray(bias, np.float64)
    new_kernel = kernel.astype(np.float64) * scale
    new_bias = scale * (conv_bias - mean) + beta
    return new_kernel.astype(kernel.dtype), new_bias.astype(kernel.dtype)
