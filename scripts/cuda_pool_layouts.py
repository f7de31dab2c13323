"""Channels-last pooling on CUDA: the planar kernels (copy to NCHW and back) against the native channels-last
kernels (lenet_ext.backends.cuda_pool_layout), on a few large inputs.

Each row first checks that both families give the same values, indices and gradients as torch (on an NCHW
copy: torch's own channels-last kernels are not the reference, see tests/test_pool2d.py), then times them
with torch.utils.benchmark. Prints a table and, with --json, writes it. Needs a GPU; exits 0 without one.
"""

import argparse
import json
import sys

import torch
import torch.nn.functional as F
from torch.utils import benchmark

from lenet_ext.backends import CUDA_POOL_LAYOUTS, cuda_pool_layout

LAYOUTS = [layout for layout in CUDA_POOL_LAYOUTS if layout != "auto"]  # the two families, side by side

ops = torch.ops.lenet_ext

# (name, input shape N x C x H x W, kernel, stride, padding)
CASES = [
    ("3x3 s2 p1, 64 ch 112x112", (32, 64, 112, 112), 3, 2, 1),
    ("2x2 s2, 128 ch 56x56", (32, 128, 56, 56), 2, 2, 0),
    ("LeNet pool1, 6 ch 28x28", (256, 6, 28, 28), 2, 2, 0),
]


def calls(x, k, s, p):
    """The four pooling operators on x, as closures, and the max indices they need."""
    mconf = ([k, k], [s, s], [p, p], [1, 1], False)
    aconf = ([k, k], [s, s], [p, p], False, True, None)
    out, idx = ops.max_pool2d_forward(x, *mconf)
    go = torch.randn_like(out)
    return {
        "max forward": lambda: ops.max_pool2d_forward(x, *mconf),
        "max backward": lambda: ops.max_pool2d_backward(go, x, idx, *mconf),
        "avg forward": lambda: ops.avg_pool2d_forward(x, *aconf),
        "avg backward": lambda: ops.avg_pool2d_backward(go, x, *aconf),
    }


def check(x, k, s, p):
    """Both kernel families against torch on an NCHW copy: values, indices, both gradients."""
    xc = x.contiguous().requires_grad_()
    want, want_idx = F.max_pool2d(xc, k, s, p, return_indices=True)
    go = torch.randn_like(want)
    (want_gx,) = torch.autograd.grad(want, xc, go)
    want_avg = F.avg_pool2d(xc, k, s, p)
    (want_agx,) = torch.autograd.grad(want_avg, xc, go)
    # torch sums float16 gradients in float16, ours in float32: up to a few float16 units apart
    tol = dict(rtol=1e-2, atol=1e-2) if x.dtype == torch.float16 else dict(rtol=1e-5, atol=1e-5)
    for layout in LAYOUTS:
        with cuda_pool_layout(layout):
            out, idx = ops.max_pool2d_forward(x, [k, k], [s, s], [p, p], [1, 1], False)
            assert torch.equal(out, want) and torch.equal(idx, want_idx), layout
            gx = ops.max_pool2d_backward(go, x, idx, [k, k], [s, s], [p, p], [1, 1], False)
            torch.testing.assert_close(gx, want_gx, **tol)
            torch.testing.assert_close(
                ops.avg_pool2d_forward(x, [k, k], [s, s], [p, p], False, True, None), want_avg, **tol
            )
            agx = ops.avg_pool2d_backward(go, x, [k, k], [s, s], [p, p], False, True, None)
            torch.testing.assert_close(agx, want_agx, **tol)
            assert out.is_contiguous(memory_format=torch.channels_last) and gx.is_contiguous(
                memory_format=torch.channels_last
            )


def seconds(fn):
    return benchmark.Timer("fn()", globals={"fn": fn}).blocked_autorange(min_run_time=0.2).median


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("cuda_pool_layouts: no CUDA device")
        return 0
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}; time in us, ratio = planar / native")
    rows = []
    for dtype in (torch.float32, torch.float16):
        for name, shape, k, s, p in CASES:
            x = torch.randn(shape, device="cuda", dtype=dtype).contiguous(memory_format=torch.channels_last)
            check(x, k, s, p)
            times = {}
            for layout in LAYOUTS:
                with cuda_pool_layout(layout):
                    for op, fn in calls(x, k, s, p).items():
                        times.setdefault(op, {})[layout] = seconds(fn)
            for op, t in times.items():
                row = {"case": name, "dtype": str(dtype), "op": op, **{f"{k}_s": v for k, v in t.items()}}
                rows.append(row)
                print(
                    f"  {str(dtype)[6:]:8} {name:28} {op:13} planar {t['planar'] * 1e6:9.1f}  "
                    f"native {t['native'] * 1e6:9.1f}  ratio {t['planar'] / t['native']:.2f}"
                )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
