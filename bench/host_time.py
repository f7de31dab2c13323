"""Host time per call: small calls, whose time is the Python and C++ work around a kernel, ours beside torch's.

    python bench/host_time.py [--device cpu|cuda] [--threads N] [--quick] [--json out.json]

The CUDA issue asks that a LeNet-sized call cost no more host time than torch's built-in layer. On a GPU
the kernels of such a call take a few microseconds and run while the host prepares the next one, so a
call's time is its host time; on the CPU the rows below are small enough that the same holds. Each row
is a user's call (lenet_ext.functional against torch.nn.functional), checked against torch first, then
timed through `lenet-ext bench`'s harness (lenet_ext.bench.cli.run_rows), with our raw operator beside
it (operator time): the difference between the two is our Python's share.

Rows: a convolution with no gradient wanted; LeNet's first layer at batch 1 with its weight needing a
gradient (the autograd graph is recorded), and with its backward too; max and average pooling of LeNet's
first map at batch 1 with its input needing a gradient, and of a single 2x2 window, whose kernel costs
nothing, so that on the CPU too the row is the host time alone. Rates are calls per second ("img/s", one
image).
"""

import sys

import torch
import torch.nn.functional as F

from lenet_ext import functional as LF
from lenet_ext.bench import cli
from lenet_ext.bench.cases import Case
from lenet_ext.bench.suite import Conv, Pool, Row

ops = torch.ops.lenet_ext

TINY = Conv(1, 1, 8, 8, 2, 3, padding=1)
LENET_CONV1 = Conv(1, 1, 28, 28, 6, 5, padding=2)
LENET_POOL1 = Pool(1, 6, 28, 28, 2, 2)
SPECK = Pool(1, 1, 2, 2, 2, 2)  # one window: the kernel's share is nil, the time is the call's overhead


def _conv_tensors(shape, device, grad):
    x = torch.randn(shape.n, shape.c, shape.h, shape.w, device=device)
    w = torch.randn(shape.o, shape.c // shape.groups, shape.k, shape.k, device=device).requires_grad_(grad)
    b = torch.randn(shape.o, device=device).requires_grad_(grad)
    return x, w, b, (shape.stride, shape.padding, 1, shape.groups)


def _op_conf(shape):
    return [shape.stride] * 2, [shape.padding] * 4, [1, 1], shape.groups


def conv(shape, device, grad, backward):
    x, w, b, conf = _conv_tensors(shape, device, grad)
    out_grad = torch.ones(shape.n, shape.o, *shape.out_size(), device=device)

    def call(conv2d):
        if backward:
            return lambda: torch.autograd.grad(conv2d(x, w, b, *conf), (w, b), out_grad)
        return lambda: conv2d(x, w, b, *conf)

    plain = [t.detach() for t in (x, w, b)]

    def operator():
        out = ops.conv2d_forward(*plain, *_op_conf(shape))
        if backward:
            return ops.conv2d_backward(out_grad, plain[0], plain[1], *_op_conf(shape), [False, True, True])[1:]
        return out

    return Case(call(LF.conv2d), call(F.conv2d), work=shape.n, unit="image", operator=operator)


def pool(kind, shape, device):
    x = torch.randn(shape.n, shape.c, shape.h, shape.w, device=device, requires_grad=True)
    conf = (shape.k, shape.stride)
    ours, theirs = getattr(LF, f"{kind}_pool2d"), getattr(F, f"{kind}_pool2d")
    plain = x.detach()
    if kind == "max":
        operator = lambda: ops.max_pool2d_forward(plain, [shape.k] * 2, [shape.stride] * 2, [0, 0], [1, 1], False)[0]  # noqa: E731
    else:
        operator = lambda: ops.avg_pool2d_forward(plain, [shape.k] * 2, [shape.stride] * 2, [0, 0], False, True, None)  # noqa: E731
    return Case(lambda: ours(x, *conf), lambda: theirs(x, *conf), work=shape.n, unit="image", operator=operator)


JOBS = [
    (Row("tiny 1x1x8x8, no grad", "host.conv2d.forward", TINY), lambda s, d: conv(s, d, False, False)),
    (Row("LeNet conv1 batch 1, weight grad", "host.conv2d.forward", LENET_CONV1), lambda s, d: conv(s, d, True, False)),
    (
        Row("LeNet conv1 batch 1", "host.conv2d.forward+backward_weight_bias", LENET_CONV1),
        lambda s, d: conv(s, d, True, True),
    ),
    (Row("LeNet pool1 batch 1, input grad", "host.max_pool2d.forward", LENET_POOL1), lambda s, d: pool("max", s, d)),
    (Row("LeNet pool1 batch 1, input grad", "host.avg_pool2d.forward", LENET_POOL1), lambda s, d: pool("avg", s, d)),
    (Row("one 2x2 window, input grad", "host.max_pool2d.forward", SPECK), lambda s, d: pool("max", s, d)),
    (Row("one 2x2 window, input grad", "host.avg_pool2d.forward", SPECK), lambda s, d: pool("avg", s, d)),
]


def main(argv=None) -> int:
    return cli.run_script("host_time", __doc__, JOBS, argv)


if __name__ == "__main__":
    sys.exit(main())
