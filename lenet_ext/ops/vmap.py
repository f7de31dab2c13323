"""``torch.func.vmap`` rules for every operator: fold the vmapped dimension into the batch (or, for a
vmapped convolution weight, into the groups) and run the operator once, where torch's generic
fallback would run it once per slice.
"""

import torch

from ._library import lib as _lib
from ._library import ops as _ops


def _register_vmap(name, per_sample=()):
    """A vmap rule. When only the arguments at positions ``per_sample`` (tensors whose dim 0 is the
    batch, each element computed on its own) are vmapped, the vmapped dimension folds into the batch and
    the operator runs once. Otherwise it runs once per slice of the vmapped dimension (torch's generic
    fallback would too, but it cannot return the backwards' optional tensors)."""
    op = getattr(_ops, name).default

    def rule(info, in_dims, *args):
        tensors = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
        if per_sample and all(in_dims[i] is None for i in tensors if i not in per_sample):
            return _folded(op, info.batch_size, per_sample, in_dims, args)
        results = [op(*(_slice(a, d, i) for a, d in zip(args, in_dims))) for i in range(info.batch_size)]
        if not isinstance(results[0], tuple):
            return torch.stack(results), 0
        stacked = tuple(None if r[0] is None else torch.stack(r) for r in zip(*results))
        return stacked, tuple(None if s is None else 0 for s in stacked)

    torch.library.register_vmap(op, rule, lib=_lib)


def _slice(arg, dim, i):
    return arg.select(dim, i) if isinstance(arg, torch.Tensor) and dim is not None else arg


def _folded(op, vmapped, per_sample, in_dims, args):
    args = list(args)
    for i in per_sample:
        a, dim = args[i], in_dims[i]
        a = a.expand(vmapped, *a.shape) if dim is None else a.movedim(dim, 0)
        batch = a.shape[1]
        args[i] = a.flatten(0, 1)
    results = op(*args)
    if not isinstance(results, tuple):
        return results.unflatten(0, (vmapped, batch)), 0
    return tuple(r.unflatten(0, (vmapped, batch)) for r in results), (0,) * len(results)


def _as_groups(t, dim, vmapped, channel_dim):
    """A vmapped tensor with the vmapped dimension (unbatched: repeated) folded into its channel
    dimension, vmapped-index major: (B, N, C, H, W) -> (N, B*C, H, W), (B, O, ...) -> (B*O, ...)."""
    t = t.expand(vmapped, *t.shape) if dim is None else t.movedim(dim, 0)
    return t.movedim(0, channel_dim).flatten(channel_dim, channel_dim + 1)


def _conv2d_vmap(info, in_dims, input, weight, bias, stride, padding, dilation, groups):
    """A vmapped weight or bias: one convolution with B times the groups, as in torch's own batching
    rule for convolution. Group b * groups + g of it reads input b's channels of group g."""
    vmapped = info.batch_size
    if in_dims[1] is None and in_dims[2] is None:  # only the input: its vmapped dimension folds into the batch
        args = (input, weight, bias, stride, padding, dilation, groups)
        return _folded(_ops.conv2d_forward.default, vmapped, (0,), in_dims, args)
    x, w = _as_groups(input, in_dims[0], vmapped, 1), _as_groups(weight, in_dims[1], vmapped, 0)
    b = _as_groups(bias, in_dims[2], vmapped, 0) if bias is not None else None
    out = _ops.conv2d_forward(x, w, b, stride, padding, dilation, groups * vmapped)
    return _unfold_groups(out, 1, vmapped), 1


def _conv2d_backward_vmap(info, in_dims, grad, input, weight, stride, padding, dilation, groups, mask):
    """The backward of that grouped convolution: every gradient in one call, however the arguments are
    vmapped (per-sample gradients included)."""
    vmapped = info.batch_size
    g, x = _as_groups(grad, in_dims[0], vmapped, 1), _as_groups(input, in_dims[1], vmapped, 1)
    w = _as_groups(weight, in_dims[2], vmapped, 0)
    grads = _ops.conv2d_backward(g, x, w, stride, padding, dilation, groups * vmapped, mask)
    dims = (1, 0, 0)  # the input gradient is (N, B*C, H, W); the weight's (B*O, ...) and the bias's (B*O)
    return (
        tuple(_unfold_groups(t, d, vmapped) if t is not None else None for t, d in zip(grads, dims)),
        tuple(d if t is not None else None for t, d in zip(grads, dims)),
    )


def _unfold_groups(t, dim, vmapped):
    return t.unflatten(dim, (vmapped, t.shape[dim] // vmapped))


torch.library.register_vmap(_ops.conv2d_forward.default, _conv2d_vmap, lib=_lib)
torch.library.register_vmap(_ops.conv2d_backward.default, _conv2d_backward_vmap, lib=_lib)
_register_vmap("max_pool2d_forward", per_sample=(0,))
_register_vmap("max_pool2d_forward_values", per_sample=(0,))
_register_vmap("max_pool2d_backward", per_sample=(0, 1, 2))
_register_vmap("avg_pool2d_forward", per_sample=(0,))
_register_vmap("avg_pool2d_backward", per_sample=(0, 1))
_register_vmap("conv2d_sigmoid_avgpool2d", per_sample=(0,))
_register_vmap("conv2d_sigmoid_avgpool2d_backward")
