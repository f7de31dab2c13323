"""shape.h's index math at sizes no test tensor could have: past 2^31 and up to the 2^40 limit.

The test operators ``lenet_ext_testing.window_output_size`` and ``valid_outputs`` run the kernels' own C++ code,
behind the same checks (make_window2d) that every operator's arguments pass. Each value is compared
with the Python mirror (lenet_ext/_shape.py) and with a brute-force count over the windows, which is
the definition itself; strides are chosen so that the brute force stays a few thousand steps.
"""

import os

import pytest
import torch
import torch.nn.functional as TF

from lenet_ext import _shape
from lenet_ext import functional as F

ops = torch.ops.lenet_ext
testing_ops = torch.ops.lenet_ext_testing
LIMIT = 1 << 40
INT64_MAX = (1 << 63) - 1


def brute_output_size(n, p0, p1, k, s, d, ceil_mode):
    """Counts window starts o*s. floor: the window fits in the padded input. ceil: a partial window
    counts too, if it starts inside the input or the left padding."""
    span = n + p0 + p1 - d * (k - 1) - 1
    count = 0
    while (count * s <= span) if not ceil_mode else (count * s < span + s and count * s < n + p0):
        count += 1
    return count


def brute_valid_outputs(n, p0, k_index, s, d, out):
    """The outputs whose tap `k_index` reads a real input position (not padding)."""
    valid = [o for o in range(out) if 0 <= o * s - p0 + k_index * d < n]
    return (valid[0], valid[-1] + 1) if valid else None


# (n, pad_begin, pad_end, kernel, stride, dilation): each beyond int32 somewhere, strides keep the
# output a few thousand long so the brute force stays cheap
LARGE = [
    (2**31 + 7, 0, 0, 3, 2**20 + 1, 1),
    (2**32 + 12345, 5, 3, 7, 2**21 - 3, 2**20),  # a dilated kernel spanning 6 * 2^20 positions
    (2**31 - 1, 2**31, 2**31, 2**32 + 1, 2**22, 1),  # padding past int32 on both sides
    (3, 0, 0, 2**31 + 1, 2**20, 1),  # the kernel is bigger than the input: no output
    (LIMIT, LIMIT, LIMIT, 2, 2**30 + 5, 1),  # every argument at the limit
    (LIMIT, 0, 0, LIMIT, 1, 1),  # one window covering all of it
    (LIMIT, 17, 0, 2**20 + 1, 2**29, 2**20),  # d*(k-1) = 2^40 exactly
    (LIMIT - 1, 3, 2, 5, 2**28 + 1, 2**36),
    (2**33, 1, 1, 3, INT64_MAX, 1),  # any stride is allowed: a single window
    (2**33, 2**32, 2**32, 3, 2**63 // 3, 2**30),
]


def pool_valid(case):
    """ceil_mode is pooling's, whose padding is at most half the effective kernel; only then can at most
    one window start in the right padding, which is what torch's rule (and ours) assumes."""
    n, p0, p1, k, s, d = case
    return max(p0, p1) <= ((k - 1) * d + 1) // 2


CASES = [(c, False) for c in LARGE] + [(c, True) for c in LARGE if pool_valid(c)]


@pytest.mark.parametrize("case, ceil_mode", CASES, ids=str)
def test_window_output_size_past_int32(case, ceil_mode):
    n, p0, p1, k, s, d = case
    expected = brute_output_size(n, p0, p1, k, s, d, ceil_mode)
    ours = testing_ops.window_output_size(n, p0, p1, k, s, d, ceil_mode)
    assert ours == _shape.window_output_size(n, p0, p1, k, s, d, ceil_mode)
    assert ours == expected if expected else ours <= 0  # "no output" may come out negative; callers check


@pytest.mark.parametrize("case, ceil_mode", CASES, ids=str)
def test_valid_outputs_past_int32(case, ceil_mode):
    n, p0, p1, k, s, d = case
    out = brute_output_size(n, p0, p1, k, s, d, ceil_mode)
    for tap in sorted({t for t in (0, 1, k // 2, k - 1) if t < k}):
        lo, hi = testing_ops.valid_outputs(n, p0, p1, k, s, d, ceil_mode, tap)
        assert 0 <= lo <= hi <= max(out, 0)
        expected = brute_valid_outputs(n, p0, tap, s, d, out)
        assert (lo, hi) == expected if expected else lo == hi, (tap, lo, hi, expected)


def test_small_sizes_exhaustively():
    # every small configuration, so the large cases above are not the only evidence
    for n in range(0, 7):
        for k in range(1, 4):
            for s in range(1, 4):
                for d in range(1, 3):
                    for p0, p1 in [(0, 0), (1, 0), (0, 2), (2, 1)]:
                        for ceil_mode in (False, True) if pool_valid((n, p0, p1, k, s, d)) else (False,):
                            args = (n, p0, p1, k, s, d, ceil_mode)
                            out = brute_output_size(*args)
                            ours = testing_ops.window_output_size(*args)
                            assert ours == _shape.window_output_size(*args)
                            assert ours == out if out else ours <= 0
                            for tap in range(k):
                                lo, hi = testing_ops.valid_outputs(*args, tap)
                                expected = brute_valid_outputs(n, p0, tap, s, d, max(out, 0))
                                assert (lo, hi) == expected if expected else lo == hi


@pytest.mark.parametrize(
    "case",
    [
        (LIMIT + 1, 0, 0, 1, 1, 1),  # input size
        (10, LIMIT + 1, 0, 1, 1, 1),  # padding before
        (10, 0, INT64_MAX, 1, 1, 1),  # padding after
        (10, 0, 0, LIMIT + 1, 1, 1),  # kernel
        (10, 0, 0, 2, 1, LIMIT + 1),  # dilation
        (10, 0, 0, 2**21, 1, 2**20),  # d*(k-1) just past the limit
        (10, 0, 0, 2**40, 1, 2**40),  # d*(k-1) near 2^80: must not wrap around
        (10, 0, 0, INT64_MAX, 1, INT64_MAX),
    ],
)
def test_rejects_sizes_past_the_limit(case):
    with pytest.raises(RuntimeError, match="too large"):
        testing_ops.window_output_size(*case, False)


@pytest.mark.parametrize(
    "case, message",
    [
        ((10, 0, 0, 0, 1, 1), "kernel size should be greater than zero"),
        ((10, 0, 0, 2, 0, 1), "non-positive stride"),
        ((10, 0, 0, 2, -(2**63), 1), "non-positive stride"),
        ((10, -1, 0, 2, 1, 1), "negative padding"),
        ((10, 0, 0, 2, 1, 0), "dilation should be greater than zero"),
        ((-1, 0, 0, 2, 1, 1), "input size must be non-negative"),
    ],
)
def test_rejects_non_positive_arguments(case, message):
    with pytest.raises(RuntimeError, match=message):
        testing_ops.window_output_size(*case, True)


def test_huge_stride_through_the_real_operators():
    # strides are exempt from the 2^40 limit; a stride of 2^63-1 gives one window, as in torch
    x = torch.randn(1, 2, 9, 9)
    w = torch.randn(3, 2, 3, 3)
    torch.testing.assert_close(F.conv2d(x, w, stride=INT64_MAX), TF.conv2d(x, w, stride=INT64_MAX))
    out = ops.max_pool2d_forward(x, [3, 3], [INT64_MAX, INT64_MAX], [1, 1], [1, 1], True)
    ref = TF.max_pool2d(x, 3, 2**31 - 1, 1, ceil_mode=True, return_indices=True)  # torch's int32 maximum
    assert torch.equal(out[0], ref[0]) and torch.equal(out[1], ref[1])
    out = ops.avg_pool2d_forward(x, [3, 3], [INT64_MAX, INT64_MAX], [1, 1], True, False, None)
    torch.testing.assert_close(out, TF.avg_pool2d(x, 3, 2**31 - 1, 1, True, False))


@pytest.mark.skipif(
    os.environ.get("LENET_EXT_BIG_TESTS") != "1",
    reason="an input of more than 2^31 elements needs over 8 GB (our CPU kernels copy to contiguous float32); "
    "set LENET_EXT_BIG_TESTS=1 on a machine with 32 GB free to run it",
)
def test_pooling_an_input_past_2_31_elements():
    side = 46341  # side^2 = 2^31 + 4825: flat offsets past int32 inside one plane
    x = torch.zeros(1, 1, side, side)
    x[0, 0, -1, -1] = 1.0
    out, idx = ops.max_pool2d_forward(x, [2, 2], [2, 2], [0, 0], [1, 1], True)
    assert out[0, 0, -1, -1] == 1.0 and idx[0, 0, -1, -1] == side * side - 1
