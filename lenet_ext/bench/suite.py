"""The benchmark suite as data: the shapes, the rows (operation x shape) and their goals."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


# -------------------------------------------------------------------------------------------- shapes
@dataclass(frozen=True)
class Conv:
    """A convolution: input N x C x H x W, O output channels, square K x K kernel."""

    n: int
    c: int
    h: int
    w: int
    o: int
    k: int
    stride: int = 1
    padding: int = 0
    groups: int = 1

    def out_size(self):
        return tuple((d + 2 * self.padding - self.k) // self.stride + 1 for d in (self.h, self.w))

    def flops(self):
        """Multiply-adds count 2: 2 * N * O * OH * OW * (C / groups) * K * K. Backward-input and
        backward-weight do the same number."""
        oh, ow = self.out_size()
        return 2 * self.n * self.o * oh * ow * (self.c // self.groups) * self.k * self.k

    def shrink(self):
        """The --quick version: batch 2 and maps of at most 12 x 12, same channels and window."""
        return dataclasses.replace(self, n=min(self.n, 2), h=min(self.h, 12), w=min(self.w, 12))

    def label(self):
        g = f" g{self.groups}" if self.groups > 1 else ""
        s = f" s{self.stride}" if self.stride > 1 else ""
        p = f" p{self.padding}" if self.padding else ""
        return f"{self.n}x{self.c}x{self.h}x{self.w} -> {self.o}, {self.k}x{self.k}{s}{p}{g}"


@dataclass(frozen=True)
class Pool:
    """A pooling window K x K with the given stride and padding over N x C x H x W, stored NCHW or
    channels_last."""

    n: int
    c: int
    h: int
    w: int
    k: int
    stride: int
    padding: int = 0
    channels_last: bool = False
    dtype: str = "float32"  # a torch dtype's name

    def out_size(self):
        return tuple((d + 2 * self.padding - self.k) // self.stride + 1 for d in (self.h, self.w))

    def numel_in(self):
        return self.n * self.c * self.h * self.w

    def numel_out(self):
        oh, ow = self.out_size()
        return self.n * self.c * oh * ow

    def shrink(self):
        return dataclasses.replace(self, n=min(self.n, 2), h=min(self.h, 12), w=min(self.w, 12))

    def label(self):
        p = f" p{self.padding}" if self.padding else ""
        cl = ", channels_last" if self.channels_last else ""
        dt = f", {self.dtype}" if self.dtype != "float32" else ""
        return f"{self.n}x{self.c}x{self.h}x{self.w}, {self.k}x{self.k} s{self.stride}{p}{cl}{dt}"


@dataclass(frozen=True)
class Net:
    """A whole network from lenet_ext.models on a batch of 1 x 28 x 28 images."""

    model: str  # a class name in lenet_ext.models
    batch: int

    def shrink(self):
        return dataclasses.replace(self, batch=min(self.batch, 8))

    def label(self):
        return f"{self.model}, batch {self.batch}"


@dataclass(frozen=True)
class Vision:
    """A network of lenet_ext.zoo (torchvision's layer shapes) on a batch of 3 x S x S images."""

    model: str  # a key of lenet_ext.zoo.MODELS
    batch: int = 4
    size: int = 224

    def shrink(self):
        """The --quick version: two 64 x 64 images. Not fewer: batch norm's statistics over the last 2 x 2
        maps are then means of 8 values; of 2 values (two 32 x 32 images), a channel's variance can be
        nearly 0, and dividing by it turns float32 rounding into differences no tolerance should accept."""
        return dataclasses.replace(self, batch=min(self.batch, 2), size=min(self.size, 64))

    def label(self):
        return f"{self.model}, batch {self.batch}, {self.size}x{self.size}"


# ---------------------------------------------------------------------------------------------- rows
@dataclass(frozen=True)
class Row:
    """One line of the benchmark: an operation from BUILDERS on one shape.

    ``goal`` is the ratio torch/ours that the CPU targets (GOALS) set for this row, if any.
    """

    what: str  # who the shape is, e.g. "LeNet conv1"
    op: str  # a key of BUILDERS
    shape: Any
    goal: float | None = None

    @property
    def name(self):
        return f"{self.op} | {self.what}"


LENET_CONV1 = Conv(256, 1, 28, 28, 6, 5, padding=2)
LENET_CONV2 = Conv(256, 6, 14, 14, 16, 5)
CONV64_B8 = Conv(8, 64, 56, 56, 64, 3, padding=1)
CONV64_B32 = Conv(32, 64, 56, 56, 64, 3, padding=1)
STEM = Conv(8, 3, 224, 224, 64, 7, stride=2, padding=3)
DEPTHWISE = Conv(8, 64, 56, 56, 64, 3, padding=1, groups=64)
LENET_POOL1 = Pool(256, 6, 28, 28, 2, 2)
LENET_POOL2 = Pool(256, 16, 10, 10, 2, 2)
POOL3 = Pool(16, 64, 112, 112, 3, 2, padding=1)
POOL2 = Pool(16, 64, 112, 112, 2, 2)
POOL3_S1 = Pool(16, 64, 112, 112, 3, 1, padding=1)  # GoogLeNet's: every input element in 9 windows

CONV_SHAPES = [
    ("LeNet conv1", LENET_CONV1),
    ("LeNet conv2", LENET_CONV2),
    ("64->64 3x3 b8", CONV64_B8),
    ("64->64 3x3 b32", CONV64_B32),
    ("stem 7x7 s2", STEM),
    ("depthwise 3x3", DEPTHWISE),
]
POOL_SHAPES = [
    ("LeNet pool1", LENET_POOL1),
    ("LeNet pool2", LENET_POOL2),
    ("3x3 s2 p1 112x112", POOL3),
    ("2x2 s2 112x112", POOL2),
    ("3x3 s1 p1 112x112", POOL3_S1),
]
# The large maps again in channels_last (torch vectorises over channels there: the layout it is fast in).
POOL_SHAPES += [(f"{what} channels_last", dataclasses.replace(shape, channels_last=True)) for what, shape in POOL_SHAPES[2:]]
# The large maps' forwards in bfloat16, both layouts
POOL_BF16_SHAPES = [(f"{what} bfloat16", dataclasses.replace(shape, dtype="bfloat16")) for what, shape in POOL_SHAPES[2:]]

CONV_OPS = ("conv2d.forward", "conv2d.backward_input", "conv2d.backward_weight")
# LeNet's conv -> sigmoid -> 2x2 avg-pool block: our fused operator against torch's three layers
BLOCK_OPS = ("lenet_block.forward", "lenet_block.forward+backward_weight_bias")
POOL_OPS = ("max_pool2d.forward", "max_pool2d.backward", "avg_pool2d.forward", "avg_pool2d.backward")
# the training path: the forward that keeps indices (max) and the backward after it, on the large maps
POOL_TRAIN_OPS = ("max_pool2d.forward+backward", "avg_pool2d.forward+backward")

# The CPU targets (float32, 2 threads, at every instruction-set level), as the ratio torch/ours
# each row should reach.
GOALS = {
    ("max_pool2d.forward", "3x3 s2 p1 112x112"): 8.0,
    ("avg_pool2d.forward+backward", "2x2 s2 112x112"): 2.0,
    ("conv2d.forward+backward_weight_bias", "LeNet conv1"): 1.2,
    ("conv2d.forward+backward_weight_bias", "LeNet conv2"): 1.2,
    ("conv2d.forward", "64->64 3x3 b8"): 0.9,
    ("conv2d.forward", "stem 7x7 s2"): 1.0,
    ("model.train_step", "LeNet"): 1.5,
    ("converted.inference", "ResNet-18"): 0.7,
    ("converted.train_step", "ResNet-18"): 0.7,
    ("converted.inference", "MobileNetV2"): 0.7,
}

_ROW_SPECS = (
    [(what, op, shape) for op in CONV_OPS for what, shape in CONV_SHAPES]
    + [(what, "conv2d.forward+backward_weight_bias", shape) for what, shape in CONV_SHAPES[:2]]
    + [(what, op, shape) for op in POOL_OPS for what, shape in POOL_SHAPES]
    + [(what, op, shape) for op in POOL_TRAIN_OPS for what, shape in POOL_SHAPES[2:]]
    + [(what, op, shape) for op in ("max_pool2d.forward", "avg_pool2d.forward") for what, shape in POOL_BF16_SHAPES]
    + [(what, op, shape) for op in BLOCK_OPS for what, shape in CONV_SHAPES[:2]]
    + [(net, op, Net(net, 256)) for net in ("LeNet", "ModernLeNet") for op in ("model.train_step", "model.inference")]
    + [
        ("ResNet-18", "converted.inference", Vision("resnet18")),
        ("ResNet-18", "converted.train_step", Vision("resnet18")),
        ("MobileNetV2", "converted.inference", Vision("mobilenet_v2")),
        ("SqueezeNet 1.1", "converted.inference", Vision("squeezenet1_1")),
    ]
)
ROWS = [Row(what, op, shape, GOALS.get((op, what))) for what, op, shape in _ROW_SPECS]
