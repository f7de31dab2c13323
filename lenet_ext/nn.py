"""Drop-in ``torch.nn`` layers backed by lenet_ext's kernels.

Each layer subclasses torch's own, so construction, parameter init, ``state_dict`` keys, ``repr`` and
``isinstance`` checks stay exactly torch's; only the computation is replaced.
"""

import torch
import torch.nn.functional as torch_F

from . import functional as F

__all__ = ["Conv2d", "MaxPool2d", "AvgPool2d"]


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
