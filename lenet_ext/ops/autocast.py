"""``torch.autocast`` kernels: inside an autocast region, the convolutions run in the autocast dtype, as
torch's own do; and the queries ``functional`` and ``autograd.call`` make of the autocast state.
"""

import torch

from .._torch_internals import (
    DispatchKey,
    DispatchKeySet,
    ExcludeDispatchKeyGuard,
    dispatch_key_for_device,
    is_any_autocast_enabled,
)
from ._library import lib as _lib
from ._library import ops as _ops

_AUTOCAST_DEVICES = ("cpu", "cuda")


def autocast_on():
    """Whether torch.autocast is on for any device (so for any we have autocast kernels for): one query of
    torch's autocast state, a twentieth of a microsecond, where asking per device costs ten times that on
    every call."""
    return is_any_autocast_enabled()


def autocast_args(device_type, args):
    """``args`` as torch.autocast gives them to an operator that runs in lower precision, such as
    torch's convolution, when autocast is on for ``device_type``: floating-point tensors on that
    device in the autocast dtype, except float64 ones (torch's rule). Unchanged when it is off."""
    # (only the devices we register autocast kernels for; a plain tuple test, which torch.compile traces
    # on every supported torch, where torch.amp.is_autocast_available is opaque to torch 2.11's dynamo)
    if device_type not in _AUTOCAST_DEVICES or not torch.is_autocast_enabled(device_type):
        return args
    dtype = torch.get_autocast_dtype(device_type)

    def cast(arg):
        eligible = isinstance(arg, torch.Tensor) and arg.is_floating_point() and arg.dtype != torch.float64
        return arg.to(dtype) if eligible and arg.device.type == device_type else arg

    return [cast(a) for a in args]


def _register_autocast(name):
    op = getattr(_ops, name).default
    for device_type in _AUTOCAST_DEVICES:
        key = "Autocast" + dispatch_key_for_device(device_type)
        excluded = DispatchKeySet(getattr(DispatchKey, key))

        def autocast_kernel(*args, device_type=device_type, excluded=excluded):
            with ExcludeDispatchKeyGuard(excluded):
                return op(*autocast_args(device_type, args))

        _lib.impl(name, autocast_kernel, key)


# Pooling needs no autocast kernel: it runs in its input's dtype, as torch's does.
_register_autocast("conv2d_forward")
_register_autocast("conv2d_sigmoid_avgpool2d")
