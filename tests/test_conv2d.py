"""lenet_ext conv2d against torch.nn.functional.conv2d: values, all three gradients, layouts, errors."""

import pytest
import torch
import torch.nn.functional as F
from cases import CONV2D, Conv2dCase, torch_conv2d
from common import (
    LAYOUTS,
    assert_close,
    assert_no_worse_than_torch,
    check_conv2d,
    clone_leaf,
    grads,
    make_input,
    raises_like_torch,
)

import lenet_ext
from lenet_ext import functional as LF


@pytest.mark.parametrize("case", CONV2D, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_torch(case, dtype, device):
    check_conv2d(case, dtype, device)


@pytest.mark.parametrize("algorithm", ["direct", "im2col", "winograd"])
@pytest.mark.parametrize("case", CONV2D, ids=str)
def test_each_cpu_algorithm(case, algorithm):
    with lenet_ext.backends.conv_algorithm(algorithm):
        check_conv2d(case, torch.float64)


def test_conv_algorithm_setting():
    assert lenet_ext.backends.current_conv_algorithm() == "auto"
    with lenet_ext.backends.conv_algorithm("direct"):
        assert lenet_ext.backends.current_conv_algorithm() == "direct"
    assert lenet_ext.backends.current_conv_algorithm() == "auto"
    with pytest.raises(ValueError, match="conv_algorithm must be one of"):
        lenet_ext.backends.conv_algorithm("fft")


@pytest.mark.parametrize("layout", [layout for layout in LAYOUTS if layout != "contiguous"])  # contiguous: above
@pytest.mark.parametrize("case", CONV2D, ids=str)
def test_any_layout(case, layout, device):
    check_conv2d(case, torch.float32, device, layout)


@pytest.mark.parametrize("case", CONV2D.tagged("core"), ids=str)
def test_without_bias_and_unbatched(case, device):
    check_conv2d(case, torch.float64, device, bias=False)
    check_conv2d(case, torch.float64, device, unbatched=True)


def test_expanded_weight(device):
    x = torch.randn(2, 3, 8, 8, device=device)
    w = torch.randn(1, 3, 3, 3, device=device).expand(5, 3, 3, 3)  # stride 0 along out channels
    assert_close(LF.conv2d(x, w, padding=1), F.conv2d(x, w, padding=1))


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_bfloat16_forward_and_gradients_against_float64(layout):
    x = make_input((2, 3, 10, 10), torch.bfloat16, "cpu", layout, requires_grad=True)
    w = make_input((4, 3, 3, 3), torch.bfloat16, "cpu", requires_grad=True)
    b = make_input((4,), torch.bfloat16, "cpu", requires_grad=True)
    ours_in, exact_in = [clone_leaf(t) for t in (x, w, b)], [clone_leaf(t.double()) for t in (x, w, b)]
    out, ref, exact = LF.conv2d(*ours_in, padding=1), F.conv2d(x, w, b, padding=1), F.conv2d(*exact_in, padding=1)
    assert out.dtype == torch.bfloat16
    assert_no_worse_than_torch(out, ref, exact)
    g = torch.randn_like(ref)
    for a, e, x64 in zip(grads(out, ours_in, g), grads(ref, [x, w, b], g), grads(exact, exact_in, g.double())):
        assert_no_worse_than_torch(a, e, x64)


@pytest.mark.parametrize("case", CONV2D.tagged("gradcheck"), ids=str)
def test_gradcheck_and_gradgradcheck(case):
    x = torch.randn(case.input, dtype=torch.float64, requires_grad=True)
    w = torch.randn(case.weight, dtype=torch.float64, requires_grad=True)
    b = torch.randn(case.weight[0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(case.ours, (x, w, b))
    assert torch.autograd.gradgradcheck(case.ours, (x, w, b))


@pytest.mark.parametrize("mask", [(True, True, True), (True, False, False), (False, True, False), (False, False, True)])
@pytest.mark.parametrize("algorithm", ["direct", "im2col"])
def test_opcheck(mask, algorithm):
    case = CONV2D["grouped-asymmetric"]  # strided, dilated, grouped, and padded differently on each side
    x = torch.randn(case.input, requires_grad=True)
    w = torch.randn(case.weight, requires_grad=True)
    b = torch.randn(case.weight[0], requires_grad=True)
    conf = case.op_args()
    with lenet_ext.backends.conv_algorithm(algorithm):
        torch.library.opcheck(torch.ops.lenet_ext.conv2d_forward, (x, w, b, *conf))
        grad = torch.randn(torch.ops.lenet_ext.conv2d_forward(x, w, b, *conf).shape)
        torch.library.opcheck(torch.ops.lenet_ext.conv2d_backward, (grad, x, w, *conf, list(mask)))


def test_backward_computes_only_masked_gradients():
    x, w = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)
    g = torch.randn(1, 3, 3, 3)
    gi, gw, gb = torch.ops.lenet_ext.conv2d_backward(g, x, w, [1, 1], [0, 0, 0, 0], [1, 1], 1, [False, True, False])
    assert gi is None and gb is None and gw.shape == w.shape


def test_torch_compile_fullgraph():
    model = torch.nn.Sequential(lenet_ext.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), lenet_ext.nn.Conv2d(8, 4, 3))
    x = torch.randn(2, 3, 12, 12, requires_grad=True)
    xc = x.detach().clone().requires_grad_()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    out, ref = compiled(xc), model(x)
    assert_close(out, ref)
    g = torch.randn_like(ref)
    params = list(model.parameters())
    # the compiled backward against eager ours: the input's gradient and every parameter's
    for a, e in zip(torch.autograd.grad(out, [xc, *params], g), torch.autograd.grad(ref, [x, *params], g)):
        assert_close(a, e)


# ------------------------------------------------------------------------------------------- the layer
@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
def test_layer_matches_torch_layer(padding_mode, device):
    ours = lenet_ext.nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 1), padding_mode=padding_mode, groups=2)
    theirs = torch.nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 1), padding_mode=padding_mode, groups=2)
    theirs.load_state_dict(ours.state_dict())
    ours, theirs = ours.to(device), theirs.to(device)
    assert isinstance(ours, torch.nn.Conv2d)
    assert repr(ours) == repr(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    x = torch.randn(2, 4, 9, 8, device=device)
    assert_close(ours(x), theirs(x))
    ours(x).square().sum().backward()
    theirs(x).square().sum().backward()
    assert_close(ours.weight.grad, theirs.weight.grad)
    assert_close(ours.bias.grad, theirs.bias.grad)


def test_layer_padding_same():
    layer = lenet_ext.nn.Conv2d(2, 3, 4, padding="same", dilation=2)
    x = torch.randn(1, 2, 9, 9)
    assert_close(layer(x), F.conv2d(x, layer.weight, layer.bias, padding="same", dilation=2))


def _fused_reference(x, w, b, **kw):
    return torch.nn.functional.avg_pool2d(torch.sigmoid(F.conv2d(x, w, b, **kw)), 2)


@pytest.mark.parametrize("kernel", [(2, 2), (3, 4)])
@pytest.mark.parametrize("block", ["conv", "fused"])
def test_input_changed_in_place_after_padding_same_with_an_even_kernel(block, kernel):
    # torch pads such an input (one more row and column after than before) into a copy, which its backward
    # saves; changing the input in place after the call does not change the gradients, and neither does ours
    ours, theirs = (LF.conv2d, F.conv2d) if block == "conv" else (LF.conv2d_sigmoid_avgpool2d, _fused_reference)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, *kernel, dtype=torch.float64, requires_grad=True)
    results = []
    for f in (ours, theirs):
        y = x * 1
        out = f(y, w, None, padding="same")
        y.add_(1)
        results.append(torch.autograd.grad(out.sin().sum(), (x, w)))
    for a, e in zip(*results):
        assert_close(a, e)


def test_padding_same_with_an_even_kernel_under_torch_compile():
    # the copy is traced (fullgraph); its values and gradients are the uncompiled call's
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    w = torch.randn(4, 3, 2, 2, requires_grad=True)
    compiled = torch.compile(lambda x, w: LF.conv2d(x, w, padding="same"), fullgraph=True)
    out, ref = compiled(x, w), F.conv2d(x, w, padding="same")
    assert_close(out, ref)
    for a, e in zip(torch.autograd.grad(out.sum(), (x, w)), torch.autograd.grad(ref.sum(), (x, w))):
        assert_close(a, e)


def test_input_changed_in_place_after_symmetric_padding_raises_as_torch():
    # an odd kernel pads inside the kernel in both: both save the input itself and see the change
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    for f in (LF.conv2d, F.conv2d):
        y = torch.randn(2, 3, 8, 8, requires_grad=True) * 1
        out = f(y, w, None, padding="same")
        y.add_(1)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            out.sum().backward()


# ------------------------------------------------------------------------------- the seed's worked examples
@pytest.mark.parametrize(
    "size, kernel, padding, stride, expected",
    [
        ((8, 8), 3, 1, 1, (8, 8)),
        ((8, 8), (5, 3), (2, 1), 1, (8, 8)),
        ((8, 8), 3, 1, 2, (4, 4)),
        ((8, 8), (3, 5), (0, 1), (3, 4), (2, 2)),
    ],
)
def test_seed_output_shapes(size, kernel, padding, stride, expected):
    layer = lenet_ext.nn.Conv2d(1, 1, kernel, padding=padding, stride=stride)
    assert layer(torch.randn(1, 1, *size)).shape[2:] == expected


def test_seed_multi_input_and_output_channels():
    x = torch.tensor([[[0.0, 1, 2], [3, 4, 5], [6, 7, 8]], [[1, 2, 3], [4, 5, 6], [7, 8, 9]]])
    k = torch.tensor([[[0.0, 1], [2, 3]], [[1, 2], [3, 4]]])
    assert torch.equal(LF.conv2d(x, k.unsqueeze(0)), torch.tensor([[[56.0, 72], [104, 120]]]))
    out = LF.conv2d(x, torch.stack([k, k + 1, k + 2]))
    assert out.shape == (3, 2, 2)
    assert torch.equal(out[1], torch.tensor([[76.0, 100], [148, 172]]))


def test_pointwise_is_a_matrix_product():
    x, w = torch.randn(3, 3, 3), torch.randn(2, 3, 1, 1)
    expected = (w.view(2, 3) @ x.view(3, 9)).view(2, 3, 3)
    assert_close(LF.conv2d(x, w), expected)


# ------------------------------------------------------------------------------------------- bad input
X = torch.randn(CONV2D["plain"].input)
W = torch.randn(CONV2D["plain"].weight)
BAD = {
    "channels": (X, torch.randn(4, 3, 3, 3), {}),
    "stride0": (X, W, dict(stride=0)),
    "stride-neg": (X, W, dict(stride=(1, -2))),
    "padding-neg": (X, W, dict(padding=-1)),
    "dilation0": (X, W, dict(dilation=0)),
    "groups0": (X, W, dict(groups=0)),
    "groups-neg": (X, W, dict(groups=-2)),
    "same-strided": (X, W, dict(padding="same", stride=2)),
    "bad-string": (X, W, dict(padding="foo")),
    "kernel-too-big": (X, torch.randn(4, 2, 9, 9), {}),
    "dtype": (X, W.double(), {}),
    "dtype-input": (X.double(), W, {}),
    "bias-dtype": (X, W, dict(bias=torch.randn(4).double())),
    "bias-size": (X, W, dict(bias=torch.randn(5))),
    "bias-2d": (X, W, dict(bias=torch.randn(4, 1))),
    "groups-divisible": (X, torch.randn(3, 1, 3, 3), dict(groups=2)),
    "groups-too-many": (torch.randn(1, 8, 8, 8), torch.randn(4, 1, 3, 3), dict(groups=8)),
    "input-2d": (X[0, 0], W, {}),
    "input-5d": (X.unsqueeze(0), W, {}),
    "stride-len3": (X, W, dict(stride=(1, 2, 3))),
    "padding-len3": (X, W, dict(padding=(1, 2, 3))),
    "padding-empty": (X, W, dict(padding=())),
    "stride-float": (X, W, dict(stride=1.5), "conv2d()"),
    "groups-float": (X, W, dict(groups=1.0), "conv2d()"),
    "empty-height": (torch.randn(1, 2, 0, 8), W, {}),
    "no-out-channels": (X, torch.randn(0, 2, 3, 3), {}),
    "kernel-zero": (X, torch.randn(4, 2, 0, 3), {}),
    "bool": (X.bool(), W.bool(), {}, "not implemented for 'Bool'"),
    "stride-2^63": (X, W, dict(stride=2**63)),
}


@pytest.mark.parametrize("name", list(BAD))
def test_errors_match_torch(name):
    x, w, kw, *same_words = BAD[name]
    expected, _ = raises_like_torch(lambda: LF.conv2d(x, w, **kw), lambda: F.conv2d(x, w, **kw), *same_words)
    # a bad input: if torch starts accepting it, this case compares nothing and must be revisited
    assert isinstance(expected, Exception), f"torch now accepts {name!r}"


@pytest.mark.parametrize(
    "kw", [dict(padding=2**62), dict(dilation=2**62), dict(padding=(0, 2**63 - 1)), dict(dilation=(2**41, 1))]
)
def test_huge_arguments_are_errors_not_overflows(kw):
    with pytest.raises((RuntimeError, ValueError), match="too large|does not fit"):
        LF.conv2d(X, W, **kw)


def test_huge_stride_is_fine():
    assert_close(LF.conv2d(X, W, stride=2**62), F.conv2d(X, W, stride=2**62))


def test_operator_rejects_bad_arguments_directly():
    # Calls that bypass functional.conv2d still get checked errors, never a crash.
    op = torch.ops.lenet_ext.conv2d_forward
    with pytest.raises(RuntimeError, match="channels"):
        op(X, torch.randn(4, 3, 3, 3), None, [1, 1], [0, 0, 0, 0], [1, 1], 1)
    with pytest.raises(RuntimeError, match="too large"):
        op(X, W, None, [1, 1], [2**50, 0, 0, 0], [1, 1], 1)
    with pytest.raises(RuntimeError, match="grad_output"):
        torch.ops.lenet_ext.conv2d_backward(torch.randn(1, 4, 5, 5), X, W, [1, 1], [0] * 4, [1, 1], 1, [True] * 3)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.complex64])
def test_unsupported_dtypes_raise_clearly(dtype):
    # torch computes these on the CPU; our kernels do the four floating types on every device and say so.
    with pytest.raises(NotImplementedError, match='"conv2d_forward" not implemented for'):
        LF.conv2d(X.to(dtype), W.to(dtype))


def test_zero_input_channels_give_bias():
    # torch 2.13 returns a (2, 0, 3, 3) tensor here, dropping the weight's 3 output channels; an empty
    # sum is zero, so the mathematically right answer is the bias at every pixel, which is ours.
    x, w, b = torch.randn(2, 0, 5, 5), torch.randn(3, 0, 3, 3), torch.randn(3)
    assert torch.equal(LF.conv2d(x, w, b), b.view(1, 3, 1, 1).expand(2, 3, 3, 3))


@pytest.mark.parametrize("groups", [1, 4], ids=["dense", "depthwise"])
def test_weight_gradient_with_an_infinite_input_matches_torch(groups):
    # Column 6 is read only by taps j >= 2 of real outputs; the other taps' gradients stay finite in torch.
    # Our depthwise kernel also multiplies positions it then drops, so it must not turn those into NaN.
    x = torch.randn(2, 4, 7, 7, dtype=torch.float64)
    x[0, :, 3, 6] = float("inf")
    w = torch.randn(4, 4 // groups, 3, 3, dtype=torch.float64)
    g = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    ours = torch.ops.lenet_ext.conv2d_backward(g, x, w, [1, 1], [0] * 4, [1, 1], groups, [False, True, False])[1]
    torch_ = torch.ops.aten.convolution_backward(
        g, x, w, None, [1, 1], [0, 0], [1, 1], False, [0, 0], groups, [False, True, False]
    )[1]
    assert_close(ours, torch_, equal_nan=True)
    assert ours[:, :, :, :2].isfinite().all()


@pytest.mark.parametrize("algorithm", ["auto", "direct", "im2col"])
def test_input_gradient_with_a_nonfinite_weight_matches_torch(algorithm):
    # Computed as a convolution, the input gradient would multiply the padded zeros of grad_output by every
    # tap: a NaN or inf tap would make NaN at input positions it never reads (row 8 and column 0 here),
    # where torch's gradient is finite.
    w = torch.randn(4, 2, 3, 3, dtype=torch.float64)
    w[2, 1, 0, 2] = float("nan")  # the top-right tap: never reads the last row or the first column
    w[1, 0, 1, 1] = float("inf")
    x, g = torch.randn(2, 2, 9, 9, dtype=torch.float64), torch.randn(2, 4, 9, 9, dtype=torch.float64)
    with lenet_ext.backends.conv_algorithm(algorithm):
        ours = torch.ops.lenet_ext.conv2d_backward(g, x, w, [1, 1], [1] * 4, [1, 1], 1, [True, False, False])[0]
    torch_ = torch.ops.aten.convolution_backward(
        g, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, [True, False, False]
    )[0]
    assert_close(ours, torch_, equal_nan=True)


# Winograd F(2x2, 3x3) where it applies (3x3, stride 1, no dilation): odd and even output sizes (a partial
# last tile), asymmetric and wide padding, groups, bias or none, and planes smaller than one tile.
WINOGRAD_SHAPES = [
    Conv2dCase.unnamed((2, 8, 9, 7), (5, 8, 3, 3), padding=1),
    Conv2dCase.unnamed((1, 3, 5, 6), (4, 3, 3, 3)),
    Conv2dCase.unnamed((3, 8, 4, 4), (8, 4, 3, 3), padding=2, groups=2),
    Conv2dCase.unnamed((2, 16, 12, 13), (8, 16, 3, 3), padding="same"),
    Conv2dCase.unnamed((2, 4, 2, 2), (3, 4, 3, 3), padding=1),
    Conv2dCase.unnamed((1, 1, 3, 3), (1, 1, 3, 3)),
    Conv2dCase.unnamed((2, 24, 30, 29), (20, 24, 3, 3), padding=1),  # more than one band of tile rows
]


@pytest.mark.parametrize("case", WINOGRAD_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_winograd(case, dtype, bias):
    with lenet_ext.backends.conv_algorithm("winograd"):
        check_conv2d(case, dtype, bias=bias)


def test_winograd_with_an_infinite_input_matches_torch():
    # The transforms mix a tile's values (inf - inf is NaN): a result that is not all finite is computed
    # again by the direct kernels, which give torch's infs and NaNs.
    x = torch.randn(2, 6, 8, 9, dtype=torch.float64)
    x[0, 1, 2, 3] = float("inf")
    x[0, 1, 2, 5] = float("inf")  # with the one above, both d0 and d2 of a tile row
    x[1, 4, 6, 0] = float("-inf")
    w = torch.randn(5, 6, 3, 3, dtype=torch.float64)
    with lenet_ext.backends.conv_algorithm("winograd"):
        ours = LF.conv2d(x, w, padding=1)
    assert_close(ours, F.conv2d(x, w, padding=1), equal_nan=True)


def test_operator_takes_an_empty_input_plane_with_padding():
    # torch's functional refuses empty planes; the operator takes them when the padding makes outputs,
    # which read padding only. Found by review: padding such an input wrote past the padded buffer.
    x, w, b = torch.randn(1, 1, 0, 4), torch.randn(4, 1, 1, 1), torch.randn(4)
    reference = F.conv2d(F.pad(x, (1, 0, 1, 0)), w, b, stride=2)  # the same convolution, padded by hand
    for stride in ([2, 2], [1, 1]):
        out = torch.ops.lenet_ext.conv2d_forward(x, w, b, stride, [1, 0, 1, 0], [1, 1], 1)
        if stride == [2, 2]:
            assert_close(out, reference)
        g = torch.randn_like(out)
        gx, gw, gb = torch.ops.lenet_ext.conv2d_backward(g, x, w, stride, [1, 0, 1, 0], [1, 1], 1, [True] * 3)
        assert gx.shape == x.shape and torch.equal(gw, torch.zeros_like(w)) and torch.allclose(gb, g.sum((0, 2, 3)))


# Random configurations (hypothesis) live in tests/test_properties.py.


# ------------------------------------------------------------------- the CUDA direct kernels, on the CPU
# lenet_ext_testing.cuda_conv2d_direct_on_host runs the direct CUDA kernels' work items
# (csrc/cuda/conv2d_items.h) with a host loop in place of the launch, so every machine checks their index
# arithmetic: the forward, the input gradient that skips a stride's structural zeros, and the weight
# gradient's chunks and block sums.
# Strides and dilations with and without common factors (the input gradient's tap period is s / gcd(s, d)),
# asymmetric padding, and channel counts of 1, up to 4 and more than 8 per group (the three run widths).
_DIRECT_EXTRA = [
    Conv2dCase.unnamed((2, 3, 17, 16), (16, 3, 7, 7), stride=2, padding=3),  # a ResNet stem, small
    Conv2dCase.unnamed((2, 12, 9, 10), (12, 1, 3, 3), stride=2, padding=1, groups=12),  # depthwise, strided
    Conv2dCase.unnamed((1, 4, 13, 11), (6, 2, 3, 2), stride=(3, 2), padding=(2, 0), dilation=(2, 3), groups=2),
    Conv2dCase.unnamed((1, 2, 15, 14), (3, 2, 3, 3), stride=(4, 6), dilation=(2, 4)),  # periods 2 and 3
    Conv2dCase.unnamed((2, 9, 6, 7), (19, 9, 2, 2), stride=(2, 3)),  # runs of 8 channels and a remainder
]


def _on_host(op, case, dtype, *flags):
    """A host-emulation operator's (output, grad_input, grad_weight) against torch in float64, on the same
    rounded inputs, with the dtype's tolerance at the result's scale."""
    conf = case.op_args()
    x = torch.randn(case.shape(batched=True), dtype=dtype)
    w = torch.randn(case.weight, dtype=dtype)
    b = torch.randn(case.weight[0], dtype=dtype)
    xr, wr, br = (t.double().requires_grad_() for t in (x, w, b))
    want = torch_conv2d(xr, wr, br, *conf)
    go = torch.randn(want.shape, dtype=torch.float64)
    want_gx, want_gw = torch.autograd.grad(want, (xr, wr), go)
    got = op(x, w, b, go.to(dtype), *conf, *flags)
    for ours, exact in zip(got, (want.detach(), want_gx, want_gw)):
        assert ours.dtype == dtype
        tol = 1e-10 if dtype == torch.float64 else 1e-4 if dtype == torch.float32 else 1.6e-2
        torch.testing.assert_close(ours.double(), exact, rtol=tol, atol=tol * max(exact.abs().max().item(), 1.0))


def _direct_on_host(case, dtype, int64_index=False):
    _on_host(torch.ops.lenet_ext_testing.cuda_conv2d_direct_on_host, case, dtype, int64_index)


_NONEMPTY = [c for c in CONV2D if 0 not in c.shape() and 0 not in c.weight]


@pytest.mark.parametrize("case", _NONEMPTY + _DIRECT_EXTRA, ids=str)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cuda_direct_kernels_on_host(case, dtype):
    _direct_on_host(case, dtype)


@pytest.mark.parametrize("case", _DIRECT_EXTRA + CONV2D.tagged("lenet"), ids=str)
@pytest.mark.parametrize("dtype,int64_index", [(torch.float64, True), (torch.bfloat16, False), (torch.float16, False)])
def test_cuda_direct_kernels_on_host_index_and_half_types(case, dtype, int64_index):
    _direct_on_host(case, dtype, int64_index)


# lenet_ext_testing.cuda_conv2d_gemm_on_host runs the CUDA implicit GEMMs' gathers and stores
# (csrc/cuda/gemm_gather.h) element by element on the CPU: every mode of the verified GEMM, and the input
# gradient in stride phases.
def _gemm_on_host(case, dtype, phased, int64_index=False):
    _on_host(torch.ops.lenet_ext_testing.cuda_conv2d_gemm_on_host, case, dtype, phased, int64_index)


_UNDILATED = [c for c in _NONEMPTY + _DIRECT_EXTRA if tuple(c.op_args()[2]) == (1, 1)]


@pytest.mark.parametrize("case", _NONEMPTY + _DIRECT_EXTRA, ids=str)
def test_cuda_gemm_gathers_on_host(case):
    _gemm_on_host(case, torch.float64, phased=False)


@pytest.mark.parametrize("case", _UNDILATED, ids=str)
@pytest.mark.parametrize("dtype,int64_index", [(torch.float64, False), (torch.float32, True)])
def test_cuda_gemm_phased_input_gradient_on_host(case, dtype, int64_index):
    """Phases cover every input pixel once, including those no tap reaches (stride 3, 2x2 kernel)."""
    _gemm_on_host(case, dtype, phased=True, int64_index=int64_index)


def test_cuda_gemm_phases_skip_structural_zeros():
    # Stride 3 with a 2x2 kernel: input rows with (ih + pad) % 3 == 2 are read by no tap, and their phase
    # has no k at all: its gradient is zero, written by the empty GEMM.
    case = Conv2dCase.unnamed((1, 2, 11, 10), (3, 2, 2, 2), stride=3, padding=1)
    _gemm_on_host(case, torch.float64, phased=True)


def test_inference_calls_skip_the_python_autograd_kernel(monkeypatch):
    """The functional itself (ops.call) takes the branch the operator's Python Autograd kernel would: a call
    that cannot need autograd goes below the Autograd key, and a plain reverse-mode call applies the
    autograd Function and records its graph. The transform test runs once per call either way, never
    again in that kernel."""
    from lenet_ext.ops import autograd

    calls = []
    original = autograd._transforms_or_forward_ad
    monkeypatch.setattr(autograd, "_transforms_or_forward_ad", lambda: calls.append(1) or original())
    x, w = torch.randn(2, 3, 8, 8), torch.randn(4, 3, 3, 3)
    for fn in (lambda: LF.conv2d(x, w), lambda: LF.max_pool2d(x, 2), lambda: LF.avg_pool2d(x, 2)):
        calls.clear()
        out = fn()
        assert len(calls) == 1 and out.grad_fn is None
    calls.clear()
    out = LF.conv2d(x, w.requires_grad_())
    assert len(calls) == 1 and out.grad_fn is not None
    assert_close(out, F.conv2d(x, w))


def test_cuda_conv_algorithm_setting():
    from lenet_ext.backends import cuda_conv_algorithm, current_cuda_conv_algorithm

    assert current_cuda_conv_algorithm() == "auto"
    with cuda_conv_algorithm("direct"):
        assert current_cuda_conv_algorithm() == "direct"
        with cuda_conv_algorithm("gemm"):
            assert current_cuda_conv_algorithm() == "gemm"
        assert current_cuda_conv_algorithm() == "direct"
    assert current_cuda_conv_algorithm() == "auto"
    with pytest.raises(ValueError, match="cuda_conv_algorithm must be one of"):
        cuda_conv_algorithm("winograd")
