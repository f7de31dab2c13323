"""GPU speed beside torch, for the CUDA issue's targets, measured in one run on one device.

    python bench/gpu_speed.py [--json out.json] [--quick] [--l2-flush off]

Runs through `lenet-ext bench`'s harness (lenet_ext.bench.cli.run_rows): the same header naming the GPU,
ceilings (copy bandwidth of a 1 GiB device-to-device copy, bytes read + written; float32 matmul), checks
against torch before timing, interleaved torch.utils.benchmark timing, L2 flush, table and JSON:

* pooling forward on 32x64x112x112: GB/s (input read + outputs written, indices too where returned) as a
  fraction of the copy ceiling, and the ratio to torch's own pooling; each row again with the opt-in
  lenet_ext.backends.cuda_pool_planar("runs") kernels (a run of outputs per thread, vector loads for 2x2
  stride-2 windows);
* conv2d float32 forward, and forward + every gradient through autograd, with TF32 off: LeNet's two
  layers at batch 256 and a 64->64 3x3 layer at 56x56, batch 32, against cuDNN (cudnn.benchmark on, so
  cuDNN picks its best);
* the 64->64 layer's forward in float16 and bfloat16, ours with the default kernels and with
  lenet_ext.backends.cuda_conv_algorithm("tensor_cores"), against cuDNN's tensor-core kernels.

Every row is timed as a user calls it (call time: lenet_ext.functional against torch.nn.functional), and
our raw operators doing the same work are timed beside it (operator time). The forward rows are the
suite's own (`lenet-ext bench --device cuda` has the same conv2d.forward rows), so the two agree.
"ratio" is torch's time / ours: above 1 means ours is faster.
"""

import argparse
import dataclasses
import math
import sys

import torch
import torch.nn.functional as F

from lenet_ext import functional as LF
from lenet_ext.backends import cuda_conv_algorithm, cuda_pool_planar
from lenet_ext.bench import cli
from lenet_ext.bench.cases import pool_call_case
from lenet_ext.bench.suite import CONV64_B32, LENET_CONV1, LENET_CONV2, Pool, Row

ops = torch.ops.lenet_ext


def conv_forward_backward(shape, device):
    """Forward and the gradients of input, weight and bias, through autograd on both sides; ours' operator
    time is our forward and backward operators (every gradient asked for)."""
    x = torch.randn(shape.n, shape.c, shape.h, shape.w, device=device)
    fan_in = shape.c // shape.groups * shape.k * shape.k
    w = torch.randn(shape.o, shape.c // shape.groups, shape.k, shape.k, device=device) / math.sqrt(fan_in)
    b = torch.randn(shape.o, device=device)
    grad = torch.randn(shape.n, shape.o, *shape.out_size(), device=device)
    leaves = [t.detach().requires_grad_() for t in (x, w, b)]
    conf = (shape.stride, shape.padding, 1, shape.groups)
    op_conf = ([shape.stride] * 2, [shape.padding] * 4, [1, 1], shape.groups)

    def call(conv):
        return lambda: torch.autograd.grad(conv(*leaves, *conf), leaves, grad)

    def operator():
        ops.conv2d_forward(x, w, b, *op_conf)
        return ops.conv2d_backward(grad, x, w, *op_conf, [True, True, True])

    return cli.Case(
        call(LF.conv2d), call(F.conv2d), work=3 * shape.flops(), unit="flop", operator=operator, reads=(x, w, b, grad)
    )


def half_forward(dtype):
    """A Case builder: the forward in a 16-bit dtype; the check allows that dtype's rounding (both sides
    accumulate in float, in different orders). Run it under a cuda_conv_algorithm with `under`."""

    def build(shape, device):
        x = torch.randn(shape.n, shape.c, shape.h, shape.w, device=device, dtype=dtype)
        w = torch.randn(shape.o, shape.c // shape.groups, shape.k, shape.k, device=device, dtype=dtype)
        w /= math.sqrt(shape.c // shape.groups * shape.k * shape.k)
        conf = (None, shape.stride, shape.padding, 1, shape.groups)
        op_conf = ([shape.stride] * 2, [shape.padding] * 4, [1, 1], shape.groups)

        def ours():
            return LF.conv2d(x, w, *conf)

        def check():
            a, b = ours().float(), F.conv2d(x, w, *conf).float()
            eps = torch.finfo(dtype).eps
            torch.testing.assert_close(a, b, rtol=4 * eps, atol=4 * eps * max(1.0, b.abs().max().item()))
            return (a - b).abs().max().item()

        return cli.Case(
            ours, lambda: F.conv2d(x, w, *conf), work=shape.flops(), unit="flop", check=check,
            operator=lambda: ops.conv2d_forward(x, w, None, *op_conf), reads=(x, w),
        )  # fmt: skip

    return build


def under(setting, build):
    """A Case builder: build's case with ours, our operator and its check run inside setting() (a
    lenet_ext.backends choice), so the check before timing checks those kernels too."""

    def wrapped(shape, device):
        case = build(shape, device)

        def inside(f):
            def run():
                with setting():
                    return f()

            return run

        return dataclasses.replace(
            case,
            ours=inside(case.ours),
            operator=case.operator and inside(case.operator),
            check=case.check and inside(case.check),
        )

    return wrapped


POOL_MAPS = (32, 64, 112, 112)


def pool_job(what, kind, window, indices=False, runs=False):
    """A pooling forward on POOL_MAPS as a user calls it, with the default kernels or the opt-in runs."""

    def build(shape, device):
        return pool_call_case(kind, shape, device, return_indices=indices)

    row = Row(
        f"{what} {'x'.join(map(str, POOL_MAPS))}{' (runs)' if runs else ''}",
        f"{kind}_pool2d.forward{'_with_indices' if indices else ''}",
        Pool(*POOL_MAPS, *window),
    )
    return row, under(lambda: cuda_pool_planar("runs"), build) if runs else build


CONVS = [("LeNet conv1", LENET_CONV1), ("LeNet conv2", LENET_CONV2), ("64->64 3x3 b32", CONV64_B32)]
# (row, builder of its Case, or None for the suite's own operation)
JOBS = [
    *[
        job
        for runs in (False, True)
        for job in (
            pool_job("2x2 s2", "max", (2, 2), runs=runs),
            pool_job("2x2 s2", "max", (2, 2), indices=True, runs=runs),
            pool_job("3x3 s2 p1", "max", (3, 2, 1), runs=runs),
            pool_job("2x2 s2", "avg", (2, 2), runs=runs),
        )
    ],
    *[(Row(what, "conv2d.forward", shape), None) for what, shape in CONVS],
    *[(Row(what, "conv2d.forward+backward", shape), conv_forward_backward) for what, shape in CONVS],
    *[
        (
            Row(f"64->64 3x3 b32 {str(dtype)[6:]} ({algorithm})", "conv2d.forward", CONV64_B32),
            under(lambda algorithm=algorithm: cuda_conv_algorithm(algorithm), half_forward(dtype)),
        )
        for dtype in (torch.float16, torch.bfloat16)
        for algorithm in ("auto", "tensor_cores")
    ],
]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_run_options(parser)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(
            "gpu_speed: torch sees no CUDA device; this script times CUDA kernels only "
            "(on the CPU: lenet-ext bench, or bench/pool_variants.py)",
            file=sys.stderr,
        )
        return 2
    torch.backends.cudnn.benchmark = True
    return cli.run_rows(
        args,
        torch.device("cuda"),
        JOBS,
        cuda=torch.version.cuda,
        cudnn=torch.backends.cudnn.version(),
        cudnn_benchmark=True,
    )


if __name__ == "__main__":
    sys.exit(main())
