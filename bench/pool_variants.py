"""Ours vs torch on the pooling shapes the issue names, interleaved in one run (medians, ratios).

    python bench/pool_variants.py [--device cpu|cuda] [--threads N] [--quick] [--json out.json]

Runs through `lenet-ext bench`'s harness (lenet_ext.benchmark.run_rows): each row is checked against
torch first, then timed as a user calls it (call time: lenet_ext.functional against torch.nn.functional;
the forward, or the forward and the input's gradient through autograd), with our raw operators doing
the same work timed beside it (operator time). Rates are GB/s of the bytes that must move, and their
fraction of the measured copy bandwidth is the distance to the ceiling. --quick is the smoke mode.
"""

import argparse
import sys

import torch

from lenet_ext import benchmark
from lenet_ext.benchmarking.cases import pool_call_case
from lenet_ext.benchmarking.suite import Pool, Row

MAPS = (16, 64, 112, 112)
# what, kind, shape, channels_last, backward
CASES = [
    ("3x3 s2 p1 112x112", "max", Pool(*MAPS, 3, 2, 1), False, False),
    ("3x3 s2 p1 112x112 channels_last", "max", Pool(*MAPS, 3, 2, 1), True, False),
    ("2x2 s2 112x112", "max", Pool(*MAPS, 2, 2), False, True),
    ("3x3 s2 p1 112x112", "max", Pool(*MAPS, 3, 2, 1), False, True),
    ("2x2 s2 112x112", "avg", Pool(*MAPS, 2, 2), False, False),
    ("2x2 s2 112x112", "avg", Pool(*MAPS, 2, 2), False, True),
    ("2x2 s2 112x112 channels_last", "avg", Pool(*MAPS, 2, 2), True, True),
    ("3x3 s1 p1 56x56", "avg", Pool(16, 64, 56, 56, 3, 1, 1), False, True),
    ("LeNet pool1", "max", Pool(256, 6, 28, 28, 2, 2), False, True),
]


def job(what, kind, shape, channels_last, backward):
    """The row and the builder of its Case."""
    op = f"{kind}_pool2d.forward" + ("+backward_input" if backward else "")

    def build(shape, device):
        return pool_call_case(kind, shape, device, backward=backward, channels_last=channels_last)

    return Row(what, op, shape), build


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads(N) first")
    benchmark.add_run_options(parser)
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("pool_variants: --device cuda, but torch sees no CUDA device", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    return benchmark.run_rows(args, torch.device(args.device), [job(*case) for case in CASES])


if __name__ == "__main__":
    sys.exit(main())
