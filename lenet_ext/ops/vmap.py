"""vmap rules for every operator, under both of torch's vmaps: fold the vmapped dimension into the batch
(or, for a vmapped convolution weight, into the groups) and run the operator once, where torch's generic
fallback would run it once per slice.

torch has two vmaps. ``torch.func.vmap`` (its tensors carry the ``FuncTorchBatched`` key) runs the rules
registered with ``torch.library.register_vmap``. autograd's batched gradients --
``torch.autograd.grad(..., is_grads_batched=True)``, ``torch.autograd.functional.jacobian`` and ``hessian``
with ``vectorize=True``, ``gradcheck`` and ``gradgradcheck`` with ``check_batched_grad=True`` -- run the
backward under the older one, ``torch._vmap_internals._vmap``, whose tensors carry the ``Batched`` key and
which never consults those rules; its generic fallback refuses an operator that returns anything but plain
tensors, as our backwards' optional gradients are. So each operator also gets a ``Batched`` kernel that runs
the same rule: it unwraps the arguments' batch dimensions of every legacy level (a nested level is another
dimension), folds them into one, runs the rule, and wraps the results back at those levels. A conv backward
is then one grouped call for the whole batch of gradients, as torch's own convolution's is.
"""

import math
from typing import NamedTuple

import torch

from .._torch_internals import add_batch_dim, is_legacy_batchedtensor, remove_batch_dim

from ._library import lib as _lib
from ._library import ops as _ops


def _register_vmap(name, per_sample=(), rule=None):
    """A vmap rule, under both vmaps: ``rule``, or else the generic one. When only the arguments at
    positions ``per_sample`` (tensors whose dim 0 is the batch, each element computed on its own) are
    vmapped, the vmapped dimension folds into the batch and the operator runs once. Otherwise it runs once
    per slice of the vmapped dimension (torch's generic fallback would too, but it cannot return the
    backwards' optional tensors)."""
    op = getattr(_ops, name).default

    def generic(info, in_dims, *args):
        tensors = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
        if per_sample and all(in_dims[i] is None for i in tensors if i not in per_sample):
            return _folded(op, info.batch_size, per_sample, in_dims, args)
        results = [op(*(_slice(a, d, i) for a, d in zip(args, in_dims))) for i in range(info.batch_size)]
        if not isinstance(results[0], tuple):
            return torch.stack(results), 0
        stacked = tuple(None if r[0] is None else torch.stack(r) for r in zip(*results))
        return stacked, tuple(None if s is None else 0 for s in stacked)

    rule = rule or generic
    torch.library.register_vmap(op, rule, lib=_lib)
    _register_legacy(op, rule)


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
    return _grads_of_groups(_ops.conv2d_backward(g, x, w, stride, padding, dilation, groups * vmapped, mask), vmapped)


def _fused_backward_vmap(info, in_dims, grad, input, weight, act, stride, padding, dilation, groups, pool, mask):
    """As conv2d_backward's rule: one call with B times the groups, the activation (which the sigmoid and
    the pool act on per channel) folded into the channels as grad is."""
    vmapped = info.batch_size
    g, a = _as_groups(grad, in_dims[0], vmapped, 1), _as_groups(act, in_dims[3], vmapped, 1)
    x, w = _as_groups(input, in_dims[1], vmapped, 1), _as_groups(weight, in_dims[2], vmapped, 0)
    grads = _ops.conv2d_sigmoid_avgpool2d_backward(g, x, w, a, stride, padding, dilation, groups * vmapped, pool, mask)
    return _grads_of_groups(grads, vmapped)


def _grads_of_groups(grads, vmapped):
    """A grouped convolution's gradients (those not None) with the vmapped dimension unfolded again, and
    their vmapped dimensions."""
    dims = (1, 0, 0)  # the input gradient is (N, B*C, H, W); the weight's (B*O, ...) and the bias's (B*O)
    return (
        tuple(_unfold_groups(t, d, vmapped) if t is not None else None for t, d in zip(grads, dims)),
        tuple(d if t is not None else None for t, d in zip(grads, dims)),
    )


def _unfold_groups(t, dim, vmapped):
    return t.unflatten(dim, (vmapped, t.shape[dim] // vmapped))


# ------------------------------------------------------------------------------ under legacy vmap
_MAX_LEVELS = 64  # legacy vmap's nesting limit (kVmapNumLevels in ATen's LegacyBatchedTensorImpl.h)


class _Info(NamedTuple):
    """What a torch.func.vmap rule reads of its ``info``."""

    batch_size: int
    randomness: str = "error"


def _unwrap(args):
    """``args`` with each legacy BatchedTensor replaced by a plain tensor whose dim 0 is every level's batch
    dimension folded into one (level-major), or by the tensor itself when it varies at none of them.
    Returns (those args, their in_dims as torch.func.vmap gives them, the levels, their sizes)."""
    batched = {i: a for i, a in enumerate(args) if isinstance(a, torch.Tensor) and is_legacy_batchedtensor(a)}
    levels, sizes = [], []
    level = 0
    # Levels are numbered from 1; a tensor's levels are only known by asking for each (see above). A level
    # a tensor lacks comes back as a dimension of size 1, which broadcasts like any other size-1 one. Each
    # level's dimension goes first (legacy vmap expands a missing one only there): the last level leads.
    while any(is_legacy_batchedtensor(t) for t in batched.values()):
        level += 1
        if level > _MAX_LEVELS:
            raise RuntimeError(f"lenet_ext: a legacy vmap BatchedTensor with a level past {_MAX_LEVELS}")
        batched = {i: remove_batch_dim(t, level, 1, 0) for i, t in batched.items()}
        size = max(t.shape[0] for t in batched.values())
        if size == 1:  # no argument varies along this level: so neither do the results
            batched = {i: t.squeeze(0) for i, t in batched.items()}
        else:
            levels.append(level)
            sizes.append(size)
    args, in_dims, k = list(args), [None] * len(args), len(levels)
    for i, t in batched.items():
        if all(s == 1 for s in t.shape[:k]):  # this one varies along none of the kept levels
            args[i] = t.reshape(t.shape[k:])
        else:  # the lowest level first, as the results are wrapped
            t = t.permute(*range(k - 1, -1, -1), *range(k, t.dim()))
            args[i] = t.expand(*sizes, *t.shape[k:]).flatten(0, k - 1)
            in_dims[i] = 0
    return args, tuple(in_dims), levels, sizes


def _wrap(result, dim, levels, sizes):
    """A rule's result (vmapped at ``dim``; None: not vmapped) as a BatchedTensor at ``levels``."""
    if result is None or dim is None:
        return result
    result = result.movedim(dim, 0).unflatten(0, sizes)
    for level in levels:  # the lowest first: each wraps the next leading dimension
        result = add_batch_dim(result, 0, level)
    return result


def _register_legacy(op, rule):
    def batched_kernel(*args):
        args, in_dims, levels, sizes = _unwrap(args)
        if not levels:
            return op(*args)
        results, out_dims = rule(_Info(math.prod(sizes)), in_dims, *args)
        if isinstance(results, tuple):
            return tuple(_wrap(r, d, levels, sizes) for r, d in zip(results, out_dims))
        return _wrap(results, out_dims, levels, sizes)

    _lib.impl(op._schema.name.split("::")[1], batched_kernel, "Batched")


# --------------------------------------------------------------------------------------- the rules
_register_vmap("conv2d_forward", rule=_conv2d_vmap)
_register_vmap("conv2d_backward", rule=_conv2d_backward_vmap)
_register_vmap("max_pool2d_forward", per_sample=(0,))
_register_vmap("max_pool2d_forward_values", per_sample=(0,))
_register_vmap("max_pool2d_backward", per_sample=(0, 1, 2))
_register_vmap("avg_pool2d_forward", per_sample=(0,))
_register_vmap("avg_pool2d_backward", per_sample=(0, 1))
_register_vmap("conv2d_sigmoid_avgpool2d", per_sample=(0,))
_register_vmap("conv2d_sigmoid_avgpool2d_backward", rule=_fused_backward_vmap)
