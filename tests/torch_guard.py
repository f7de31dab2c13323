"""Keep torch's own CPU max_pool2d backward out of the test workers when it would write out of bounds.

torch's CPU max_pool2d records, for a window that sees only padding (possible only with dilation), the flat
index of its first tap row past the padding, which lies outside the input plane; its backward then scatters
the gradient through that index unchecked, into the next plane or past the end of the buffer, and corrupts
the heap (scripts/torch_maxpool_heap_probe.py; seen on torch 2.11 and 2.13). A test that ran it as a
reference in its own process would kill its worker later, somewhere else.

`install()` (from conftest.py) wraps torch.nn.functional's max_pool2d entry points so that such a call, on
the CPU with an input that autograd will differentiate, raises `UnsafeTorchReference` instead. A test that
needs torch's gradient there takes it from `torch_max_pool2d_grad`, which runs it in a child process with
the gradient of every padding-only window set to zero, so the stray write adds zero and torch's gradient
for the other windows is still the oracle.
"""

import functools

import torch
import torch.nn.functional as TF

from cases import _pair
from isolation import Child

from lenet_ext._shape import window_output_size


class UnsafeTorchReference(RuntimeError):
    pass


def padding_only_rows(n, k, s, p, d, ceil_mode):
    """The outputs along one dimension whose window has no tap inside [0, n)."""
    return [
        o
        for o in range(window_output_size(n, p, p, k, s, d, ceil_mode))
        if not any(0 <= o * s - p + j * d < n for j in range(k))
    ]


def _geometry(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, *_, **__):
    kernel = _pair(kernel_size)
    stride = kernel if stride is None or (not isinstance(stride, int) and len(stride) == 0) else _pair(stride)
    return kernel, stride, _pair(padding), _pair(dilation), bool(ceil_mode)


def padding_only_mask(shape, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """A bool tensor over the output plane, true where the window sees only padding; None when none does."""
    kernel, stride, padding, dilation, ceil_mode = _geometry(None, kernel_size, stride, padding, dilation, ceil_mode)
    H, W = shape[-2], shape[-1]
    dims = [(H, 0), (W, 1)]
    sizes = [
        window_output_size(n, padding[i], padding[i], kernel[i], stride[i], dilation[i], ceil_mode) for n, i in dims
    ]
    bad = [padding_only_rows(n, kernel[i], stride[i], padding[i], dilation[i], ceil_mode) for n, i in dims]
    if not bad[0] and not bad[1]:
        return None
    mask = torch.zeros(sizes, dtype=torch.bool)
    mask[bad[0], :] = True
    mask[:, bad[1]] = True
    return mask


def _guarded(fn):
    @functools.wraps(fn)
    def guard(input, *args, **kwargs):
        differentiated = torch.is_grad_enabled() and isinstance(input, torch.Tensor) and input.requires_grad
        if differentiated and input.device.type == "cpu" and input.dim() >= 3:
            names = ("kernel_size", "stride", "padding", "dilation", "ceil_mode")
            geometry = dict(zip(names, args), **{k: v for k, v in kwargs.items() if k in names})
            if padding_only_mask(input.shape, **geometry) is not None:
                raise UnsafeTorchReference(
                    f"torch's CPU max_pool2d backward writes outside its gradient when a window sees only "
                    f"padding ({tuple(input.shape)}, {geometry}); take torch's gradient from "
                    f"torch_guard.torch_max_pool2d_grad, which runs it in a child process"
                )
        return fn(input, *args, **kwargs)

    guard.__lenet_ext_guard__ = True
    return guard


def install():
    """Guard torch.nn.functional.max_pool2d and max_pool2d_with_indices (torch.nn.MaxPool2d calls them) for
    this process. Idempotent. TorchScript still compiles torch's own functions: it reads max_pool2d through
    torch._jit_internal's table of boolean-dispatched functions, which the guard joins."""
    import torch._jit_internal as jit_internal

    for name in ("max_pool2d", "max_pool2d_with_indices"):
        fn = getattr(TF, name)
        if not getattr(fn, "__lenet_ext_guard__", False):
            guarded = _guarded(fn)
            if fn in jit_internal.boolean_dispatched:
                jit_internal.boolean_dispatched[guarded] = jit_internal.boolean_dispatched[fn]
            setattr(TF, name, guarded)


def _masked_grad(x, grad_output, kwargs):
    """In the child: torch's input gradient with every padding-only window's gradient zeroed."""
    x = x.detach().requires_grad_(True)
    mask = padding_only_mask(x.shape, **kwargs)
    out = TF.max_pool2d(x, **kwargs)
    if mask is not None:
        grad_output = grad_output.masked_fill(mask, 0)
    (grad,) = torch.autograd.grad(out, x, grad_output)
    return grad


_child = Child()


def torch_max_pool2d_grad(x, grad_output, **kwargs):
    """torch's max_pool2d input gradient for any geometry, computed in a child process (see the module's
    docstring); padding-only windows contribute nothing, as in our kernels."""
    return _child.call(_masked_grad, x.detach().cpu(), grad_output.detach().cpu(), kwargs).to(x.device)
