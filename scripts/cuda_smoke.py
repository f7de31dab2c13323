"""Calls every lenet_ext CUDA operator once on small inputs: the workload compute-sanitizer checks.

Covers both conv forward algorithms (direct, implicit GEMM with and without vector loads), both index
widths' host paths are the same code, every backward, and every dtype; exits non-zero on a mismatch.
"""

import sys

import torch
import torch.nn.functional as F

import lenet_ext  # noqa: F401

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


def main():
    worst = 0.0
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        worst = max(worst, conv_case((2, 3, 12, 12), (6, 3, 5, 5), dtype))  # direct
        worst = max(worst, conv_case((2, 8, 10, 9), (40, 8, 3, 3), dtype, stride=(2, 1), dil=(1, 2)))  # GEMM
        worst = max(worst, conv_case((2, 7, 9, 9), (36, 7, 3, 3), dtype, groups=1))  # K % 4 != 0
        x = torch.randn(2, 3, 11, 10, device="cuda", dtype=dtype)
        out, idx = ops.max_pool2d_forward(x, [3, 3], [2, 2], [1, 1], [1, 1], True)
        ops.max_pool2d_forward_values(x, [3, 3], [2, 2], [1, 1], [1, 1], True)
        ops.max_pool2d_backward(torch.ones_like(out), x, idx, [3, 3], [2, 2], [1, 1], [1, 1], True)
        avg = ops.avg_pool2d_forward(x, [3, 3], [2, 2], [1, 1], True, False, None)
        ops.avg_pool2d_backward(torch.ones_like(avg), x, [3, 3], [2, 2], [1, 1], True, False, None)
        worst = max(worst, (out.float() - F.max_pool2d(x.float(), 3, 2, 1, ceil_mode=True)).abs().max().item())
    torch.cuda.synchronize()
    print(f"cuda_smoke: every operator ran; worst relative conv error {worst:.3g}")
    return 0 if worst < 5e-2 else 1


if __name__ == "__main__":
    sys.exit(main())
