"""Ours vs torch on the pooling shapes the issue names, interleaved in one run (medians, ratios).

    python bench/pool_variants.py [--quick]

A copy of the input is timed too, as the bandwidth ceiling. Checks each result against torch first.
"""

import argparse

import torch
import torch.nn.functional as F
from torch.utils import benchmark

import lenet_ext.functional as LF


def _median(fn, min_run_time):
    return benchmark.Timer(stmt="fn()", globals={"fn": fn}).blocked_autorange(min_run_time=min_run_time).median


def _runner(pool, x, g):
    """The timed call: the forward alone, or forward + backward when a gradient is given."""
    if g is None:
        return lambda: pool(x)

    def run():
        (gx,) = torch.autograd.grad(pool(x), x, g)
        return gx

    return run


def _copy(x):
    """Reads and writes x once into memory that is already mapped: the bandwidth ceiling."""
    out = torch.empty_like(x)
    return lambda: out.copy_(x.detach())


CASES = [
    # name, shape, channels_last, ours, theirs, needs grad
    (
        "max 3x3 s2 p1 fwd",
        (16, 64, 112, 112),
        False,
        lambda x: LF.max_pool2d(x, 3, 2, 1),
        lambda x: F.max_pool2d(x, 3, 2, 1),
        False,
    ),
    (
        "max 3x3 s2 p1 fwd CL",
        (16, 64, 112, 112),
        True,
        lambda x: LF.max_pool2d(x, 3, 2, 1),
        lambda x: F.max_pool2d(x, 3, 2, 1),
        False,
    ),
    (
        "max 2x2 s2 fwd+bwd",
        (16, 64, 112, 112),
        False,
        lambda x: LF.max_pool2d(x, 2),
        lambda x: F.max_pool2d(x, 2),
        True,
    ),
    (
        "max 3x3 s2 p1 fwd+bwd",
        (16, 64, 112, 112),
        False,
        lambda x: LF.max_pool2d(x, 3, 2, 1),
        lambda x: F.max_pool2d(x, 3, 2, 1),
        True,
    ),
    ("avg 2x2 fwd", (16, 64, 112, 112), False, lambda x: LF.avg_pool2d(x, 2), lambda x: F.avg_pool2d(x, 2), False),
    ("avg 2x2 fwd+bwd", (16, 64, 112, 112), False, lambda x: LF.avg_pool2d(x, 2), lambda x: F.avg_pool2d(x, 2), True),
    ("avg 2x2 fwd+bwd CL", (16, 64, 112, 112), True, lambda x: LF.avg_pool2d(x, 2), lambda x: F.avg_pool2d(x, 2), True),
    (
        "avg 3x3 s1 p1 fwd+bwd",
        (16, 64, 56, 56),
        False,
        lambda x: LF.avg_pool2d(x, 3, 1, 1),
        lambda x: F.avg_pool2d(x, 3, 1, 1),
        True,
    ),
    (
        "max 2x2 LeNet fwd+bwd",
        (256, 6, 28, 28),
        False,
        lambda x: LF.max_pool2d(x, 2),
        lambda x: F.max_pool2d(x, 2),
        True,
    ),
]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="shorter timing runs")
    args = parser.parse_args()
    min_run_time = 0.3 if args.quick else 1.0
    print(f"threads: {torch.get_num_threads()}")
    print(f"{'case':28s} {'ours ms':>9s} {'torch ms':>9s} {'ratio':>7s} {'copy ms':>8s}")
    for name, shape, cl, ours, theirs, grad in CASES:
        x = torch.randn(shape)
        if cl:
            x = x.contiguous(memory_format=torch.channels_last)
        x.requires_grad_(grad)
        g = torch.randn_like(theirs(x)) if grad else None
        run_ours, run_theirs = _runner(ours, x, g), _runner(theirs, x, g)
        torch.testing.assert_close(run_ours(), run_theirs())
        t_ours, t_theirs, t_copy = [], [], []
        for _ in range(3):  # interleaved, so drift in the machine's load hits both sides alike
            t_ours.append(_median(run_ours, min_run_time / 3))
            t_theirs.append(_median(run_theirs, min_run_time / 3))
            t_copy.append(_median(_copy(x), min_run_time / 6))
        m = [sorted(t)[1] * 1e3 for t in (t_ours, t_theirs, t_copy)]
        print(f"{name:28s} {m[0]:9.3f} {m[1]:9.3f} {m[1] / m[0]:6.2f}x {m[2]:8.3f}")


if __name__ == "__main__":
    main()
