"""max_pool2d / avg_pool2d against torch.nn.functional: values, indices, gradients, layouts, errors."""

import functools

import pytest
import torch
import torch.nn.functional as TF
from cases import AVG_POOL2D, MAX_POOL2D, MaxPool2dCase
from common import (
    LAYOUTS,
    assert_close,
    check_avg_pool2d,
    check_max_pool2d,
    clone_leaf,
    make_input,
    pool_reference_input,
    raises_like_torch,
    to_layout,
)
from conftest import HAS_CUDA
from torch_guard import UnsafeTorchReference, padding_only_mask, torch_max_pool2d_grad

import lenet_ext
import lenet_ext.functional as F
from lenet_ext.ops import POOL_DTYPES

ops = torch.ops.lenet_ext
testing_ops = torch.ops.lenet_ext_testing


@pytest.fixture
def device(pool_device):
    """Every device; on CUDA, once with each kernel family for channels_last inputs (see conftest.py)."""
    return pool_device


@pytest.mark.parametrize("case", MAX_POOL2D, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_max_pool2d_matches_torch(device, case, dtype, layout):
    check_max_pool2d(case, dtype, device, layout)


@pytest.mark.parametrize("case", AVG_POOL2D, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_avg_pool2d_matches_torch(device, case, dtype, layout):
    check_avg_pool2d(case, dtype, device, layout)


def test_avg_pool2d_channels_last_gradient_by_hand(device):
    # A fixed case whose gradient is known without torch: kernel 2, stride 1, padding 1, count_include_pad,
    # all-ones grad_output on a 1 x 2 x 2 x 2 input. Each input element is covered by 4 of the 3 x 3
    # windows, each dividing by 4, so every gradient is 1; a gradient shifted by one window row or column
    # (as from torch's channels_last kernel in 2.11) would not be uniform.
    for layout in ("contiguous", "channels_last"):
        x = make_input((1, 2, 2, 2), torch.float64, device, layout, requires_grad=True)
        out = F.avg_pool2d(x, 2, 1, 1)
        (gx,) = torch.autograd.grad(out, x, torch.ones_like(out))
        assert torch.equal(gx, torch.ones_like(x))
        x = make_input((1, 3, 3, 4), torch.float64, device, layout, requires_grad=True)
        out = F.avg_pool2d(x, 3, 2, 1, count_include_pad=False)
        (gx,) = torch.autograd.grad(out, x, torch.ones_like(out))
        # row windows [-1, 1] and [1, 3] clip to 2 rows each, column windows [-1, 1] and [1, 3] to 2 and 3
        # columns; the divisor is rows x columns, so the gradient factors into a row and a column part
        rows = torch.tensor([1 / 2, 1 / 2 + 1 / 2, 1 / 2], dtype=torch.float64)
        cols = torch.tensor([1 / 2, 1 / 2 + 1 / 3, 1 / 3, 1 / 3], dtype=torch.float64)
        torch.testing.assert_close(gx.cpu(), torch.outer(rows, cols).expand(1, 3, 3, 4))


@pytest.mark.parametrize("case", [*MAX_POOL2D, *AVG_POOL2D], ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_bfloat16_forwards_as_stored(case, layout):
    """The CPU kernels read and write bfloat16 as stored (computed in float inside, rounded once): every case of
    both tables. Max: torch's values and indices exactly. Avg: no further from the float64 result than torch's
    own bfloat16 result is, plus one rounding."""
    torch.manual_seed(5)
    x = to_layout(torch.randn(case.input, dtype=torch.float64).to(torch.bfloat16), layout)
    kwargs = case.kwargs()
    if isinstance(case, MaxPool2dCase):
        out, idx = F.max_pool2d(x, **kwargs, return_indices=True)
        ref, ref_idx = TF.max_pool2d(x, **kwargs, return_indices=True)
        torch.testing.assert_close(out, ref, rtol=0, atol=0, equal_nan=True)
        assert torch.equal(idx, ref_idx)
        torch.testing.assert_close(F.max_pool2d(x, **kwargs), ref, rtol=0, atol=0, equal_nan=True)
        return
    exact = TF.avg_pool2d(x.double(), **kwargs)
    ours, theirs = F.avg_pool2d(x, **kwargs), TF.avg_pool2d(x, **kwargs)
    assert ours.dtype == torch.bfloat16 and ours.stride() == theirs.stride()
    rounding = torch.finfo(torch.bfloat16).eps * exact.abs()
    assert ((ours.double() - exact).abs() <= (theirs.double() - exact).abs() + rounding).all()


def test_bfloat16_matches_torch(device):
    x = make_input((2, 3, 9, 9), torch.bfloat16, device, "channels_last", distinct=True)
    torch.testing.assert_close(F.max_pool2d(x, 3, 2, 1), TF.max_pool2d(x, 3, 2, 1), rtol=0, atol=0)
    assert_close(F.avg_pool2d(x, 3, 2, 1), TF.avg_pool2d(x, 3, 2, 1))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_integer_max_pool2d_matches_torch(device, dtype, layout):
    # torch's CPU kernel is the reference (its CUDA one need not take every integer type), on an NCHW copy:
    # its channels_last kernel refuses 8-bit planes of more than 127 elements
    info = torch.iinfo(dtype)
    for case in MAX_POOL2D:
        x = to_layout(torch.randint(info.min, info.max, case.shape(channels=8), dtype=dtype), layout)
        out, idx = F.max_pool2d(x.to(device), **case.kwargs(), return_indices=True)
        ref, ref_idx = TF.max_pool2d(x.contiguous(), **case.kwargs(), return_indices=True)
        assert out.dtype == dtype and torch.equal(out.cpu(), ref) and torch.equal(idx.cpu(), ref_idx)
        assert torch.equal(F.max_pool2d(x.to(device), **case.kwargs()).cpu(), ref)
    # a window of only padding gives the type's minimum, as -inf for floats
    x = torch.randint(0, 9, (1, 1, 1, 3), dtype=dtype, device=device)
    assert torch.equal(F.max_pool2d(x, (2, 1), 1, (1, 0), (2, 1)), torch.full_like(x, info.min))


# ------------------------------------------------------------------- the CUDA kernels' arithmetic, on the CPU
# lenet_ext_testing.cuda_pool2d_on_host runs the CUDA operators' bodies (csrc/cuda/pool2d_bodies.h) and work
# items (csrc/cuda/pool2d_items.h) with a plain host loop in place of the kernel launch, so every machine checks their index arithmetic, both kernel
# families for channels_last, every vector width and both index types' code.
def _host(op, x, *conf, native, grad=None, indices=None, avg=False, int64_index=False, runs=False):
    if avg:
        k, s, p, ceil, include_pad, divisor = conf
        args = (k, s, p, [1, 1], ceil, include_pad, divisor)
    else:
        k, s, p, d, ceil = conf
        args = (k, s, p, d, ceil, True, None)
    return testing_ops.cuda_pool2d_on_host(op, x, grad, indices, *args, native, int64_index, runs)


# (native channels_last kernels, planar forwards by runs). ids without "native" or "runs": scripts/gpu_check.sh
# counts the tests named so as GPU runs of those opt-in kernels
HOST_KERNELS = {"planar": (False, False), "nhwc": (True, False), "row-run": (False, True)}


@pytest.mark.parametrize("kernels", HOST_KERNELS)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "sliced"])
@pytest.mark.parametrize(
    "dtype,int64_index",
    [(torch.float64, False), (torch.float32, False), (torch.float16, False), (torch.float32, True)],
    ids=["float64", "float32", "float16", "float32-int64-index"],
)
def test_cuda_kernels_on_host_match_torch(kernels, layout, dtype, int64_index):
    channels = 8  # with float16, float32, float64: vector widths 8, 4, 2 on the native path
    native, runs = HOST_KERNELS[kernels]
    host = functools.partial(_host, native=native, int64_index=int64_index, runs=runs)
    for case in MAX_POOL2D:
        shape = case.shape(channels, batched=True)
        x = make_input(shape, dtype, "cpu", layout, distinct=True)
        conf = case.op_args()
        out, idx = host("max_pool2d_forward", x, *conf)
        ref, ref_idx = TF.max_pool2d(x.float(), **case.kwargs(), return_indices=True)
        assert torch.equal(out.float(), ref) and torch.equal(idx, ref_idx), case
        assert torch.equal(host("max_pool2d_forward_values", x, *conf)[0].float(), ref)
        if layout == "channels_last" and shape[0] > 0:
            assert out.is_contiguous(memory_format=torch.channels_last)
        g = torch.randn(ref.shape, dtype=dtype)
        xd = x.double().requires_grad_()
        (want,) = torch.autograd.grad(TF.max_pool2d(xd, **case.kwargs()), xd, g.double())
        got, _ = host("max_pool2d_backward", x, *conf, grad=g, indices=idx)
        assert_close(got.double(), want, dtype=dtype)
    for case in AVG_POOL2D:
        x = make_input(case.shape(channels, batched=True), dtype, "cpu", layout)
        conf = case.op_args()
        xd = x.double().requires_grad_()
        ref = TF.avg_pool2d(xd, **case.kwargs())
        out, _ = host("avg_pool2d_forward", x, *conf, avg=True)
        assert_close(out.double(), ref.detach(), dtype=dtype)
        g = torch.randn(ref.shape, dtype=dtype)
        (want,) = torch.autograd.grad(ref, xd, g.double())
        got, _ = host("avg_pool2d_backward", x, *conf, grad=g, avg=True)
        assert_close(got.double(), want, dtype=dtype)


@pytest.mark.parametrize("channels", [1, 2, 3, 4, 6, 8, 16])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.int32, torch.int64, torch.bfloat16])
def test_cuda_kernels_on_host_every_vector_width(channels, dtype):
    # channel counts that allow each vector width; storage starting one element in, so no vector access
    # can be aligned and the native kernels must fall back to one channel at a time
    for offset in (0, 1):
        base = torch.randint(-100, 100, (offset + 2 * 9 * 10 * channels,)).to(dtype)
        x = base[offset:].view(2, 9, 10, channels).permute(0, 3, 1, 2)
        conf = ([3, 2], [2, 1], [1, 1], [1, 2], True)
        ref, ref_idx = TF.max_pool2d(x.contiguous().float(), *conf, return_indices=True)
        for native, runs in HOST_KERNELS.values():
            out, idx = _host("max_pool2d_forward", x, *conf, native=native, runs=runs)
            assert torch.equal(out.float(), ref) and torch.equal(idx, ref_idx)
            assert out.is_contiguous(memory_format=torch.channels_last) or channels == 1


def test_cuda_kernels_on_host_windows_of_only_padding():
    # the index recorded for a window of only padding is the first tap's, in both kernel families
    x = make_input((1, 4, 1, 3), torch.float64, "cpu", "channels_last")
    conf = ([2, 1], [1, 1], [1, 0], [2, 1], False)
    for native, runs in HOST_KERNELS.values():
        out, idx = _host("max_pool2d_forward", x, *conf, native=native, runs=runs)
        assert bool((out == float("-inf")).all()) and torch.equal(idx[0, 0, 0], torch.tensor([3, 4, 5]))
        g, _ = _host("max_pool2d_backward", x, *conf, native=native, grad=torch.ones_like(out), indices=idx)
        assert torch.equal(g, torch.zeros_like(x))


# ------------------------------------------------- windows of only padding, and indices out of range
# torch's CPU max_pool2d records an index past the plane for a window of only padding and its backward
# scatters through it unchecked (tests/torch_guard.py). This geometry, from the issue that found it, has
# such windows in its first output row: torch's own backward aborts the process within 200 calls.
PADDING_ONLY = MaxPool2dCase("padding-only-rows", (1, 8, 1, 17), (2, 5), (4, 2), (1, 2), (2, 1))


def test_torch_guard_refuses_the_out_of_bounds_backward():
    kwargs = PADDING_ONLY.kwargs()
    x = torch.randn(PADDING_ONLY.input, requires_grad=True)
    for call in (lambda: TF.max_pool2d(x, **kwargs), lambda: torch.nn.MaxPool2d(**kwargs)(x),
                 lambda: TF.max_pool2d(x, **kwargs, return_indices=True)):  # fmt: skip
        with pytest.raises(UnsafeTorchReference, match="writes outside its gradient"):
            call()
    TF.max_pool2d(x.detach(), **kwargs)  # the forward alone writes nothing out of place
    TF.max_pool2d(x, (1, 2))  # and a geometry without such windows passes
    # the guard's geometry is exactly the windows our kernels give -inf
    out = F.max_pool2d(x.detach(), **kwargs)
    assert torch.equal(padding_only_mask(x.shape, **kwargs).expand_as(out), out == float("-inf"))


@pytest.mark.parametrize("algorithm", ["auto", "reference"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_max_pool2d_windows_of_only_padding_match_torch(algorithm, dtype, layout):
    with lenet_ext.backends.pool_algorithm(algorithm):
        check_max_pool2d(PADDING_ONLY, dtype, "cpu", layout)


@pytest.mark.parametrize("kernels", HOST_KERNELS)
def test_cuda_kernels_on_host_windows_of_only_padding_match_torch(kernels):
    native, runs = HOST_KERNELS[kernels]
    x = make_input(PADDING_ONLY.input, torch.float64, "cpu", "channels_last" if native else "contiguous")
    out, idx = _host("max_pool2d_forward", x, *PADDING_ONLY.op_args(), native=native, runs=runs)
    ref, ref_idx = TF.max_pool2d(x, **PADDING_ONLY.kwargs(), return_indices=True)
    assert torch.equal(out, ref) and torch.equal(idx, ref_idx)
    g = torch.randn_like(ref)
    got, _ = _host("max_pool2d_backward", x, *PADDING_ONLY.op_args(), native=native, grad=g, indices=idx)
    assert torch.equal(got, torch_max_pool2d_grad(x, g, **PADDING_ONLY.kwargs()))


def test_max_pool2d_backward_indices_out_of_range():
    """An index outside the input plane is an error on the CPU (every kernel, one wording) and never read on
    CUDA, whose backwards gather (an input position sums the outputs that name it): no path reads or writes
    through it. An index inside the plane but outside its window is accepted, as torch accepts it, and its
    gradient lands where it says: checking window membership would cost as much as the scatter."""
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64)
    conf = ([2, 2], [2, 2], [0, 0], [1, 1], False)
    out, idx = ops.max_pool2d_forward(x, *conf)
    g = torch.randn_like(out)
    for bad in (36, -1, 1 << 62):
        for algorithm in ("auto", "reference"):
            with lenet_ext.backends.pool_algorithm(algorithm):
                with pytest.raises(RuntimeError, match=f"invalid max index {bad}"):
                    ops.max_pool2d_backward(g, x, torch.full_like(idx, bad), *conf)
        for kernels, (native, runs) in HOST_KERNELS.items():
            xl = x.contiguous(memory_format=torch.channels_last) if native else x
            got, _ = _host("max_pool2d_backward", xl, *conf, native=native, grad=g, indices=torch.full_like(idx, bad))
            assert torch.equal(got, torch.zeros_like(x)), kernels
    # in the plane, outside the window: output (0, 0) names input (5, 5)
    moved = idx.clone()
    moved[:, :, 0, 0] = 35
    want = torch.ops.aten.max_pool2d_with_indices_backward(g, x, *conf, moved)
    for algorithm in ("auto", "reference"):
        with lenet_ext.backends.pool_algorithm(algorithm):
            assert torch.equal(ops.max_pool2d_backward(g, x, moved, *conf), want)


# ------------------------------------------------------------------------- what the operators accept
# The accepted-input table (csrc/shape.h): rank 4 and these dtypes, for every operator, on every device
# and under the fake kernels (torch.compile). torch's max_pool2d takes the integer types; nothing else does.
FLOATS = {torch.float16, torch.bfloat16, torch.float32, torch.float64}
INTS = {torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64}
EXPECTED_DTYPES = {
    "max_pool2d_forward": FLOATS | INTS,
    "max_pool2d_forward_values": FLOATS | INTS,
    "max_pool2d_backward": FLOATS,
    "avg_pool2d_forward": FLOATS,
    "avg_pool2d_backward": FLOATS,
}
ALL_DTYPES = sorted(FLOATS | INTS | {torch.bool, torch.complex64}, key=str)
MAX_CONF = MAX_POOL2D["lenet"].op_args()  # 2x2 windows, stride 2: _call's output shapes
AVG_CONF = AVG_POOL2D["lenet"].op_args()


def test_accepted_input_table():
    assert POOL_DTYPES == EXPECTED_DTYPES


@pytest.mark.parametrize("dtype", sorted(INTS, key=str))
def test_integer_average_pooling_is_refused(dtype):
    # A known difference (README): torch averages int64 on the CPU (each mean truncated toward zero) and no
    # other integer type, nor int64 on CUDA; ours takes the floating types only, on every device, and says so.
    x = torch.randint(-9, 9, (1, 2, 4, 4)).to(dtype)
    with pytest.raises(NotImplementedError, match='"avg_pool2d_forward" not implemented for'):
        F.avg_pool2d(x, 2)
    if dtype == torch.int64:
        assert TF.avg_pool2d(x, 2).dtype == torch.int64  # if torch stops computing it, the README changes
    else:
        with pytest.raises(NotImplementedError):
            TF.avg_pool2d(x, 2)


def _call(name, x):
    """Operator `name` on input x (any rank and dtype), with well-formed other arguments."""
    out_shape = (*x.shape[:-2], x.shape[-2] // 2, x.shape[-1] // 2)
    grad = torch.zeros(out_shape, dtype=x.dtype, device=x.device)
    idx = torch.zeros(out_shape, dtype=torch.int64, device=x.device)
    calls = {
        "max_pool2d_forward": lambda: ops.max_pool2d_forward(x, *MAX_CONF),
        "max_pool2d_forward_values": lambda: ops.max_pool2d_forward_values(x, *MAX_CONF),
        "max_pool2d_backward": lambda: ops.max_pool2d_backward(grad, x, idx, *MAX_CONF),
        "avg_pool2d_forward": lambda: ops.avg_pool2d_forward(x, *AVG_CONF),
        "avg_pool2d_backward": lambda: ops.avg_pool2d_backward(grad, x, *AVG_CONF),
    }
    result = calls[name]()
    return result[0] if isinstance(result, tuple) else result


PATHS = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device")), "fake"]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", sorted(EXPECTED_DTYPES))
def test_every_path_accepts_the_same_inputs(path, name):
    from torch._subclasses.fake_tensor import FakeTensorMode

    mode = FakeTensorMode() if path == "fake" else None
    device = "cpu" if path == "fake" else path
    for dtype in ALL_DTYPES:
        for shape in [(2, 6, 6), (1, 2, 6, 6), (1, 1, 2, 6, 6)]:
            for layout in ("contiguous", "channels_last"):
                x = to_layout(torch.zeros(shape, device=device).to(dtype), layout)
                accepted = len(shape) == 4 and dtype in EXPECTED_DTYPES[name]
                with mode or torch.no_grad():
                    arg = mode.from_tensor(x) if mode else x
                    if accepted:
                        out = _call(name, arg)
                        assert out.dtype == dtype
                        assert out.is_contiguous(
                            memory_format=torch.channels_last if layout == "channels_last" else torch.contiguous_format
                        )
                        continue
                    error = RuntimeError if len(shape) != 4 else NotImplementedError
                    words = "expected a 4D input" if len(shape) != 4 else f'"{name}" not implemented for'
                    with pytest.raises(error, match=words):
                        _call(name, arg)


def test_opcheck_integer_max_pooling():
    case = MAX_POOL2D["k3-s2-ceil"]
    for layout in ("contiguous", "channels_last"):
        x = to_layout(torch.randint(-50, 50, case.shape(), dtype=torch.int16), layout)
        for op in (ops.max_pool2d_forward, ops.max_pool2d_forward_values):
            torch.library.opcheck(op, (x, *case.op_args()))


def test_seed_examples():
    X = torch.arange(9.0).reshape(1, 1, 3, 3)
    assert F.max_pool2d(X, 2, 1).flatten().tolist() == [4, 5, 7, 8]
    assert F.avg_pool2d(X, 2, 1).flatten().tolist() == [2, 3, 5, 6]
    X = torch.arange(16.0).reshape(1, 1, 4, 4)
    assert lenet_ext.nn.MaxPool2d(3)(X).flatten().tolist() == [10]
    assert lenet_ext.nn.MaxPool2d(3, padding=1, stride=2)(X).flatten().tolist() == [5, 7, 13, 15]
    assert lenet_ext.nn.MaxPool2d((2, 3), stride=(2, 3), padding=(0, 1))(X).flatten().tolist() == [5, 7, 13, 15]
    two = torch.cat((X, X + 1), 1)
    assert lenet_ext.nn.MaxPool2d(3, padding=1, stride=2)(two)[0, 1].flatten().tolist() == [6, 8, 14, 16]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 2, 6, 6), (1, 70, 7, 40)], ids=["small", "vectors"])
def test_nan_and_inf(device, shape, dtype):
    """NaN wins (the last NaN of a window), a window of -inf keeps its first position; "vectors" is wide
    and deep enough for every level's vector loops in both layouts, tails included."""
    x = torch.randn(shape, device=device, dtype=torch.float64)
    x[0, 0, 1, 1] = float("nan")  # one NaN in a window wins it
    x[0, 0, 4, 4] = x[0, 0, 4, 5] = float("nan")  # two NaNs in one window
    x[0, 1, :3, :3] = float("-inf")  # a window of only -inf gives -inf at its first position
    x[0, 1, 3:, 3:] = float("inf")
    if shape[1] > 2:
        x[0, 2::3, 1, 1:30:4] = float("nan")
        x[0, 2::3, 2, 2:30:4] = float("nan")
        x[0, 3::2, :3, 10:20] = float("-inf")
    x = x.to(dtype).requires_grad_()
    for layout in ("contiguous", "channels_last"):
        xl = clone_leaf(x.detach().contiguous(memory_format=torch.channels_last)) if layout != "contiguous" else x
        for cfg in [(2, 2, 0), (3, 3, 0), (3, 2, 1), (3, 1, 1), (2, 1, 1)]:
            out, idx = F.max_pool2d(xl, *cfg, return_indices=True)
            ref, ref_idx = TF.max_pool2d(xl.detach(), *cfg, return_indices=True)
            torch.testing.assert_close(out, ref, rtol=0, atol=0, equal_nan=True)
            assert torch.equal(idx, ref_idx)
            with torch.no_grad():
                torch.testing.assert_close(F.max_pool2d(xl, *cfg), ref, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.int32])
def test_max_ties_and_signed_zeros(device, dtype):
    """Windows whose maximum occurs more than once, as +0 and -0 among others: the first in torch's tap order
    wins, with its own value (its sign) and index, in both layouts, for overlapping and dilated windows."""
    g = torch.Generator().manual_seed(7)
    x = torch.randint(-2, 2, (2, 3, 9, 11), generator=g).to(torch.float64)  # few values: many ties
    # and wide, deep ones, for every level's vector loops and their tails in both layouts
    x = torch.cat([x, torch.randint(-2, 2, (2, 67, 9, 11), generator=g).to(torch.float64)], 1)
    x = torch.cat([x, torch.randint(-2, 2, (2, 70, 9, 38), generator=g).to(torch.float64)[..., :27]], 3)
    if dtype.is_floating_point:
        x = torch.where(torch.rand(x.shape, generator=g) < 0.5, x, -x)  # half the zeros are -0
        x[0, 0, 4, :] = float("nan")  # and a row of NaNs: the last NaN of a window wins
    x = x.to(dtype).to(device)
    for layout in ("contiguous", "channels_last"):
        xl = x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x
        for kernel, stride, padding, dilation in [
            (2, 2, 0, 1),
            (3, 2, 1, 1),
            (3, 1, 1, 2),
            ((2, 3), (1, 2), 0, 1),
            (3, 1, 1, 1),
            ((3, 2), 1, (1, 1), (1, 3)),
        ]:
            out, idx = F.max_pool2d(xl, kernel, stride, padding, dilation, return_indices=True)
            ref, ref_idx = TF.max_pool2d(xl, kernel, stride, padding, dilation, return_indices=True)
            assert torch.equal(idx, ref_idx), (layout, kernel, stride, padding, dilation)
            torch.testing.assert_close(out, ref, rtol=0, atol=0, equal_nan=True)
            if dtype.is_floating_point:  # the sign of a zero (a NaN's sign is its payload's: torch's bfloat16 differs)
                numbers = ~ref.isnan()
                assert torch.equal(out.signbit()[numbers], ref.signbit()[numbers]), (layout, kernel, stride, padding)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_avg_sums_stay_within_torchs_error(layout, dtype):
    """Long rows of values far from 0 (where rounding shows), wide windows sliding by 1: each output's sum
    must be no further from the float64 result than torch's own (no running sum that drifts along a row)."""
    g = torch.Generator().manual_seed(3)
    x = (1000 + torch.randn(2, 19, 5, 4099, generator=g, dtype=torch.float64)).to(dtype)
    x = to_layout(x, layout)
    for kernel, stride, padding in [((3, 31), 1, (1, 15)), (3, 1, 1), ((2, 64), (1, 3), (1, 0))]:
        exact = TF.avg_pool2d(x.double(), kernel, stride, padding)
        ours, theirs = F.avg_pool2d(x, kernel, stride, padding), TF.avg_pool2d(x, kernel, stride, padding)
        torch_error = (theirs.double() - exact).abs().max()
        rounding = torch.finfo(dtype).eps * exact.abs().max()
        assert (ours.double() - exact).abs().max() <= 2 * torch_error + rounding, (kernel, stride, padding)


def test_ceil_mode_edges():
    x = torch.arange(25.0).reshape(1, 1, 5, 5)
    # a last window starting in the left padding counts; one starting in the right padding is dropped
    for k, s, p in [(2, 2, 1), (3, 3, 1), (2, 3, 0), (3, 2, 1), (4, 4, 2)]:
        ours = F.max_pool2d(x, k, s, p, ceil_mode=True, return_indices=True)
        ref = TF.max_pool2d(x, k, s, p, ceil_mode=True, return_indices=True)
        assert ours[0].shape == ref[0].shape, (k, s, p)
        assert torch.equal(ours[0], ref[0]) and torch.equal(ours[1], ref[1])
        for include in (True, False):
            assert_close(F.avg_pool2d(x, k, s, p, True, include), TF.avg_pool2d(x, k, s, p, True, include))
    # (5 + 2 - 2) / 2 rounds up to 3 windows, but the third would start at 5, in the right padding
    assert F.max_pool2d(torch.zeros(1, 1, 5, 5), 2, 2, 1, ceil_mode=True).shape[-1] == 3
    assert F.max_pool2d(torch.zeros(1, 1, 4, 4), 2, 3, 0, ceil_mode=True).shape[-1] == 2


@pytest.mark.parametrize("op", ["max", "avg"])
def test_gradcheck_and_gradgradcheck(device, op):
    x = make_input((2, 2, 7, 6), torch.float64, device, "contiguous", requires_grad=True, distinct=True)
    if op == "max":
        f = lambda t: F.max_pool2d(t, 3, 2, 1, ceil_mode=True)
    else:
        f = lambda t: F.avg_pool2d(t, 3, 2, 1, ceil_mode=True, count_include_pad=False)
    assert torch.autograd.gradcheck(f, (x,))
    assert torch.autograd.gradgradcheck(f, (x,))
    xc = clone_leaf(x.detach().contiguous(memory_format=torch.channels_last)).requires_grad_()
    assert torch.autograd.gradgradcheck(f, (xc,))


@pytest.mark.parametrize(
    "f",
    [
        lambda t: F.max_pool2d(t, (3, 2), (1, 2), (1, 0), dilation=(2, 1)),  # dilated, overlapping windows
        lambda t: F.avg_pool2d(t, 3, 2, 1, ceil_mode=True, count_include_pad=True),
        lambda t: F.avg_pool2d(t, (2, 3), 1, (1, 1), divisor_override=4),
    ],
    ids=["max-dilated", "avg-include-pad", "avg-divisor"],
)
def test_gradgradcheck_other_windows(f):
    x = make_input((1, 2, 6, 7), torch.float64, "cpu", "contiguous", requires_grad=True, distinct=True)
    assert torch.autograd.gradgradcheck(f, (x,))


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_windows_of_only_padding_get_no_gradient(device, layout):
    # kernel 2, dilation 2, padding 1 over a 1-row input: both row taps fall in the padding. The output
    # is -inf and torch records an index past the plane for it (ours too); that index must not be an
    # error in backward, and no input may receive that output's gradient.
    x = make_input((1, 2, 1, 3), torch.float64, device, layout, requires_grad=True)
    out, idx = F.max_pool2d(x, (2, 1), 1, (1, 0), (2, 1), return_indices=True)
    ref, ref_idx = TF.max_pool2d(pool_reference_input(x.detach()), (2, 1), 1, (1, 0), (2, 1), return_indices=True)
    assert torch.equal(out, ref) and torch.equal(idx, ref_idx) and bool((out == float("-inf")).all())
    (gx,) = torch.autograd.grad(out, x, torch.randn_like(out))
    assert torch.equal(gx, torch.zeros_like(x))
    # mixed: only the first output row reads padding alone
    x = make_input((1, 1, 4, 3), torch.float64, device, layout, requires_grad=True, distinct=True)
    f = lambda t: F.max_pool2d(t, (2, 2), (3, 1), (1, 0), (5, 1))  # noqa: E731
    out = f(x)
    assert bool((out[0, 0, 0] == float("-inf")).all()) and bool(out[0, 0, 1:].isfinite().all())
    (gx,) = torch.autograd.grad(out, x, torch.ones_like(out))
    assert gx.sum() == out[0, 0, 1:].numel()


def test_values_only_forward_is_differentiable(device):
    # functional only picks it without grad, but the operator on its own still differentiates correctly
    x = make_input((1, 2, 6, 6), torch.float64, device, requires_grad=True, distinct=True)
    assert torch.autograd.gradcheck(
        lambda t: ops.max_pool2d_forward_values(t, [3, 3], [2, 2], [1, 1], [1, 1], False), (x,)
    )


def test_torch_compile_fullgraph(device):
    torch._dynamo.reset()
    model = torch.nn.Sequential(
        lenet_ext.nn.MaxPool2d(3, 2, 1), lenet_ext.nn.AvgPool2d(2, ceil_mode=True, count_include_pad=False)
    ).to(device)
    reference = torch.nn.Sequential(
        torch.nn.MaxPool2d(3, 2, 1), torch.nn.AvgPool2d(2, ceil_mode=True, count_include_pad=False)
    )
    compiled = torch.compile(model, fullgraph=True)
    x = make_input((2, 3, 11, 9), torch.float32, device, requires_grad=True, distinct=True)
    out = compiled(x)
    ref = reference(clone_leaf(x))
    assert_close(out, ref)
    g = torch.randn_like(ref)
    (gx,) = torch.autograd.grad(out, x, g)
    assert_close(gx, torch.autograd.grad(reference(x), x, g)[0])


def test_layers_are_torchs():
    m = lenet_ext.nn.MaxPool2d(3, 2, 1, ceil_mode=True)
    a = lenet_ext.nn.AvgPool2d(3, 2, 1, divisor_override=4)
    assert isinstance(m, torch.nn.MaxPool2d) and isinstance(a, torch.nn.AvgPool2d)
    assert repr(m) == repr(torch.nn.MaxPool2d(3, 2, 1, ceil_mode=True))
    assert repr(a) == repr(torch.nn.AvgPool2d(3, 2, 1, divisor_override=4))
    x = torch.randn(1, 2, 9, 9)
    out, idx = lenet_ext.nn.MaxPool2d(3, 2, return_indices=True)(x)
    ref, ref_idx = torch.nn.MaxPool2d(3, 2, return_indices=True)(x)
    assert torch.equal(out, ref) and torch.equal(idx, ref_idx)
    assert_close(a(x), torch.nn.AvgPool2d(3, 2, 1, divisor_override=4)(x))


# The error catalogue: each entry is (args, kwargs) run through ours and torch's, 4D input unless named.
X = torch.randn(1, 2, 5, 5)
MAX_ERRORS = [
    ((X, 2), dict(padding=2)),  # pad should be at most half of effective kernel size
    ((X, (3, 2)), dict(padding=(1, 2))),  # ... checked per dimension
    ((X, 2), dict(stride=0)),  # stride should not be zero
    ((X, 0), {}),  # a zero kernel is a zero stride first
    ((X, 0), dict(stride=1)),  # kernel size should be greater than zero
    ((X, -1), dict(stride=1)),
    ((X, -3), dict(stride=1)),  # the padding rule sees the negative kernel first
    ((X, 2), dict(stride=(1, -1))),  # stride should be greater than zero
    ((X, 2), dict(dilation=0)),
    ((X, 2), dict(padding=-1)),  # pad must be non-negative
    ((X, 6), {}),  # Output size is too small
    ((torch.randn(1, 1, 1, 5), 2), {}),
    ((X, (1, 2, 3)), {}),  # the "single int, or a tuple of two ints" family
    ((X, []), {}),
    ((X, 2), dict(stride=(1, 2, 3))),
    ((X, 2), dict(padding=(1, 2, 3))),
    ((X, 2), dict(dilation=(1, 2, 3))),
    ((X[0, 0], 2), {}),  # non-empty 3D or 4D (batch mode) tensor expected
    ((X[None], 2), {}),
    ((torch.randn(1, 0, 5, 5), 2), {}),  # Expected 3D or 4D ... with optional 0 dim batch size
    ((torch.randn(0, 5, 5), 2), {}),
    ((X, 2**31), {}),  # huge values: torch's int conversion error, never a crash
    ((X, 2), dict(stride=2**40)),
    ((X, 2), dict(dilation=2**62)),
    ((X, 2.0), {}),
    ((X, (2, 2.0)), {}),
    ((X, None), {}),
    (([1.0], 2), {}),
    ((X, 2), dict(ceil_mode=1)),
]
AVG_ERRORS = [
    ((X, 2), dict(padding=2)),
    ((X, 2), dict(stride=0)),
    ((X, 0), dict(stride=1)),
    ((X, -1), dict(stride=1)),
    ((X, 2), dict(stride=-1)),
    ((X, 2), dict(padding=-1)),
    ((X, 2), dict(divisor_override=0)),  # divisor must be not zero
    ((X, 6), {}),
    ((X, (1, 2, 3)), {}),
    ((X, 2), dict(stride=(1, 2, 3))),
    ((X, 2), dict(padding=(1, 2, 3))),
    ((X[0, 0], 2), {}),  # torch's own IndexError
    ((X[0, 0, 0], 2), {}),
    ((X[None], 2), {}),
    ((X[None], 2), dict(padding=5)),
    ((torch.randn(1, 0, 5, 5), 2), {}),
    ((X, 2**31), dict(stride=1)),
    ((X, 2.0), {}),
    ((X, 2), dict(divisor_override=2.5)),
    ((X, 2), dict(divisor_override=True)),
    ((X, 2), dict(ceil_mode=1)),
]


@pytest.mark.parametrize("args,kwargs", MAX_ERRORS)
def test_max_pool2d_errors_like_torch(args, kwargs):
    expected, _ = raises_like_torch(lambda: F.max_pool2d(*args, **kwargs), lambda: TF.max_pool2d(*args, **kwargs))
    assert isinstance(expected, Exception), "this case should be an error in torch too"


@pytest.mark.parametrize("args,kwargs", AVG_ERRORS)
def test_avg_pool2d_errors_like_torch(args, kwargs):
    expected, _ = raises_like_torch(lambda: F.avg_pool2d(*args, **kwargs), lambda: TF.avg_pool2d(*args, **kwargs))
    assert isinstance(expected, Exception), "this case should be an error in torch too"


def test_unsupported_dtype_raises_not_implemented():
    with pytest.raises(NotImplementedError, match="not implemented for 'Bool'"):
        F.max_pool2d(torch.ones(1, 1, 4, 4, dtype=torch.bool), 2)
    with pytest.raises(NotImplementedError, match="not implemented for 'ComplexFloat'"):
        F.max_pool2d(torch.ones(1, 1, 4, 4, dtype=torch.complex64), 2)


def test_operators_check_their_arguments():
    x = torch.randn(1, 2, 6, 6)
    conf = ([2, 2], [2, 2], [0, 0], [1, 1], False)
    out, idx = ops.max_pool2d_forward(x, *conf)
    with pytest.raises(RuntimeError, match="expected grad_output of size"):
        ops.max_pool2d_backward(torch.randn(1, 2, 4, 4), x, idx, *conf)
    with pytest.raises(RuntimeError, match="expected indices of size"):
        ops.max_pool2d_backward(out, x, idx[:, :1], *conf)
    with pytest.raises(RuntimeError, match="expected indices of dtype Long"):
        ops.max_pool2d_backward(out, x, idx.int(), *conf)
    for bad in (36, -1, 1 << 62):
        with pytest.raises(RuntimeError, match=f"found an invalid max index {bad}"):
            ops.max_pool2d_backward(out, x, torch.full_like(idx, bad), *conf)
        with pytest.raises(RuntimeError, match="found an invalid max index"):
            xl = x.contiguous(memory_format=torch.channels_last)
            ops.max_pool2d_backward(out, xl, torch.full_like(idx, bad), *conf)
    with pytest.raises(RuntimeError, match="too large"):
        ops.max_pool2d_forward(x, [2, 1 << 50], [2, 2], [0, 0], [1, 1], False)
    with pytest.raises(RuntimeError, match="divisor must be not zero"):
        ops.avg_pool2d_forward(x, [2, 2], [2, 2], [0, 0], False, True, 0)
    with pytest.raises(RuntimeError, match="pad should be at most half"):
        ops.avg_pool2d_forward(x, [2, 2], [2, 2], [2, 0], False, True, None)
    with pytest.raises(RuntimeError, match="expected a 4D input"):
        ops.avg_pool2d_forward(x[0], [2, 2], [2, 2], [0, 0], False, True, None)


def test_backward_writes_no_gradient_for_the_indices():
    # The indices are a non-differentiable second output; autograd would hand the backward an int64
    # tensor of zeros in their shape, which it never reads. The operator's Function asks for None.
    x = torch.randn(4, 3, 12, 12, requires_grad=True)
    out, idx = F.max_pool2d(x, 2, return_indices=True)
    with torch.profiler.profile(record_shapes=True) as prof:
        (gx,) = torch.autograd.grad(out.sum(), x)
    fills = [
        e for e in prof.events() if e.name in ("aten::fill_", "aten::zero_") and e.input_shapes[:1] == [list(idx.shape)]
    ]
    assert not fills, [(e.name, e.input_shapes) for e in fills]
    ref = x.detach().clone().requires_grad_()
    (expected,) = torch.autograd.grad(TF.max_pool2d(ref, 2).sum(), ref)
    assert torch.equal(gx, expected)


def test_cuda_run_items_on_host_every_row_end():
    # rows of 1 to 9 outputs: runs of kRun (4) that end inside a row, exactly at its end, or are the
    # whole row; with padding, ceil mode and dilation so that the first and last windows are clipped
    for width in range(1, 10):
        x = make_input((2, 3, 5, 2 * width + 1), torch.float64, "cpu", "contiguous", distinct=True)
        conf = ([3, 3], [2, 2], [1, 1], [1, 2], True)
        ref, ref_idx = TF.max_pool2d(x, *conf, return_indices=True)
        out, idx = _host("max_pool2d_forward", x, *conf, native=False, runs=True)
        assert torch.equal(out, ref) and torch.equal(idx, ref_idx), width
        assert torch.equal(_host("max_pool2d_forward_values", x, *conf, native=False, runs=True)[0], ref)
        avg_conf = ([3, 2], [2, 2], [1, 1], True, False, None)
        got, _ = _host("avg_pool2d_forward", x, *avg_conf, native=False, avg=True, runs=True)
        assert_close(got, TF.avg_pool2d(x, [3, 2], [2, 2], [1, 1], True, False), dtype=torch.float64)


# 2x2 stride-2 column windows (kernel width 2, stride 2, no column padding or dilation): a run wholly inside
# its row loads its span of 2 * kRun columns V at a time, V from the row length and the plane's alignment
def _same(actual, expected):
    """The same values, NaNs in the same places."""
    torch.testing.assert_close(actual, expected, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int32])
@pytest.mark.parametrize(
    "rows",
    [(2, 2, 0, 1), (3, 1, 1, 2), (1, 3, 0, 1)],
    ids=["2x2", "rows-3-s1-p1-d2", "rows-1-s3"],
)
def test_cuda_run_items_on_host_paired_columns(dtype, rows):
    kh, sh, ph, dh = rows
    conf = ([kh, 2], [sh, 2], [ph, 0], [dh, 1])
    for width in range(2, 21):  # row lengths of every residue: vector widths 8, 4, 2 and 1, whole and partial runs
        for offset in (0, 1):  # storage one element in: no span can be aligned, so the runs load one at a time
            n = 2 * 3 * 7 * width
            if dtype.is_floating_point:
                base = torch.randperm(offset + n).to(dtype) / (offset + n)
                base[offset + 5 :: 17] = float("nan")  # NaNs win, and the last one's index is kept
                base[offset + 3 :: 11] = float("-inf")
            else:
                base = torch.randint(-50, 50, (offset + n,), dtype=dtype)
            x = base[offset:].view(2, 3, 7, width)
            for ceil in (False, True):
                ref, ref_idx = TF.max_pool2d(x.double(), *conf, ceil, return_indices=True)
                one, one_idx = _host("max_pool2d_forward", x, *conf, ceil, native=False)
                out, idx = _host("max_pool2d_forward", x, *conf, ceil, native=False, runs=True)
                assert torch.equal(idx, ref_idx)
                _same(out, ref.to(dtype))
                _same(out, one)
                assert torch.equal(idx, one_idx), (width, offset, ceil)
                values, _ = _host("max_pool2d_forward_values", x, *conf, ceil, native=False, runs=True)
                _same(values, out)
                if not dtype.is_floating_point:
                    continue
                for include_pad, divisor in ((True, None), (False, None), (True, 3)):
                    avg_conf = ([kh, 2], [sh, 2], [ph, 0], ceil, include_pad, divisor)
                    got, _ = _host("avg_pool2d_forward", x, *avg_conf, native=False, avg=True, runs=True)
                    one, _ = _host("avg_pool2d_forward", x, *avg_conf, native=False, avg=True)
                    _same(got, one)
                    want = TF.avg_pool2d(x.double(), *avg_conf)
                    assert_close(got.double(), want, dtype=dtype, equal_nan=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("cfg", [(3, 1, 1, 1), ((3, 5), 1, (1, 2), 1), (3, 1, 1, 2), (3, 2, 1, 1)],
                         ids=["3x3", "3x5", "dilated", "3x3-s2"])
def test_scattered_nans_in_stride_one_rows(cfg, dtype):
    """The NCHW stride-1 kernels fold NaN-free rows with one compare per tap and rows holding a NaN with the
    full rule: NaNs scattered over some rows (edges, vector lanes and tails) and not others, with and without
    indices, at the level in use (LENET_EXT_CPU_ISA=avx2 or default runs the same test at the others)."""
    g = torch.Generator().manual_seed(11)
    x = torch.randn(2, 3, 23, 71, generator=g, dtype=torch.float64)
    x.view(-1)[torch.randint(0, x.numel(), (40,), generator=g)] = float("nan")
    x[1, 2] = float("nan")  # a plane of NaNs
    x[0, 1, :, 0] = float("nan")  # a column at the left edge
    x = x.to(dtype)
    kernel, stride, padding, dilation = cfg
    out, idx = F.max_pool2d(x, kernel, stride, padding, dilation, return_indices=True)
    ref, ref_idx = TF.max_pool2d(x, kernel, stride, padding, dilation, return_indices=True)
    torch.testing.assert_close(out, ref, rtol=0, atol=0, equal_nan=True)
    assert torch.equal(idx, ref_idx)
    torch.testing.assert_close(F.max_pool2d(x, kernel, stride, padding, dilation), ref, rtol=0, atol=0,
                               equal_nan=True)
