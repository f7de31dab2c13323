"""Calls every lenet_ext CUDA operator once on small inputs: the workload compute-sanitizer checks.

Covers conv under every CUDA conv algorithm (lenet_ext.backends.cuda_conv_algorithm: the verified direct
forward and implicit GEMM with and without vector loads, and the opt-in direct kernels, on a strided stem
and a depthwise layer too), every backward, and every dtype; LeNet's fused block through both CUDA passes
(lenet_ext.backends.cuda_fused_block); pooling in NCHW and channels_last
through every kernel family (lenet_ext.backends.cuda_pool_layout, each with both ways of splitting the
planar forwards, lenet_ext.backends.cuda_pool_planar), with vector widths 1 to 8, and integer max
pooling. Exits non-zero on a mismatch.
"""

import sys

import torch
import torch.nn.functional as F

from lenet_ext.backends import (
    CUDA_CONV_ALGORITHMS,
    CUDA_FUSED_BLOCKS,
    CUDA_POOL_LAYOUTS,
    CUDA_POOL_PLANAR,
    cuda_conv_algorithm,
    cuda_fused_block,
    cuda_pool_layout,
    cuda_pool_planar,
)

# every family each setting names ("auto" runs one of them)
POOL_KERNELS = [(layout, planar) for layout in CUDA_POOL_LAYOUTS[1:] for planar in CUDA_POOL_PLANAR[1:]]

ops = torch.ops.lenet_ext


def conv_case(x_shape, w_shape, dtype, stride=(1, 1), pad=(1, 1, 1, 1), dil=(1, 1), groups=1):
    x = torch.randn(x_shape, device="cuda", dtype=dtype)
    w = torch.randn(w_shape, device="cuda", dtype=dtype)
    b = torch.randn(w_shape[0], device="cuda", dtype=dtype)
    conf = (stride, pad, dil, groups)
    out = ops.conv2d_forward(x, w, b, *conf)
    ops.conv2d_backward(torch.ones_like(out), x, w, *conf, [True, True, True])
    ref = F.conv2d(F.pad(x.double(), (pad[2], pad[3], pad[0], pad[1])), w.double(), b.double(), stride, 0, dil, groups)
    return (out.double() - ref).abs().max().item() / max(ref.abs().max().item(), 1.0)


def fused_case(dtype):
    """LeNet's fused block, forward and backward, through both CUDA passes (an odd map: leftover rows)."""
    x = torch.randn(3, 2, 13, 12, device="cuda", dtype=dtype)
    w = torch.randn(6, 2, 5, 5, device="cuda", dtype=dtype)
    b = torch.randn(6, device="cuda", dtype=dtype)
    conf = ([1, 1], [2, 2, 2, 2], [1, 1], 1, [2, 2])
    ref = F.avg_pool2d(torch.sigmoid(F.conv2d(x.double(), w.double(), b.double(), padding=2)), 2)
    worst = 0.0
    for block in CUDA_FUSED_BLOCKS[1:]:  # "composite" and "fused" ("auto" runs one of them)
        with cuda_fused_block(block):
            out, act = ops.conv2d_sigmoid_avgpool2d(x, w, b, *conf)
            ops.conv2d_sigmoid_avgpool2d_backward(torch.ones_like(out), x, w, act, *conf, [True, True, True])
            worst = max(worst, (out.double() - ref).abs().max().item())
    return worst


MAX_CONF = ([3, 3], [2, 2], [1, 1], [1, 1], True)
AVG_CONF = ([3, 3], [2, 2], [1, 1], True, False, None)


def pool_case(x):
    """Every pooling operator on x, through every kernel family; the largest max-value error."""
    worst = 0.0
    for layout, planar in POOL_KERNELS:
        with cuda_pool_layout(layout), cuda_pool_planar(planar):
            out, idx = ops.max_pool2d_forward(x, *MAX_CONF)
            ops.max_pool2d_forward_values(x, *MAX_CONF)
            ops.max_pool2d_backward(torch.ones_like(out), x, idx, *MAX_CONF)
            avg = ops.avg_pool2d_forward(x, *AVG_CONF)
            ops.avg_pool2d_backward(torch.ones_like(avg), x, *AVG_CONF)
            want = F.max_pool2d(x.float(), 3, 2, 1, ceil_mode=True)
            worst = max(worst, (out.float() - want).abs().max().item())
            # 2x2 stride 2: the runs' vector loads of paired columns (ceil mode: a partial last window)
            pairs = ops.max_pool2d_forward_values(x, [2, 2], [2, 2], [0, 0], [1, 1], True)
            ops.avg_pool2d_forward(x, [2, 2], [2, 2], [0, 0], True, True, None)
            worst = max(worst, (pairs.float() - F.max_pool2d(x.float(), 2, 2, ceil_mode=True)).abs().max().item())
    return worst


def main():
    worst = 0.0
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        for algorithm in CUDA_CONV_ALGORITHMS:
            with cuda_conv_algorithm(algorithm):
                worst = max(worst, conv_case((2, 3, 12, 12), (6, 3, 5, 5), dtype))  # narrow: direct
                worst = max(worst, conv_case((2, 8, 10, 9), (40, 8, 3, 3), dtype, stride=(2, 1), dil=(1, 2)))
                worst = max(worst, conv_case((2, 7, 9, 9), (36, 7, 3, 3), dtype, groups=1))  # K % 4 != 0
                worst = max(worst, conv_case((2, 3, 20, 19), (16, 3, 7, 7), dtype, stride=(2, 2), pad=(3, 3, 3, 3)))
                worst = max(worst, conv_case((2, 12, 9, 10), (12, 1, 3, 3), dtype, stride=(2, 2), groups=12))
        worst = max(worst, fused_case(dtype))
        for channels in (3, 8):  # 8 channels: the widest vectors in channels_last
            x = torch.randn(2, channels, 11, 10, device="cuda", dtype=dtype)
            for layout in (torch.contiguous_format, torch.channels_last):
                worst = max(worst, pool_case(x.contiguous(memory_format=layout)))
    for dtype in (torch.uint8, torch.int32, torch.int64):
        x = torch.randint(0, 100, (2, 8, 11, 10), device="cuda", dtype=dtype)
        for layout, planar in POOL_KERNELS:
            with cuda_pool_layout(layout), cuda_pool_planar(planar):
                out = ops.max_pool2d_forward(x.contiguous(memory_format=torch.channels_last), *MAX_CONF)[0]
                worst = max(worst, (out.float() - F.max_pool2d(x.float(), 3, 2, 1, ceil_mode=True)).abs().max().item())
    torch.cuda.synchronize()
    print(f"cuda_smoke: every operator ran; worst relative conv error {worst:.3g}")
    return 0 if worst < 5e-2 else 1


if __name__ == "__main__":
    sys.exit(main())
