"""Drop-in ``torch.nn`` layers backed by lenet_ext's kernels.

Each layer subclasses torch's own, so construction, parameter init, ``state_dict`` keys, ``repr`` and
``isinstance`` checks stay exactly torch's; only the computation is replaced.
"""

import copy

import torch
import torch.nn.functional as torch_F

from . import functional as F

__all__ = ["Conv2d", "MaxPool2d", "AvgPool2d", "convert"]


class Conv2d(torch.nn.Conv2d):
    """:class:`torch.nn.Conv2d` computed by :func:`lenet_ext.functional.conv2d`.

    ``padding_mode`` zeros pads inside our kernel; reflect, replicate and circular pad the input first
    with :func:`torch.nn.functional.pad`, exactly as torch's layer does, then convolve unpadded.
    """

    def _conv_forward(self, input, weight, bias):
        if self.padding_mode != "zeros":
            padded = torch_F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return F.conv2d(padded, weight, bias, self.stride, 0, self.dilation, self.groups)
        return F.conv2d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)


class MaxPool2d(torch.nn.MaxPool2d):
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


class AvgPool2d(torch.nn.AvgPool2d):
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
    differ); configuration, parameter values, ``state_dict`` keys and outputs stay the same. Nested
    modules are converted too, and ``model`` itself may be one of the swapped layers. With
    ``inplace=False`` (the default) ``model`` is deep-copied first and left untouched.
    """
    if not inplace:
        model = copy.deepcopy(model)
    for module in model.modules():
        ours = _CONVERTIBLE.get(type(module))
        if ours is not None:
            module.__class__ = ours
    return model
