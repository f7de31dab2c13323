"""The benchmark harness: lenet_ext's kernels against torch's built-ins, side by side.

    lenet-ext bench                      # the full CPU suite (a few minutes on 2 cores)
    lenet-ext bench --quick              # smoke mode: tiny shapes, one short round
    python -m lenet_ext.benchmark --device cuda --filter conv2d --json out.json --plot out.png

Every row is data (``ROWS``): an operation (``BUILDERS`` turns it into an ``ours`` and a ``theirs``
callable doing the same work) and a shape. One code path, ``run_row``, handles any row:

1. rows whose operators are not registered yet are *skipped*, with the reason;
2. correctness first: ours and torch's results are compared with ``torch.testing.assert_close``; a
   mismatch marks the row FAILED and it is not timed;
3. timing: several rounds, alternating which side goes first, each a ``torch.utils.benchmark``
   ``blocked_autorange`` (which synchronises CUDA); the medians of all blocks are reported, with the
   ratio torch/ours (above 1 means ours is faster), the rate (GFLOP/s for convolutions, GB/s for
   pooling, images/s for whole networks) and that rate as a fraction of the machine's ceilings.

The ceilings are measured here, on the device and at the thread count in use: copy bandwidth (a large
tensor copy, counting bytes read plus written) and a large float32 matrix product.
"""

import argparse
import contextlib
import copy
import dataclasses
import datetime
import importlib
import json
import math
import os
import platform
import socket
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as torch_F
from torch.utils import benchmark as torch_benchmark

import lenet_ext

from . import functional as F

__all__ = ["ROWS", "Row", "main", "measure_ceilings", "run_row"]

_aten = torch.ops.aten


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
    """A pooling window K x K with the given stride and padding over N x C x H x W."""

    n: int
    c: int
    h: int
    w: int
    k: int
    stride: int
    padding: int = 0

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
        return f"{self.n}x{self.c}x{self.h}x{self.w}, {self.k}x{self.k} s{self.stride}{p}"


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
]

CONV_OPS = ("conv2d.forward", "conv2d.backward_input", "conv2d.backward_weight")
# LeNet's conv -> sigmoid -> 2x2 avg-pool block: our fused operator against torch's three layers
BLOCK_OPS = ("lenet_block.forward", "lenet_block.forward+backward_weight_bias")
POOL_OPS = ("max_pool2d.forward", "max_pool2d.backward", "avg_pool2d.forward", "avg_pool2d.backward")

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
    + [("2x2 s2 112x112", "avg_pool2d.forward+backward", POOL2)]
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


# -------------------------------------------------------------------------------------------- builders
@dataclass
class Case:
    """What a builder returns: two callables doing the same work, and how much work that is.

    ``ours()`` and ``theirs()`` return tensors (or tuples of them) that must agree; ``work`` is counted in
    ``unit`` ("flop", "byte" or "image") per call. ``check``, where given, replaces comparing their first
    results: it raises AssertionError on a mismatch and returns the largest difference, as check_close.
    """

    ours: Callable[[], Any]
    theirs: Callable[[], Any]
    work: float
    unit: str
    check: Callable[[], float] | None = None


# Each operation names what it needs from lenet_ext, so a row is skipped (not faked) until it is there:
# ("op", name) is an operator with a kernel for the device, ("functional", name) / ("models", name) an
# attribute of that module.
REQUIRES = {
    "conv2d.forward": [("functional", "conv2d"), ("op", "conv2d_forward")],
    "conv2d.backward_input": [("op", "conv2d_backward")],
    "conv2d.backward_weight": [("op", "conv2d_backward")],
    "conv2d.forward+backward_weight_bias": [("op", "conv2d_forward"), ("op", "conv2d_backward")],
    "max_pool2d.forward": [("functional", "max_pool2d"), ("op", "max_pool2d_forward_values")],
    "max_pool2d.backward": [("op", "max_pool2d_forward"), ("op", "max_pool2d_backward")],
    "avg_pool2d.forward": [("functional", "avg_pool2d"), ("op", "avg_pool2d_forward")],
    "avg_pool2d.backward": [("op", "avg_pool2d_backward")],
    "avg_pool2d.forward+backward": [("op", "avg_pool2d_forward"), ("op", "avg_pool2d_backward")],
    "lenet_block.forward": [("functional", "conv2d_sigmoid_avgpool2d"), ("op", "conv2d_sigmoid_avgpool2d")],
    "lenet_block.forward+backward_weight_bias": [
        ("functional", "conv2d_sigmoid_avgpool2d"),
        ("op", "conv2d_sigmoid_avgpool2d"),
        ("op", "conv2d_sigmoid_avgpool2d_backward"),
    ],
    "model.train_step": [("models", "builtin_twin")],
    "model.inference": [("models", "builtin_twin")],
    "converted.inference": [("nn", "convert"), ("op", "conv2d_forward"), ("op", "max_pool2d_forward_values")],
    "converted.train_step": [
        ("nn", "convert"),
        ("op", "conv2d_forward"),
        ("op", "conv2d_backward"),
        ("op", "max_pool2d_forward"),
        ("op", "max_pool2d_backward"),
    ],
}


def _conv_case(shape, device, mask=None, with_forward=False):
    """Forward (mask None), or the masked backward, optionally preceded by the forward."""
    x = torch.randn(shape.n, shape.c, shape.h, shape.w, device=device)
    w = torch.randn(shape.o, shape.c // shape.groups, shape.k, shape.k, device=device) / math.sqrt(
        shape.c // shape.groups * shape.k * shape.k
    )
    b = torch.randn(shape.o, device=device)
    s, p, d, g = [shape.stride] * 2, [shape.padding] * 2, [1, 1], shape.groups
    ours_pad = [shape.padding] * 4  # (top, bottom, left, right)
    if mask is None:
        return Case(
            ours=lambda: F.conv2d(x, w, b, s, p, d, g),
            theirs=lambda: torch_F.conv2d(x, w, b, s, p, d, g),
            work=shape.flops(),
            unit="flop",
        )
    grad = torch.randn(shape.n, shape.o, *shape.out_size(), device=device)
    bias_sizes = [shape.o] if mask[2] else None

    def ours():
        if with_forward:
            torch.ops.lenet_ext.conv2d_forward(x, w, b, s, ours_pad, d, g)
        return _present(torch.ops.lenet_ext.conv2d_backward(grad, x, w, s, ours_pad, d, g, mask))

    def theirs():
        if with_forward:
            _aten.convolution(x, w, b, s, p, d, False, [0, 0], g)
        return _present(_aten.convolution_backward(grad, x, w, bias_sizes, s, p, d, False, [0, 0], g, mask))

    passes = sum(mask[:2]) + with_forward  # the bias gradient is a sum: no multiply-adds worth counting
    return Case(ours, theirs, work=passes * shape.flops(), unit="flop")


def _present(results):
    return tuple(r for r in results if r is not None)


def _pool_input(shape, device, distinct):
    """Max pooling gets all-different values, so ours and torch cannot pick different maxima of a tie."""
    n = shape.numel_in()
    if distinct and n <= 1 << 24:  # float32 holds every integer up to 2^24 exactly
        return torch.randperm(n, device=device).to(torch.float32).div_(n).view(shape.n, shape.c, shape.h, shape.w)
    return torch.randn(shape.n, shape.c, shape.h, shape.w, device=device)


def _pool_case(kind, shape, device, forward, backward):
    """Pooling forward (values only, as under no_grad), backward, or forward followed by backward."""
    x = _pool_input(shape, device, distinct=kind == "max")
    grad = torch.randn(shape.n, shape.c, *shape.out_size(), device=device)
    k, s, p, dil = [shape.k] * 2, [shape.stride] * 2, [shape.padding] * 2, [1, 1]
    item = x.element_size()
    reads_writes = 0
    if forward:
        reads_writes += shape.numel_in() + shape.numel_out()  # input read, output written
    if backward:
        reads_writes += shape.numel_out() + shape.numel_in()  # grad_output read, grad_input written
    work = reads_writes * item
    if kind == "max":
        if backward:
            work += shape.numel_out() * 8  # the int64 indices are read too
            _, our_idx = torch.ops.lenet_ext.max_pool2d_forward(x, k, s, p, dil, False)
            _, their_idx = _aten.max_pool2d_with_indices(x, k, s, p, dil, False)
            return Case(
                ours=lambda: torch.ops.lenet_ext.max_pool2d_backward(grad, x, our_idx, k, s, p, dil, False),
                theirs=lambda: _aten.max_pool2d_with_indices_backward(grad, x, k, s, p, dil, False, their_idx),
                work=work,
                unit="byte",
            )

        def ours():
            with torch.no_grad():  # our functional takes the values-only path
                return F.max_pool2d(x, k, s, p)

        def theirs():
            with torch.no_grad():
                return torch_F.max_pool2d(x, k, s, p)

        return Case(ours, theirs, work=work, unit="byte")

    if forward and not backward:
        return Case(
            ours=lambda: F.avg_pool2d(x, k, s, p),
            theirs=lambda: torch_F.avg_pool2d(x, k, s, p),
            work=work,
            unit="byte",
        )

    def ours():
        if forward:
            torch.ops.lenet_ext.avg_pool2d_forward(x, k, s, p, False, True, None)
        return torch.ops.lenet_ext.avg_pool2d_backward(grad, x, k, s, p, False, True, None)

    def theirs():
        if forward:
            _aten.avg_pool2d(x, k, s, p, False, True, None)
        return _aten.avg_pool2d_backward(grad, x, k, s, p, False, True, None)

    return Case(ours, theirs, work=work, unit="byte")


def _block_case(shape, device, backward):
    """conv -> sigmoid -> 2x2 avg-pool, forward, or forward and the weight and bias gradients through
    autograd (as in training, where the first layer's input needs no gradient), on both sides."""
    x = torch.randn(shape.n, shape.c, shape.h, shape.w, device=device)
    fan_in = shape.c // shape.groups * shape.k * shape.k
    w = (
        torch.randn(shape.o, shape.c // shape.groups, shape.k, shape.k, device=device) / math.sqrt(fan_in)
    ).requires_grad_(backward)
    b = torch.randn(shape.o, device=device).requires_grad_(backward)
    conf = (shape.stride, shape.padding, 1, shape.groups)
    oh, ow = shape.out_size()
    grad = torch.randn(shape.n, shape.o, oh // 2, ow // 2, device=device)

    def run(block):
        if not backward:
            with torch.no_grad():
                return block()
        return torch.autograd.grad(block(), (w, b), grad)

    ours = lambda: run(lambda: F.conv2d_sigmoid_avgpool2d(x, w, b, *conf))
    theirs = lambda: run(lambda: torch_F.avg_pool2d(torch.sigmoid(torch_F.conv2d(x, w, b, *conf)), 2))
    return Case(ours, theirs, work=(1 + backward) * shape.flops(), unit="flop")


def _model_case(shape, device, train):
    """Our network and its torch.nn twin with identical weights, on the same batch.

    A training step is forward + cross-entropy + backward + SGD step; it returns the loss and the updated
    parameters, so the first call of each side (from identical weights) can be compared.
    """
    models = importlib.import_module("lenet_ext.models")
    ours_net = getattr(models, shape.model)().to(device)
    theirs_net = models.builtin_twin(ours_net)
    x = torch.randn(shape.batch, 1, 28, 28, device=device)
    labels = torch.randint(0, 10, (shape.batch,), device=device)

    if not train:
        ours_net.eval()
        theirs_net.eval()

        def infer(net):
            with torch.no_grad():
                return net(x)

        return Case(lambda: infer(ours_net), lambda: infer(theirs_net), work=shape.batch, unit="image")

    def stepper(net):
        optimizer = torch.optim.SGD(net.parameters(), lr=0.01)

        def step():
            optimizer.zero_grad(set_to_none=True)
            loss = torch_F.cross_entropy(net(x), labels)
            loss.backward()
            optimizer.step()
            return (loss.detach(), *(p.detach() for p in net.parameters()))

        return step

    return Case(stepper(ours_net), stepper(theirs_net), work=shape.batch, unit="image")


def _converted_case(shape, device, train):
    """A zoo network in torch.nn layers against ``lenet_ext.convert()`` of it: same weights, same images.

    Inference runs in eval mode, after one pass in training mode has set batch norm's running statistics
    from this batch (fresh ones, 0 and 1, would leave activations at whatever scale the initialisation
    gives). A training step, in training mode, is forward, cross-entropy against random labels, and the
    gradients of every parameter by ``torch.autograd.grad`` (no optimizer, so each call starts from the
    same weights). Its check compares the loss and the logits in float32; every gradient in float32
    only norm-wise and loosely (GRADIENT_NORM_TOLERANCE), which catches a gross error in the timed kernels;
    and every gradient closely in float64 (``_float64_gradients_check`` says why).
    """
    zoo = importlib.import_module("lenet_ext.zoo")
    theirs_net = zoo.MODELS[shape.model]().to(device)
    x = torch.randn(shape.batch, 3, shape.size, shape.size, device=device)
    if not train:
        _calibrate_batch_norm(theirs_net, x)
        ours_net = lenet_ext.convert(theirs_net)

        def infer(net):
            with torch.no_grad():
                return net(x)

        return Case(lambda: infer(ours_net), lambda: infer(theirs_net), work=shape.batch, unit="image")

    labels = torch.randint(0, 1000, (shape.batch,), device=device)
    ours, theirs = _train_step(lenet_ext.convert(theirs_net), x, labels), _train_step(theirs_net, x, labels)

    def check():
        ours_result, theirs_result = ours(), theirs()
        _check_norm_close(ours_result[2:], theirs_result[2:], GRADIENT_NORM_TOLERANCE)
        return max(check_close(ours_result[:2], theirs_result[:2]), _float64_gradients_check(theirs_net, x, labels))

    return Case(ours, theirs, work=shape.batch, unit="image", check=check)


def _train_step(net, x, labels):
    """A callable returning the loss, the logits and the gradient of every parameter of one step."""
    params = list(net.parameters())

    def step():
        logits = net(x)
        loss = torch_F.cross_entropy(logits, labels)
        return (loss.detach(), logits.detach(), *torch.autograd.grad(loss, params))

    return step


# float32 gradients of a ReLU network differ by a few percent norm-wise for reasons no kernel can fix (see
# _float64_gradients_check: 2% in ResNet-18 at batch 4); a wrong kernel is off by the gradient's own size.
GRADIENT_NORM_TOLERANCE = 0.25


def _check_norm_close(ours, theirs, tolerance):
    """Each of ``ours`` within ``tolerance`` of the matching tensor of ``theirs``, as ||a - b|| / ||b||."""
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        difference = (a.double() - b.double()).norm().item() / max(b.double().norm().item(), 1e-30)
        if not difference <= tolerance:  # also NaN
            raise AssertionError(f"tensor {i} is not close: ||ours - torch|| / ||torch|| = {difference:.2e}")


def _float64_gradients_check(net, x, labels):
    """Every gradient of a training step of ``lenet_ext.convert(net)`` against ``net``'s, both in float64.

    float32 gradients of a deep ReLU network cannot be compared element by element: a rounding-sized
    change in the forward moves a few pre-activations across zero (5 of ResNet-18's at batch 4, all within
    7e-6 of it), which switches their ReLU's gradient on or off, and batch norm spreads that over the
    channel; a weight gradient made of a few hundred terms then moves by several percent of its largest
    value (up to 20% in ResNet-18 at batch 4). torch's own float32 step moves that much when one stem
    weight changes by 1e-7, where in float64 the same change moves it by 1e-6. So the gradients are
    compared where rounding cannot cross a kink: float64 copies of both networks (same weights, images and
    labels), run by the float64 instances of the same kernels.
    """
    net64 = copy.deepcopy(net).double()
    x64 = x.double()
    return check_close(_train_step(lenet_ext.convert(net64), x64, labels)(), _train_step(net64, x64, labels)())


def _calibrate_batch_norm(net, x):
    """Running statistics of batch norm from one pass over ``x`` (momentum None: a plain average), then
    eval mode."""
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    net.train()
    with torch.no_grad():
        net(x)
    net.eval()


BUILDERS = {
    "conv2d.forward": lambda s, dev: _conv_case(s, dev),
    "conv2d.backward_input": lambda s, dev: _conv_case(s, dev, [True, False, False]),
    "conv2d.backward_weight": lambda s, dev: _conv_case(s, dev, [False, True, False]),
    "conv2d.forward+backward_weight_bias": lambda s, dev: _conv_case(s, dev, [False, True, True], with_forward=True),
    "max_pool2d.forward": lambda s, dev: _pool_case("max", s, dev, forward=True, backward=False),
    "max_pool2d.backward": lambda s, dev: _pool_case("max", s, dev, forward=False, backward=True),
    "avg_pool2d.forward": lambda s, dev: _pool_case("avg", s, dev, forward=True, backward=False),
    "avg_pool2d.backward": lambda s, dev: _pool_case("avg", s, dev, forward=False, backward=True),
    "avg_pool2d.forward+backward": lambda s, dev: _pool_case("avg", s, dev, forward=True, backward=True),
    "lenet_block.forward": lambda s, dev: _block_case(s, dev, backward=False),
    "lenet_block.forward+backward_weight_bias": lambda s, dev: _block_case(s, dev, backward=True),
    "model.train_step": lambda s, dev: _model_case(s, dev, train=True),
    "model.inference": lambda s, dev: _model_case(s, dev, train=False),
    "converted.inference": lambda s, dev: _converted_case(s, dev, train=False),
    "converted.train_step": lambda s, dev: _converted_case(s, dev, train=True),
}
assert set(BUILDERS) == set(REQUIRES) and all(r.op in BUILDERS for r in ROWS)


# ------------------------------------------------------------------------------------------- running
def missing_requirement(op, device):
    """Why `op` cannot run yet on `device` (None when everything it needs is registered)."""
    key = "CUDA" if device.type == "cuda" else "CPU"
    for kind, name in REQUIRES[op]:
        if kind == "op":
            op = getattr(torch.ops.lenet_ext, name, None)
            if op is None or not op.default.has_kernel_for_dispatch_key(key):
                return f"torch.ops.lenet_ext.{name} has no {key} kernel yet"
        else:
            try:
                module = importlib.import_module(f"lenet_ext.{kind}")
            except ImportError:
                return f"lenet_ext.{kind} is not there yet"
            if not hasattr(module, name):
                return f"lenet_ext.{kind}.{name} is not there yet"
    return None


def check_close(ours, theirs):
    """float32 tolerances, with the absolute one scaled by the result's magnitude: long reductions
    (a weight gradient sums 200,000 products) add in a different order in each implementation."""
    ours = ours if isinstance(ours, tuple) else (ours,)
    theirs = theirs if isinstance(theirs, tuple) else (theirs,)
    if len(ours) != len(theirs):
        raise AssertionError(f"ours returned {len(ours)} tensors, torch {len(theirs)}")
    worst = 0.0
    for a, b in zip(ours, theirs):
        scale = max(1.0, b.detach().abs().max().item()) if b.numel() else 1.0
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * scale, check_stride=False)
        if a.numel():
            worst = max(worst, (a.double() - b.double()).abs().max().item())
    return worst


def time_interleaved(ours, theirs, rounds, min_run_time):
    """Alternates rounds of blocked_autorange for each side (switching who goes first), so slow drifts
    of a shared machine hit both alike; returns all per-block times of each side.

    ``min_run_time=None`` is the smoke mode: a single call per round, only to prove the path runs.
    """
    threads = torch.get_num_threads()
    times = {"ours": [], "torch": []}
    sides = [("ours", ours), ("torch", theirs)]
    for r in range(rounds):
        for who, fn in sides if r % 2 == 0 else sides[::-1]:
            timer = torch_benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads)
            if min_run_time is None:
                times[who] += timer.timeit(number=1).times
            else:
                times[who] += timer.blocked_autorange(min_run_time=min_run_time).times
    return times


def _summary(times):
    q = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    return {"median_s": statistics.median(times), "q1_s": q[0], "q3_s": q[2], "blocks": len(times)}


RATE_UNITS = {
    "flop": ("GFLOP/s", 1e9, "matmul_gflops"),
    "byte": ("GB/s", 1e9, "copy_gbps"),
    "image": ("img/s", 1, None),
}


def run_row(row, device, ceilings, rounds, min_run_time, quick=False):
    """Builds, checks and times one row; returns its JSON record."""
    shape = row.shape.shrink() if quick else row.shape
    record = {"name": row.name, "op": row.op, "what": row.what, "shape": dataclasses.asdict(shape)}
    record["label"] = shape.label()
    record["goal"] = row.goal
    reason = missing_requirement(row.op, device)
    if reason:
        return {**record, "status": "skipped", "reason": reason}
    torch.manual_seed(0)
    try:
        case = BUILDERS[row.op](shape, device)
        worst = case.check() if case.check else check_close(case.ours(), case.theirs())
    except Exception as e:  # noqa: BLE001  (a wrong or crashing kernel is a result to report)
        return {**record, "status": "FAILED", "reason": f"{type(e).__name__}: {str(e).splitlines()[0]}"}
    record["check"] = {"passed": True, "max_abs_diff": worst}

    times = time_interleaved(case.ours, case.theirs, rounds, min_run_time)
    unit, scale, ceiling_key = RATE_UNITS[case.unit]
    record.update(status="ok", work=case.work, work_unit=case.unit, rate_unit=unit)
    for who in ("ours", "torch"):
        summary = _summary(times[who])
        summary["rate"] = case.work / summary["median_s"] / scale
        if ceiling_key:
            summary["fraction_of_ceiling"] = summary["rate"] / ceilings[ceiling_key]
        record[who] = summary
    record["ratio"] = record["torch"]["median_s"] / record["ours"]["median_s"]
    return record


def measure_ceilings(device, quick=False, min_run_time=0.3, rounds=3):
    """Copy bandwidth (GB/s, read + written) and float32 matmul rate (GFLOP/s) at the current thread count.

    A ceiling is what the machine can do, so each is the fastest block of `rounds` alternating
    measurements: on a shared machine a median would report the neighbours' load instead.
    """
    gpu = device.type == "cuda"
    numel = (1 << 20) if quick else (1 << 28 if gpu else 1 << 25)  # well past the last-level cache
    n = 256 if quick else (8192 if gpu else 2048)
    src = torch.randn(numel, device=device)
    dst = torch.empty_like(src)
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    threads = torch.get_num_threads()
    copy = torch_benchmark.Timer("dst.copy_(src)", globals={"dst": dst, "src": src}, num_threads=threads)
    mm = torch_benchmark.Timer("torch.mm(a, b)", globals={"a": a, "b": b, "torch": torch}, num_threads=threads)
    copy_s = mm_s = math.inf
    for _ in range(1 if quick else rounds):
        copy_s = min(copy_s, *copy.blocked_autorange(min_run_time=min_run_time).times)
        mm_s = min(mm_s, *mm.blocked_autorange(min_run_time=min_run_time).times)
    return {
        "copy_gbps": 2 * numel * src.element_size() / copy_s / 1e9,
        "copy_bytes": numel * src.element_size(),
        "matmul_gflops": 2 * n**3 / mm_s / 1e9,
        "matmul_n": n,
    }


def _conv_algorithm():
    try:
        return importlib.import_module("lenet_ext.backends").current_conv_algorithm()
    except (ImportError, AttributeError):
        return None


def _load_average():
    """Other processes' load skews every timing on a shared machine: recorded, so readers can judge."""
    try:
        return list(os.getloadavg())
    except OSError:
        return None


def machine_info(device):
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu,
        "cpu_isa": lenet_ext.backends.cpu_isa(),  # the instruction-set level of our CPU kernels in this run
        # torch's own levels: ATen's CPU capability, and oneDNN's and MKL's limits when set (bench/run.sh
        # LEVEL=avx2 holds both sides to AVX2 on a machine that has more)
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_isa_limits": {
            k: os.environ[k] for k in ("ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS") if k in os.environ
        },
        "logical_cpus": os.cpu_count(),
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu,
        "threads": torch.get_num_threads(),
        "load_average_at_start": _load_average(),
        "torch": torch.__version__,
        "lenet_ext": lenet_ext.__version__,
    }
    return info


def describe_machine(info):
    """One line naming where the figures come from: the device, the CPU with the level of our CPU
    kernels, the thread count and torch's version."""
    cpu = f"{info['cpu']}, CPU level {info['cpu_isa']}"
    where = cpu if info["device"] == "cpu" else f"{info['device_name']}, host {cpu}"
    return f"{where}, {info['threads']} threads, torch {info['torch']}"


# ------------------------------------------------------------------------------------------- output
def format_table(records, ceilings):
    head = (
        f"{'row':<58} {'ours ms':>9} {'torch ms':>9} {'torch/ours':>10} {'goal':>5}  "
        f"{'ours rate':>16} {'torch rate':>16}"
    )
    lines = [
        f"ceilings: copy {ceilings['copy_gbps']:.1f} GB/s, float32 matmul {ceilings['matmul_gflops']:.1f} GFLOP/s",
        head,
        "-" * len(head),
    ]
    for r in records:
        name = r["name"] if len(r["name"]) <= 58 else r["name"][:57] + "~"
        if r["status"] != "ok":
            lines.append(f"{name:<58} {r['status']}: {r['reason']}")
            continue
        goal = f"{r['goal']:.1f}x" if r["goal"] else ""

        lines.append(
            f"{name:<58} {1e3 * r['ours']['median_s']:9.3f} {1e3 * r['torch']['median_s']:9.3f} "
            f"{r['ratio']:9.2f}x {goal:>5}  {_rate(r, 'ours'):>16} {_rate(r, 'torch'):>16}"
        )
    return "\n".join(lines)


def _rate(record, side):
    s = record[side]
    frac = f" {100 * s['fraction_of_ceiling']:3.0f}%" if "fraction_of_ceiling" in s else ""
    return f"{s['rate']:.3g} {record['rate_unit']}{frac}"


def plot_ratios(records, path, title):
    """A horizontal bar per timed row, drawn from 1.0 to its ratio on a log axis (right of 1: ours faster),
    with its goal (GOALS) as a tick where the row has one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timed = [r for r in records if r["status"] == "ok"]
    fig, ax = plt.subplots(figsize=(8, 0.2 * max(len(timed), 1) + 1.1), dpi=72)
    ys = range(len(timed))
    ratios = [r["ratio"] for r in timed]
    colors = ["#2a7d2a" if x >= 1 else "#b03a2e" for x in ratios]
    ax.barh(ys, [x - 1 for x in ratios], left=1, color=colors, height=0.7)
    for y, r in zip(ys, timed):
        ax.annotate(f"{r['ratio']:.2f}x", (r["ratio"], y), xytext=(3 if r["ratio"] >= 1 else -3, 0),
                    textcoords="offset points", ha="left" if r["ratio"] >= 1 else "right", va="center",
                    fontsize=6)  # fmt: skip
        if r["goal"]:
            ax.plot([r["goal"]], [y], marker="|", markersize=9, color="black")
    ax.set_xscale("log")
    lo, hi = min(ratios + [1.0]), max(ratios + [1.0] + [r["goal"] or 1.0 for r in timed])
    ax.set_xlim(lo / 2, hi * 2)
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_yticks(list(ys), [r["name"] for r in timed], fontsize=6)
    ax.invert_yaxis()
    ax.set_xlabel("torch time / our time (right of 1: ours faster; | marks the goal)", fontsize=7)
    ax.tick_params(axis="x", labelsize=7)
    ax.set_title(title, fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# --------------------------------------------------------------------------------------------- main
def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="lenet-ext bench", description="Time lenet_ext's kernels against torch's built-ins, side by side."
    )
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--quick", action="store_true", help="smoke mode: tiny shapes, one short round")
    p.add_argument("--json", metavar="PATH", help="where to write the results (default: none)")
    p.add_argument("--plot", metavar="PATH", help="where to write the PNG chart of ratios (default: none)")
    p.add_argument("--threads", type=int, help="torch.set_num_threads(N) before anything runs")
    p.add_argument("--filter", metavar="SUBSTRING", help="only rows whose name contains this (case-insensitive)")
    p.add_argument(
        "--rounds", type=int, help="interleaved timing rounds per side (default 4 on cpu, 3 on cuda, 1 with --quick)"
    )
    p.add_argument(
        "--min-time",
        type=float,
        help="seconds per blocked_autorange (default 0.15 on cpu, 0.05 on cuda; --quick: one call)",
    )
    p.add_argument(
        "--conv-algorithm",
        choices=["auto", "direct", "im2col"],
        help="force lenet_ext.backends.conv_algorithm for the run (CPU conv2d), to back the heuristic with numbers",
    )
    p.add_argument(
        "--cpu-isa",
        choices=["auto", "default", "avx2", "avx512"],
        default="auto",
        help="force the instruction-set level of lenet_ext's CPU kernels (lenet_ext.backends.cpu_isa) for the "
        "run, to measure each level on one machine; auto keeps the one chosen for this CPU",
    )
    p.add_argument("--list", action="store_true", help="print the row names and exit")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    rows = [r for r in ROWS if not args.filter or args.filter.lower() in r.name.lower()]
    if args.list:
        print("\n".join(r.name for r in rows))
        return 0
    if not rows:
        print(f"no row matches --filter {args.filter!r}; --list shows them", file=sys.stderr)
        return 2
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: torch sees no CUDA device", file=sys.stderr)
        return 2
    if args.threads is not None and args.threads < 1:
        print("--threads must be at least 1", file=sys.stderr)
        return 2
    # Our kernels compute in full float32, so torch's must too: cuDNN convolutions may use TF32 by default,
    # which would be both faster and outside float32 tolerances.
    previous = torch.get_num_threads(), torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    # Called in-process (tests, notebooks): leave lenet_ext and torch as we found them, even when one of
    # the settings is refused after another was made.
    with contextlib.ExitStack() as settings:
        if args.conv_algorithm:
            settings.enter_context(lenet_ext.backends.conv_algorithm(args.conv_algorithm))
        if args.cpu_isa != "auto":
            try:  # a level this CPU or this build lacks is refused
                settings.enter_context(lenet_ext.backends.cpu_isa(args.cpu_isa))
            except (ValueError, RuntimeError) as e:
                print(f"--cpu-isa {args.cpu_isa}: {e}", file=sys.stderr)
                return 2
        try:
            if args.threads is not None:
                torch.set_num_threads(args.threads)
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
            return run(args, rows)
        finally:
            torch.set_num_threads(previous[0])
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = previous[1:]


def run(args, rows):
    device = torch.device(args.device)
    # A GPU does thousands of calls in 0.05 s, so its full suite fits in well under a minute
    rounds = args.rounds or (1 if args.quick else 3 if device.type == "cuda" else 4)
    min_time = args.min_time or (None if args.quick else 0.05 if device.type == "cuda" else 0.15)

    info = machine_info(device)
    tf32 = ", TF32 off (both sides full float32)" if device.type == "cuda" else ""
    print(describe_machine(info) + tf32, flush=True)
    ceilings = measure_ceilings(device, quick=args.quick, min_run_time=0.01 if args.quick else 0.2)
    records = []
    for row in rows:
        records.append(run_row(row, device, ceilings, rounds, min_time, quick=args.quick))
        r = records[-1]
        status = f"{r['ratio']:.2f}x" if r["status"] == "ok" else f"{r['status']} ({r['reason']})"
        print(f"  {row.name}: {status}", file=sys.stderr, flush=True)
    print(format_table(records, ceilings))

    result = {
        "schema": 1,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": info,
        "quick": args.quick,
        "rounds": rounds,
        "min_run_time_s": min_time,
        "tf32": False,
        "conv_algorithm": _conv_algorithm(),
        "cpu_isa_requested": args.cpu_isa,
        "ceilings": ceilings,
        "load_average_at_end": _load_average(),
        "rows": records,
    }
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
            f.write("\n")
    if args.plot:
        os.makedirs(os.path.dirname(os.path.abspath(args.plot)), exist_ok=True)
        title = f"lenet_ext vs torch: {describe_machine(info)}, {result['date'][:10]}"
        plot_ratios(records, args.plot, title)
    failed = [r["name"] for r in records if r["status"] == "FAILED"]
    if failed:
        print(f"{len(failed)} row(s) FAILED their correctness check: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
