"""Ours vs torch on the pooling shapes the issue names, interleaved in one run (medians, ratios).

    python bench/pool_variants.py [--device cpu|cuda] [--threads N] [--quick] [--json out.json]

Runs through `lenet-ext bench`'s harness (lenet_ext.bench.cli.run_rows): each row is checked against
torch first, then timed as a user calls it (call time: lenet_ext.functional against torch.nn.functional;
the forward, or the forward and the input's gradient through autograd), with our raw operators doing
the same work timed beside it (operator time). Rates are GB/s of the bytes that must move, and their
fraction of the measured copy bandwidth is the distance to the ceiling. --quick is the smoke mode.
"""

import sys

from lenet_ext.bench import cli
from lenet_ext.bench.cases import pool_call_case
from lenet_ext.bench.suite import Pool, Row

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
    ("LeNet pool1 channels_last", "max", Pool(256, 6, 28, 28, 2, 2), True, True),
    ("LeNet pool2", "max", Pool(256, 16, 10, 10, 2, 2), False, True),
    ("3x3 s2 p1 112x112 channels_last", "max", Pool(*MAPS, 3, 2, 1), True, True),
]


def job(what, kind, shape, channels_last, backward):
    """The row and the builder of its Case."""
    op = f"{kind}_pool2d.forward" + ("+backward_input" if backward else "")

    def build(shape, device):
        return pool_call_case(kind, shape, device, backward=backward, channels_last=channels_last)

    return Row(what, op, shape), build


def main(argv=None) -> int:
    return cli.run_script("pool_variants", __doc__, [job(*case) for case in CASES], argv)


if __name__ == "__main__":
    sys.exit(main())
