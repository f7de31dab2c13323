"""Forward mode: each operator's jvp, the tangent of its outputs given its inputs' tangents.

``autograd.py`` binds each rule as its Function's ``jvp``, so forward-mode AD (``torch.autograd.forward_ad``,
``torch.func.jvp``) and forward-over-reverse (``torch.func.hessian``) reach it. A rule reads what its
Function's ``setup_context`` saved with ``save_for_forward`` (``ctx.saved_tensors``) and ``ctx.conf``,
the operator's non-tensor arguments. Tangents are computed with the operators themselves, so they are
differentiable in turn. The helpers at the top serve the backward rules too.
"""

import torch

from ._library import ops as _ops


def sum_terms(terms):
    """The sum of the terms that are not None (None when all are)."""
    terms = [t for t in terms if t is not None]
    return sum(terms[1:], terms[0]) if terms else None


def gather_at(values, indices):
    """values (N, C, H, W) read at each output's flat index into its plane: max pooling's derivative."""
    flat = values.reshape(*values.shape[:2], -1)
    return flat.gather(2, indices.reshape(*indices.shape[:2], -1)).view(indices.shape)


def _or_zeros(tangent, like):
    return tangent if tangent is not None else torch.zeros_like(like)


# --------------------------------------------------------------------------------------------- conv2d
def conv_tangent(input, weight, d_input, d_weight, d_bias, conf, out_shape):
    """conv is bilinear in (input, weight) and affine in bias: its tangent is
    conv(d_input, weight) + conv(input, d_weight) + d_bias."""
    tangent = sum_terms(
        [
            _ops.conv2d_forward(d_input, weight, None, *conf) if d_input is not None else None,
            _ops.conv2d_forward(input, d_weight, None, *conf) if d_weight is not None else None,
        ]
    )
    if d_bias is None:
        return tangent
    d_bias = d_bias.view(1, -1, 1, 1)
    return tangent + d_bias if tangent is not None else d_bias.expand(out_shape).clone()


def conv2d_jvp(ctx, d_input, d_weight, d_bias, *_):
    """conv2d_forward's; saved: input, weight."""
    input, weight = ctx.saved_tensors
    return conv_tangent(input, weight, d_input, d_weight, d_bias, ctx.conf, ctx.out_shape)


def conv2d_backward_jvp(ctx, d_grad, d_input, d_weight, *_):
    """conv2d_backward's, which is linear in each of (grad, input, weight): with gi = Jx(W)^T g,
    gW = Jw(x)^T g and gb = sum(g), d gi = Jx(W)^T dg + Jx(dW)^T g, d gW = Jw(x)^T dg + Jw(dx)^T g,
    d gb = sum(dg). Saved: grad, input, weight; ctx.mask, the gradients the backward computes."""
    grad, input, weight = ctx.saved_tensors
    conf, (want_input, want_weight, want_bias) = ctx.conf, ctx.mask
    from_grad = [None] * 3
    if d_grad is not None:
        from_grad = _ops.conv2d_backward(d_grad, input, weight, *conf, ctx.mask)
    from_weight = from_input = None
    if want_input and d_weight is not None:
        from_weight = _ops.conv2d_backward(grad, input, d_weight, *conf, [True, False, False])[0]
    if want_weight and d_input is not None:
        from_input = _ops.conv2d_backward(grad, d_input, weight, *conf, [False, True, False])[1]
    # an output whose tangent has no term is a zero tangent, not None: the output exists
    return (
        _or_zeros(sum_terms([from_grad[0], from_weight]), input) if want_input else None,
        _or_zeros(sum_terms([from_grad[1], from_input]), weight) if want_weight else None,
        _or_zeros(from_grad[2], weight.new_empty(weight.shape[:1])) if want_bias else None,
    )


# -------------------------------------------------------------------------------------------- pooling
def max_pool2d_jvp(ctx, d_input, *_):
    """max_pool2d_forward's: the input's tangent at each output's index (the indices have none). Saved:
    the indices."""
    (indices,) = ctx.saved_tensors
    return gather_at(d_input, indices), None


def max_pool2d_values_indices(ctx):
    """The values-only forward's saved input, and its indices found again (that forward keeps none)."""
    (input,) = ctx.saved_tensors
    return input, _ops.max_pool2d_forward(input.detach(), *ctx.conf)[1]


def max_pool2d_values_jvp(ctx, d_input, *_):
    """max_pool2d_forward_values': as max_pool2d_forward's. Saved: the input."""
    return gather_at(d_input, max_pool2d_values_indices(ctx)[1])


def max_pool2d_backward_jvp(ctx, d_grad, *_):
    """max_pool2d_backward's: linear in grad_output, so its own backward of grad_output's tangent; it
    does not depend on input's values. Saved: input, indices."""
    input, indices = ctx.saved_tensors
    if d_grad is None:
        return torch.zeros_like(input)
    return _ops.max_pool2d_backward(d_grad, input, indices, *ctx.conf)


def avg_pool2d_jvp(ctx, d_input, *_):
    """avg_pool2d_forward's: linear, so itself applied to the input's tangent."""
    return _ops.avg_pool2d_forward(d_input, *ctx.conf)


def avg_pool2d_backward_jvp(ctx, d_grad, *_):
    """avg_pool2d_backward's: linear in grad_output, so itself applied to its tangent. Saved: input (for
    its shape)."""
    (input,) = ctx.saved_tensors
    if d_grad is None:
        return torch.zeros_like(input)
    return _ops.avg_pool2d_backward(d_grad, input, *ctx.conf)


# ---------------------------------------------------------------------------- conv2d + sigmoid + avg-pool
def fused_jvp(ctx, d_input, d_weight, d_bias, *_):
    """The chain rule through the three: conv's tangent, times sigmoid's derivative a(1 - a), pooled.
    Saved: input, weight, the activation a."""
    input, weight, act = ctx.saved_tensors
    *conv_conf, pool = ctx.conf
    d_conv = conv_tangent(input, weight, d_input, d_weight, d_bias, conv_conf, act.shape)
    d_act = d_conv * act * (1 - act)
    return _ops.avg_pool2d_forward(d_act, pool, pool, [0, 0], False, True, None), None


def fused_backward_jvp(ctx, *tangents):
    raise RuntimeError(
        "forward-mode AD through the backward of lenet_ext.conv2d_sigmoid_avgpool2d (forward-over-reverse, "
        "as in torch.func.hessian) is not supported; use the unfused layers (lenet_ext.nn.Conv2d, "
        "torch.nn.Sigmoid, lenet_ext.nn.AvgPool2d), which support it"
    )
