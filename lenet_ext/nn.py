"""Drop-in ``torch.nn`` layers backed by lenet_ext's kernels.

Each layer subclasses torch's own, so construction, parameter init, ``state_dict`` keys, ``repr`` and
``isinstance`` checks stay exactly torch's; only the computation is replaced.
"""

import copy

import torch
import torch.nn.functional as torch_F
from torch.nn.utils import parametrize

from . import functional as F

__all__ = ["Conv2d", "MaxPool2d", "AvgPool2d", "convert"]


class _NotScriptable:
    """TorchScript cannot compile our layers: their forward checks arguments in Python, as torch's own
    functional layer does before its C++ kernels. torch.jit.script calls this hook on every module it
    is given, so the user gets this message rather than a complaint about a line of functional.py."""

    def __prepare_scriptable__(self):
        raise RuntimeError(
            f"lenet_ext.nn.{type(self).__name__} does not support TorchScript (torch.jit.script). "
            "Use torch.jit.trace, torch.export.export or torch.compile, which all support lenet_ext's layers"
        )


class Conv2d(_NotScriptable, torch.nn.Conv2d):
    """:class:`torch.nn.Conv2d` computed by :func:`lenet_ext.functional.conv2d`.

    ``padding_mode`` zeros pads inside our kernel; reflect, replicate and circular pad the input first
    with :func:`torch.nn.functional.pad`, exactly as torch's layer does, then convolve unpadded.
    """

    def _conv_forward(self, input, weight, bias):
        if self.padding_mode != "zeros":
            padded = torch_F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return F.conv2d(padded, weight, bias, self.stride, 0, self.dilation, self.groups)
        return F.conv2d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)


class MaxPool2d(_NotScriptable, torch.nn.MaxPool2d):
    """:class:`torch.nn.MaxPool2d` computed by :func:`lenet_ext.functional.max_pool2d`."""

    def forward(self, input):
        return F.max_pool2d(
            input,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            ceil_mode=self.ceil_mode,
            return_indices=self.return_indices,
        )


class AvgPool2d(_NotScriptable, torch.nn.AvgPool2d):
    """:class:`torch.nn.AvgPool2d` computed by :func:`lenet_ext.functional.avg_pool2d`."""

    def forward(self, input):
        return F.avg_pool2d(
            input,
            self.kernel_size,
            self.stride,
            self.padding,
            self.ceil_mode,
            self.count_include_pad,
            self.divisor_override,
        )


# Exact torch types and their lenet_ext replacements. Our layers subclass these and add no state of their
# own, so re-classing a module in place keeps everything else about it: parameters (the very tensors, so
# an optimizer holding them stays valid), buffers, hooks, train/eval mode, device and dtype.
_CONVERTIBLE = {
    torch.nn.Conv2d: Conv2d,
    torch.nn.MaxPool2d: MaxPool2d,
    torch.nn.AvgPool2d: AvgPool2d,
}


def convert(model, inplace=False):
    """``model`` with every ``torch.nn.Conv2d``, ``MaxPool2d`` and ``AvgPool2d`` computed by lenet_ext.

    Only those exact types are swapped (a user's subclass of them is left alone, as its ``forward`` may
    differ); configuration, parameter values, ``state_dict`` keys and outputs stay the same. A conv with
    a ``torch.nn.utils.parametrize`` parametrization (``parametrizations.weight_norm``,
    ``spectral_norm``, ...) is converted too and keeps its parametrizations: its forward still reads the
    parametrized weight. Nested modules are converted too, and ``model`` itself may be one of the
    swapped layers. With ``inplace=False`` (the default) ``model`` is deep-copied first and left untouched.
    """
    if not inplace:
        model = copy.deepcopy(model)
    for module in model.modules():
        ours = _replacement(module)
        if ours is not None:
            module.__class__ = ours
    return model


def _replacement(module):
    """Our class for ``module``, or None to leave it alone."""
    cls = type(module)
    if cls in _CONVERTIBLE:
        return _CONVERTIBLE[cls]
    # parametrize moves a module into a class made for it alone: a direct subclass of the module's class,
    # whose properties compute the parametrized tensors. The same class built on ours keeps them, and
    # removing the last parametrization later moves the module back to its base class: ours.
    base = cls.__bases__[0]
    if parametrize.is_parametrized(module) and cls.__bases__ == (base,) and base in _CONVERTIBLE:
        body = {k: v for k, v in vars(cls).items() if k not in ("__dict__", "__weakref__")}
        return type(cls.__name__, (_CONVERTIBLE[base],), body)
    return None
