"""The reference algorithms (csrc/cpu/reference/) against torch: every case of every table, at float32 and
float64, in every layout, with every gradient; the inputs the fast kernels' own tests single out (NaNs,
ties, integer and 16-bit types, bad arguments); and probes that fail if the settings do not reach them."""

import itertools
import struct
from functools import partial

import pytest
import test_bad_inputs as bad_inputs
import test_conv2d as conv_tests
import test_pool2d as pool_tests
import torch
from cases import AVG_POOL2D, CONV2D, MAX_POOL2D, Conv2dCase
from common import LAYOUTS, assert_close, check_avg_pool2d, check_conv2d, check_max_pool2d, make_input
from isolation import Child

import lenet_ext
import lenet_ext.functional as F
from lenet_ext.ops import POOL_DTYPES

DTYPES = [torch.float32, torch.float64]
ops = torch.ops.lenet_ext
reference_conv = lambda: lenet_ext.backends.conv_algorithm("reference")  # noqa: E731
reference_pool = lambda: lenet_ext.backends.pool_algorithm("reference")  # noqa: E731


# ------------------------------------------------------------------------------- every case table
# (check, case, setting) for every case of every table; check compares ours with torch (tests/common.py)
EVERY_CASE = [
    pytest.param(check, case, setting, id=f"{op}-{case.id}")
    for op, check, table, setting in [
        ("conv2d", check_conv2d, CONV2D, reference_conv),
        ("max_pool2d", check_max_pool2d, MAX_POOL2D, reference_pool),
        ("avg_pool2d", check_avg_pool2d, AVG_POOL2D, reference_pool),
    ]
    for case in table
]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("check,case,setting", EVERY_CASE)
def test_every_case(check, case, setting, dtype, layout):
    with setting():
        check(case, dtype, "cpu", layout)


@pytest.mark.parametrize("case", CONV2D.tagged("core"), ids=str)
def test_conv2d_without_bias_and_unbatched(case):
    with reference_conv():
        conv_tests.test_without_bias_and_unbatched(case, "cpu")


# ------------------------------------------------------------- what the fast kernels' tests single out
# test_pool2d.py's tests of NaNs, ties, integer and 16-bit types, windows of only padding, gradcheck and the
# operators' own argument checks, each called with device "cpu"
POOL_EDGE_CASES = {
    **{
        f"nan-inf-{shape_id}-{d}": partial(pool_tests.test_nan_and_inf, shape=shape, dtype=d)
        for (shape_id, shape), d in itertools.product(
            (("small", (1, 2, 6, 6)), ("vectors", (1, 70, 7, 40))), (torch.float64, torch.float32)
        )
    },
    **{f"ties-{d}": partial(pool_tests.test_max_ties_and_signed_zeros, dtype=d) for d in (torch.float32,
                                                                                       torch.bfloat16, torch.int32)},
    **{
        f"{d}-{layout}": partial(pool_tests.test_integer_max_pool2d_matches_torch, dtype=d, layout=layout)
        for d, layout in itertools.product((torch.uint8, torch.int64), ("contiguous", "channels_last"))
    },
    **{
        f"only-padding-{layout}": partial(pool_tests.test_windows_of_only_padding_get_no_gradient, layout=layout)
        for layout in ("contiguous", "channels_last")
    },
    "avg-by-hand": pool_tests.test_avg_pool2d_channels_last_gradient_by_hand,
    "bfloat16": pool_tests.test_bfloat16_matches_torch,
    "gradcheck-max": partial(pool_tests.test_gradcheck_and_gradgradcheck, op="max"),
    "gradcheck-avg": partial(pool_tests.test_gradcheck_and_gradgradcheck, op="avg"),
    "errors": lambda device: pool_tests.test_operators_check_their_arguments(),
}


@pytest.mark.parametrize("test", POOL_EDGE_CASES.values(), ids=POOL_EDGE_CASES.keys())
def test_pooling_edge_cases(test):
    with reference_pool():
        test("cpu")


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_conv2d_bfloat16(layout):
    with reference_conv():
        conv_tests.test_bfloat16_forward_and_gradients_against_float64(layout)


@pytest.mark.parametrize("mask", [(True, True, True), (False, True, False)])
def test_conv2d_opcheck(mask):
    conv_tests.test_opcheck(mask, "reference")


@pytest.mark.parametrize("name", ["max_pool2d_forward", "max_pool2d_forward_values", "max_pool2d_backward",
                                  "avg_pool2d_forward", "avg_pool2d_backward"])
def test_pooling_every_dtype_as_the_fast_kernels(name):
    """Every dtype each pooling operator takes, both result layouts: the same dtype, strides and values as
    the fast kernels (exactly for max, which both take in torch's order)."""
    exact = name.startswith("max")
    for dtype in sorted(POOL_DTYPES[name], key=str):
        for layout in ("contiguous", "channels_last"):
            x = make_input((2, 3, 7, 6), torch.float64, "cpu", layout, distinct=True).mul(100).to(dtype)
            fast = pool_tests._call(name, x)
            with reference_pool():
                ours = pool_tests._call(name, x)
            assert ours.dtype == fast.dtype and ours.stride() == fast.stride(), (name, dtype, layout)
            if exact:
                assert torch.equal(ours, fast), (name, dtype, layout)
            else:
                assert_close(ours, fast)


def bad_input_under_reference(name):
    """Runs in the child: one case of test_bad_inputs.py's catalogue, with both settings on "reference"."""
    with reference_conv(), reference_pool():
        return bad_inputs.run_case(name)


@pytest.fixture(scope="module")
def child():
    c = Child()
    yield c
    c.close()


def test_bad_inputs_raise_the_same_errors(child):
    failed = {name: r for name in bad_inputs.CASES if (r := child.call(bad_input_under_reference, name)) != "ok"}
    assert not failed


# ------------------------------------------------------------------------- the settings reach the kernels
def test_pool_algorithm_setting():
    assert lenet_ext.backends.current_pool_algorithm() == "auto"
    with lenet_ext.backends.pool_algorithm("reference"):
        assert lenet_ext.backends.current_pool_algorithm() == "reference"
        assert ops._set_pool_algorithm(-1) == 1
    assert lenet_ext.backends.current_pool_algorithm() == "auto"
    with pytest.raises(ValueError, match="pool_algorithm must be one of"):
        lenet_ext.backends.pool_algorithm("fast")
    with pytest.raises(RuntimeError, match="expected -1 \\(read\\) or 0 to 1"):
        ops._set_pool_algorithm(2)


def _terms(x, w, stride, padding, dilation, groups):
    """conv2d's sum, term by term, in the reference's order (csrc/cpu/reference/conv2d.cpp's for_each_term):
    yields (y index, x index, w index) as tuples."""
    N, C, H, W = x.shape
    O, Cg, KH, KW = w.shape
    top, bottom, left, right = padding
    OH = (H + top + bottom - dilation[0] * (KH - 1) - 1) // stride[0] + 1
    OW = (W + left + right - dilation[1] * (KW - 1) - 1) // stride[1] + 1
    for n, o, oh, ow, c, i, j in itertools.product(range(N), range(O), range(OH), range(OW), range(Cg), range(KH),
                                                   range(KW)):
        ih, iw = oh * stride[0] - top + i * dilation[0], ow * stride[1] - left + j * dilation[1]
        if 0 <= ih < H and 0 <= iw < W:
            yield (n, o, oh, ow), (n, o // (O // groups) * Cg + c, ih, iw), (o, c, i, j)


def _order_sensitive(shape, seed):
    """float64 values k * 2^e, k in [-7, 7] and e in [-30, 30]: each product of two is exact (so a fused
    multiply-add rounds as a multiply and an add would), and sums of them depend on their order."""
    g = torch.Generator().manual_seed(seed)
    k = torch.randint(-7, 8, shape, generator=g).double()
    return k * torch.pow(2.0, torch.randint(-30, 31, shape, generator=g).double())


def _same_bits(t, want):
    """Whether tensor t holds, bit for bit, the values of `want` ({index tuple: float}, 0.0 where absent)."""
    got = zip(itertools.product(*map(range, t.shape)), t.flatten().tolist())
    return all(struct.pack("<d", v) == struct.pack("<d", want.get(i, 0.0)) for i, v in got)


# Each case, and the passes where the fast kernels' order differs from the reference's on it ("auto"): the
# fast forward and input gradient often sum in the same order, over the taps, from the bias.
ORDER_CASES = [
    (CONV2D["grouped-asymmetric"], ("grad_input", "grad_weight", "grad_bias")),
    (Conv2dCase.unnamed((2, 16, 6, 6), (4, 16, 1, 1), stride=2), ("forward",)),  # im2col's matrix product
]


@pytest.mark.parametrize("case,fast_differs", ORDER_CASES, ids=[c.id for c, _ in ORDER_CASES])
def test_conv_reference_sums_in_its_documented_order(case, fast_differs):
    """Every pass of the reference, bit for bit against the same sums in Python floats (float64, in the
    reference's order), on data whose sums depend on their order; the fast kernels differ where noted."""
    stride, padding, dilation, groups = case.op_args()
    x, w = _order_sensitive(case.input, 1), _order_sensitive(case.weight, 2)
    b = _order_sensitive(case.weight[:1], 3)
    y_shape = ops.conv2d_forward(x, w, b, *case.op_args()).shape
    dy = _order_sensitive(y_shape, 4)
    X, Wt, DY = x.tolist(), w.tolist(), dy.tolist()
    at = lambda t, index: t[index[0]][index[1]][index[2]][index[3]]  # noqa: E731
    outputs = list(itertools.product(*map(range, y_shape)))
    want = {"forward": {yi: b[yi[1]].item() for yi in outputs}, "grad_input": {}, "grad_weight": {}, "grad_bias": {}}
    for yi, xi, wi in _terms(x, w, stride, padding, dilation, groups):
        want["forward"][yi] += at(X, xi) * at(Wt, wi)  # each sum starts from its bias
        want["grad_input"][xi] = want["grad_input"].get(xi, 0.0) + at(DY, yi) * at(Wt, wi)
        want["grad_weight"][wi] = want["grad_weight"].get(wi, 0.0) + at(DY, yi) * at(X, xi)
    for yi in outputs:
        want["grad_bias"][(yi[1],)] = want["grad_bias"].get((yi[1],), 0.0) + at(DY, yi)

    def passes():
        y = ops.conv2d_forward(x, w, b, *case.op_args())
        return dict(zip(want, (y, *ops.conv2d_backward(dy, x, w, *case.op_args(), [True, True, True]))))

    with reference_conv():
        reference = passes()
    fast = passes()
    for name in want:
        assert _same_bits(reference[name], want[name]), name
        assert name not in fast_differs or not _same_bits(fast[name], want[name]), f"the probe cannot tell {name}"


def test_pool_reference_keeps_torchs_nan_without_indices():
    """The values-only max forward of the fast kernels is separable (rows, then columns), so of two NaNs in a
    window it can keep another one than torch; the reference visits the taps in torch's order for it too.
    NaNs with distinct payloads tell which one won."""
    x = torch.randn(1, 1, 4, 4, dtype=torch.float64)
    bits = x.view(torch.int64)
    bits[0, 0, 0, 1] = 0x7FF8000000000001  # two NaNs in the first 2 x 2 window: torch keeps the later one,
    bits[0, 0, 1, 0] = 0x7FF8000000000002  # (1, 0); row-then-column maxima meet (0, 1)'s column last
    expected = torch.nn.functional.max_pool2d(x, 2).view(torch.int64)
    with torch.no_grad(), reference_pool():
        assert torch.equal(F.max_pool2d(x, 2).view(torch.int64), expected)
    with torch.no_grad():
        assert not torch.equal(F.max_pool2d(x, 2).view(torch.int64), expected)
