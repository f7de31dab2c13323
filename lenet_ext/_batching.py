"""vmap for every operator under both of torch's vmaps, and the fused block's backward's vmap rule.

torch has two vmaps. ``torch.func.vmap`` (functorch: its tensors carry the ``FuncTorchBatched`` key) runs
the rules ``ops.py`` registers with ``torch.library.register_vmap``. autograd's batched gradients --
``torch.autograd.grad(..., is_grads_batched=True)``, ``torch.autograd.functional.jacobian`` and ``hessian``
with ``vectorize=True``, ``gradcheck`` and ``gradgradcheck`` with ``check_batched_grad=True`` -- run the
backward under the older one, ``torch._vmap_internals._vmap``, whose tensors carry the ``Batched`` key
and which never consults those rules. Its generic fallback runs an operator once per batch element and
refuses one that returns anything but plain tensors, as our backwards' optional gradients are.

So each operator also gets a ``Batched`` kernel, which runs the same rule: it unwraps the arguments'
batch dimensions of every legacy vmap level (a nested level is another dimension), folds them into one,
runs the rule as torch.func.vmap would with that one, and wraps the results back at those levels. A conv
backward is then one grouped call for the whole batch of gradients, as torch's own convolution does.
"""

import math
from typing import NamedTuple

import torch

from . import ops as _ops

# ---- private torch names (for lenet_ext/_torch_internals.py; each checked on torch 2.13.0) ----------------
# Whether a tensor is one of legacy vmap's BatchedTensors (the `Batched` dispatch key; functorch's own are
# told by torch._C._functorch.is_batchedtensor).
_is_legacy_batched = torch._C._functorch.is_legacy_batchedtensor
# Legacy vmap's unwrapping of one level: the level's batch dimension moved to out_dim, as
# torch._vmap_internals does with each output; a tensor without that level comes back expanded to
# batch_size there (ATen's native/Batching.cpp). Python reaches no other view of a BatchedTensor's levels.
_remove_batch_dim = torch._remove_batch_dim
# Legacy vmap's wrapping of a tensor's dimension as the batch dimension of a level, as
# torch._vmap_internals does with each input; levels must be added in increasing order.
_add_batch_dim = torch._add_batch_dim
# -------------------------------------------------------------------------------------------------------------

_MAX_LEVELS = 64  # legacy vmap's nesting limit (kVmapNumLevels in ATen's LegacyBatchedTensorImpl.h)


class _Info(NamedTuple):
    """What a torch.func.vmap rule reads of its ``info``."""

    batch_size: int
    randomness: str = "error"


def _unwrap(args):
    """``args`` with each legacy BatchedTensor replaced by a plain tensor whose dim 0 is every level's batch
    dimension folded into one (level-major), or by the tensor itself when it varies at none of them.
    Returns (those args, their in_dims as torch.func.vmap gives them, the levels, their sizes)."""
    batched = {i: a for i, a in enumerate(args) if isinstance(a, torch.Tensor) and _is_legacy_batched(a)}
    levels, sizes = [], []
    level = 0
    # Levels are numbered from 1; a tensor's levels are only known by asking for each (see above). A level
    # a tensor lacks comes back as a dimension of size 1, which broadcasts like any other size-1 one. Each
    # level's dimension goes first (legacy vmap expands a missing one only there): the last level leads.
    while any(_is_legacy_batched(t) for t in batched.values()):
        level += 1
        if level > _MAX_LEVELS:
            raise RuntimeError(f"lenet_ext: a legacy vmap BatchedTensor with a level past {_MAX_LEVELS}")
        batched = {i: _remove_batch_dim(t, level, 1, 0) for i, t in batched.items()}
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
        result = _add_batch_dim(result, 0, level)
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

    _ops._lib.impl(op._schema.name.split("::")[1], batched_kernel, "Batched")


def _fused_backward_vmap(info, in_dims, grad, input, weight, act, stride, padding, dilation, groups, pool, mask):
    """As conv2d_backward's rule: one call with B times the groups, the activation (which the sigmoid and
    the pool act on per channel) folded into the channels as grad is."""
    vmapped = info.batch_size
    g, a = _ops._as_groups(grad, in_dims[0], vmapped, 1), _ops._as_groups(act, in_dims[3], vmapped, 1)
    x, w = _ops._as_groups(input, in_dims[1], vmapped, 1), _ops._as_groups(weight, in_dims[2], vmapped, 0)
    grads = _ops._ops.conv2d_sigmoid_avgpool2d_backward(
        g, x, w, a, stride, padding, dilation, groups * vmapped, pool, mask
    )
    return _ops._grads_of_groups(grads, vmapped)


_ops._register_vmap("conv2d_sigmoid_avgpool2d_backward", rule=_fused_backward_vmap)
for _op, _rule in _ops.VMAP_RULES.items():
    _register_legacy(_op, _rule)
