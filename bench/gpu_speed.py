"""GPU speed beside torch, for the CUDA issue's targets, measured in one run on one device.

    python bench/gpu_speed.py --json out.json

* copy bandwidth: the device's measured ceiling (a 1 GiB device-to-device copy; bytes read + written);
* pooling forward: GB/s (input read + outputs written) as a fraction of that ceiling, and the ratio
  to torch's own pooling;
* conv2d float32 forward (and forward + backward) with TF32 off: LeNet's two layers at batch 256 and a
  64->64 3x3 layer at 56x56, batch 32, against cuDNN (cudnn.benchmark on, so cuDNN picks its best).

Every case is checked against torch before it is timed; times are medians from torch.utils.benchmark.
"ratio" is torch's time / ours: above 1 means ours is faster.
"""

import argparse
import json
import sys

import torch
import torch.nn.functional as F
from torch.utils import benchmark

import lenet_ext  # noqa: F401

ops = torch.ops.lenet_ext


def median_s(fn, min_run_time=0.25):
    fn()
    torch.cuda.synchronize()
    return benchmark.Timer(stmt="fn()", globals={"fn": fn}).blocked_autorange(min_run_time=min_run_time).median


def copy_bandwidth():
    src = torch.empty(2**28, device="cuda")  # 1 GiB of float32
    dst = torch.empty_like(src)
    t = median_s(lambda: dst.copy_(src))
    return 2 * src.numel() * 4 / t / 1e9


def pooling(copy_gbs):
    rows = []
    x = torch.randn(32, 64, 112, 112, device="cuda")
    cases = {
        "max_pool2d 2x2/2 values": (
            lambda: ops.max_pool2d_forward_values(x, [2, 2], [2, 2], [0, 0], [1, 1], False),
            lambda: F.max_pool2d(x, 2),
            0,
        ),
        "max_pool2d 2x2/2 + indices": (
            lambda: ops.max_pool2d_forward(x, [2, 2], [2, 2], [0, 0], [1, 1], False),
            lambda: F.max_pool2d(x, 2, return_indices=True),
            8,
        ),
        "max_pool2d 3x3/2 pad 1 values": (
            lambda: ops.max_pool2d_forward_values(x, [3, 3], [2, 2], [1, 1], [1, 1], False),
            lambda: F.max_pool2d(x, 3, 2, 1),
            0,
        ),
        "avg_pool2d 2x2/2": (
            lambda: ops.avg_pool2d_forward(x, [2, 2], [2, 2], [0, 0], False, True, None),
            lambda: F.avg_pool2d(x, 2),
            0,
        ),
    }
    for name, (ours, theirs, index_bytes) in cases.items():
        got, want = ours(), theirs()
        got, want = (
            (got if isinstance(got, torch.Tensor) else got[0]),
            (want if isinstance(want, torch.Tensor) else want[0]),
        )
        correct = bool(torch.allclose(got, want, rtol=1e-5, atol=1e-6))
        t_ours, t_torch = median_s(ours), median_s(theirs)
        moved = x.numel() * 4 + got.numel() * (4 + index_bytes)
        gbs = moved / t_ours / 1e9
        rows.append(
            dict(
                case=name,
                shape=list(x.shape),
                correct=correct,
                ours_ms=t_ours * 1e3,
                torch_ms=t_torch * 1e3,
                ratio=t_torch / t_ours,
                ours_gbs=gbs,
                fraction_of_copy=gbs / copy_gbs,
            )
        )
    return rows


def conv(x_shape, w_shape, padding):
    x = torch.randn(x_shape, device="cuda", requires_grad=True)
    w = torch.randn(w_shape, device="cuda", requires_grad=True)
    b = torch.randn(w_shape[0], device="cuda", requires_grad=True)
    conf = ([1, 1], [padding] * 4, [1, 1], 1)
    ours_fwd = lambda: ops.conv2d_forward(x, w, b, *conf)  # noqa: E731
    torch_fwd = lambda: F.conv2d(x, w, b, padding=padding)  # noqa: E731
    out = ours_fwd()
    ref = torch_fwd()
    correct = bool(torch.allclose(out, ref, rtol=1e-4, atol=1e-4))
    go = torch.randn_like(ref)
    ours_bwd = lambda: ops.conv2d_backward(go, x, w, *conf, [True, True, True])  # noqa: E731
    torch_bwd = lambda: torch.autograd.grad(F.conv2d(x, w, b, padding=padding), (x, w, b), go)  # noqa: E731
    gi, gw, gb = ours_bwd()
    rgi, rgw, rgb = torch_bwd()
    scale = lambda t: max(t.abs().max().item(), 1.0)  # noqa: E731
    correct_bwd = all((g - r).abs().max().item() <= 1e-4 * scale(r) for g, r in ((gi, rgi), (gw, rgw), (gb, rgb)))
    with torch.no_grad():
        t_ours, t_torch = median_s(ours_fwd), median_s(torch_fwd)
    t_ours_train = median_s(lambda: (ours_fwd(), ours_bwd()))
    t_torch_train = median_s(torch_bwd)  # torch_bwd runs the forward too
    flops = 2 * ref.numel() * w_shape[1] * w_shape[2] * w_shape[3]
    return dict(
        case=f"conv2d x{list(x_shape)} w{list(w_shape)} pad {padding}",
        correct=correct and correct_bwd,
        ours_ms=t_ours * 1e3,
        torch_ms=t_torch * 1e3,
        ratio=t_torch / t_ours,
        ours_gflops=flops / t_ours / 1e9,
        fwd_bwd_ours_ms=t_ours_train * 1e3,
        fwd_bwd_torch_ms=t_torch_train * 1e3,
        fwd_bwd_ratio=t_torch_train / t_ours_train,
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_speed: no CUDA device", file=sys.stderr)
        return 1
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    copy_gbs = copy_bandwidth()
    result = dict(
        device=torch.cuda.get_device_name(),
        torch=torch.__version__,
        cuda=torch.version.cuda,
        cudnn=torch.backends.cudnn.version(),
        tf32=False,
        copy_gbs=copy_gbs,
        pooling=pooling(copy_gbs),
        conv2d=[
            conv((256, 1, 28, 28), (6, 1, 5, 5), 2),  # LeNet conv1
            conv((256, 6, 14, 14), (16, 6, 5, 5), 0),  # LeNet conv2
            conv((32, 64, 56, 56), (64, 64, 3, 3), 1),
        ],
    )
    print(f"{result['device']}: copy {copy_gbs:.0f} GB/s (read + write)")
    for row in result["pooling"] + result["conv2d"]:
        extra = f" {row['fraction_of_copy']:.0%} of copy" if "fraction_of_copy" in row else ""
        extra += f"  fwd+bwd x{row['fwd_bwd_ratio']:.2f}" if "fwd_bwd_ratio" in row else ""
        print(
            f"{row['case']:<58} ok={row['correct']!s:<5} ours {row['ours_ms']:.3f} ms  torch {row['torch_ms']:.3f} ms"
            f"  x{row['ratio']:.2f}{extra}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    ok = all(r["correct"] for r in result["pooling"] + result["conv2d"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
