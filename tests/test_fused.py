"""conv2d_sigmoid_avgpool2d (LeNet's fused block) against torch's conv2d -> sigmoid -> avg_pool2d."""

import pytest
import torch
import torch.nn.functional as F
from common import assert_close, assert_no_worse_than_torch, clone_leaf, grads, make_input

from lenet_ext import functional as LF
from lenet_ext.backends import cuda_fused_block

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

CONFIGS = [
    ((4, 1, 28, 28), (6, 1, 5, 5), dict(padding=2), 2),  # LeNet's first block
    ((4, 6, 14, 14), (16, 6, 5, 5), {}, 2),  # and its second
    ((2, 3, 11, 9), (5, 3, 3, 2), dict(stride=(1, 2), padding=1), (2, 3)),  # leftover rows and columns
    ((2, 4, 9, 9), (4, 2, 3, 3), dict(groups=2, dilation=2, padding="same"), 3),
    ((0, 3, 8, 8), (4, 3, 3, 3), {}, 2),
]


def reference(x, w, b, kw, pool):
    return F.avg_pool2d(torch.sigmoid(F.conv2d(x, w, b, **kw)), pool)


@pytest.mark.parametrize("cfg", CONFIGS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_unfused_torch(cfg, dtype, device):
    x_shape, w_shape, kw, pool = cfg
    x = make_input(x_shape, dtype, device, "channels_last", requires_grad=True)
    w = make_input(w_shape, dtype, device, requires_grad=True)
    b = make_input((w_shape[0],), dtype, device, requires_grad=True)
    ours_in = [clone_leaf(t) for t in (x, w, b)]
    expected = reference(x, w, b, kw, pool)
    actual = LF.conv2d_sigmoid_avgpool2d(*ours_in, **kw, pool_size=pool)
    assert_close(actual, expected)
    g = torch.randn_like(expected)
    for a, e in zip(grads(actual, ours_in, g), grads(expected, [x, w, b], g)):
        assert_close(a, e)


# The CUDA fused pass (csrc/cuda/fused_items.h) on a GPU, opt-in until this passes there: the id "fused-pass" is
# what scripts/gpu_check.sh counts as its GPU runs.
@gpu
@pytest.mark.parametrize("cfg", CONFIGS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fused-pass-float32", "fused-pass-float64"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_cuda_fused_pass_matches_unfused_torch(cfg, dtype, layout):
    x_shape, w_shape, kw, pool = cfg
    x = make_input(x_shape, dtype, "cuda", layout, requires_grad=True)
    w = make_input(w_shape, dtype, "cuda", requires_grad=True)
    b = make_input((w_shape[0],), dtype, "cuda", requires_grad=True)
    ours_in = [clone_leaf(t) for t in (x, w, b)]
    expected = reference(x, w, b, kw, pool)
    with cuda_fused_block("fused"):
        actual = LF.conv2d_sigmoid_avgpool2d(*ours_in, **kw, pool_size=pool)
        g = torch.randn_like(expected)
        got = grads(actual, ours_in, g)
    assert_close(actual, expected)
    assert actual.is_contiguous(memory_format=torch.channels_last) == (layout == "channels_last" and x.numel() > 0)
    for a, e in zip(got, grads(expected, [x, w, b], g)):
        assert_close(a, e)


# The same pass's work items run on the host (lenet_ext_testing.cuda_fused_on_host), on every machine: values, the
# activation (rows and columns past the last window included) and every gradient against torch.
@pytest.mark.parametrize("cfg", CONFIGS)
@pytest.mark.parametrize(
    "dtype,int64_index",
    [(torch.float64, False), (torch.float32, False), (torch.float64, True), (torch.bfloat16, False)],
)
def test_cuda_fused_items_on_host(cfg, dtype, int64_index):
    x_shape, w_shape, kw, pool = cfg
    x, w, b = torch.randn(x_shape, dtype=dtype), torch.randn(w_shape, dtype=dtype), torch.randn(w_shape[0], dtype=dtype)
    exact = [t.double().requires_grad_() for t in (x, w, b)]
    act = torch.sigmoid(F.conv2d(*exact, **kw))
    out = F.avg_pool2d(act, pool)
    g = torch.randn(out.shape, dtype=torch.float64)
    want = (out, act, *torch.autograd.grad(out, exact, g))
    args = LF._conv_args("conv2d", x, w, b, kw.get("stride", 1), kw.get("padding", 0), kw.get("dilation", 1),
                         kw.get("groups", 1))[3:]  # fmt: skip
    pool2 = list(pool) if isinstance(pool, tuple) else [pool, pool]
    got = torch.ops.lenet_ext_testing.cuda_fused_on_host(x, w, b, g.to(dtype), *args, pool2, int64_index)
    tol = {torch.float64: 1e-10, torch.float32: 1e-4, torch.bfloat16: 2e-2}[dtype]
    for ours, exact_result in zip(got, want):
        assert ours.dtype == dtype and ours.shape == exact_result.shape
        scale = max(exact_result.abs().max().item(), 1.0) if exact_result.numel() else 1.0
        torch.testing.assert_close(ours.double(), exact_result.detach(), rtol=tol, atol=tol * scale)


def test_cuda_fused_block_setting():
    from lenet_ext.backends import current_cuda_fused_block

    assert current_cuda_fused_block() == "auto"
    with cuda_fused_block("fused"):
        assert current_cuda_fused_block() == "fused"
    assert current_cuda_fused_block() == "auto"
    with pytest.raises(ValueError, match="cuda_fused_block must be one of"):
        cuda_fused_block("separate")


def test_bfloat16_forward_and_gradients_against_float64():
    x, w, b = (
        t.bfloat16().requires_grad_() for t in (torch.randn(2, 1, 12, 12), torch.randn(6, 1, 5, 5), torch.randn(6))
    )
    ours_in, exact_in = [clone_leaf(t) for t in (x, w, b)], [clone_leaf(t.double()) for t in (x, w, b)]
    out = LF.conv2d_sigmoid_avgpool2d(*ours_in, padding=2)
    ref, exact = reference(x, w, b, dict(padding=2), 2), reference(*exact_in, dict(padding=2), 2)
    assert out.dtype == torch.bfloat16
    assert_no_worse_than_torch(out, ref, exact)
    g = torch.randn_like(ref)
    for a, e, x64 in zip(grads(out, ours_in, g), grads(ref, [x, w, b], g), grads(exact, exact_in, g.double())):
        assert_no_worse_than_torch(a, e, x64)


def test_gradcheck_and_opcheck():
    x = torch.randn(2, 3, 9, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: LF.conv2d_sigmoid_avgpool2d(x, w, b, pool_size=(2, 3)), (x, w, b))
    conf = ([1, 1], [1, 0, 1, 0], [1, 1], 1, [2, 2])
    torch.library.opcheck(torch.ops.lenet_ext.conv2d_sigmoid_avgpool2d, (x, w, b, *conf))
    out, act = torch.ops.lenet_ext.conv2d_sigmoid_avgpool2d(x, w, b, *conf)
    assert not act.requires_grad
    grad = torch.randn_like(out)
    for mask in ([True, True, True], [False, True, False]):
        # plain tensors: the backward is not itself differentiable (see the next test)
        args = (grad.detach(), x.detach(), w.detach(), act.detach(), *conf, mask)
        torch.library.opcheck(torch.ops.lenet_ext.conv2d_sigmoid_avgpool2d_backward, args)


def test_double_backward_is_refused_clearly():
    x = torch.randn(1, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    (gx,) = torch.autograd.grad(LF.conv2d_sigmoid_avgpool2d(x, w).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward is not supported"):
        gx.sum().backward()


def test_bad_arguments():
    x, w = torch.randn(1, 1, 8, 8), torch.randn(2, 1, 3, 3)
    with pytest.raises(RuntimeError, match="pool_size should be greater than zero"):
        LF.conv2d_sigmoid_avgpool2d(x, w, pool_size=0)
    with pytest.raises(RuntimeError, match="Output size is too small"):
        LF.conv2d_sigmoid_avgpool2d(x, w, pool_size=7)
    with pytest.raises(RuntimeError, match="expected input"):
        LF.conv2d_sigmoid_avgpool2d(x, torch.randn(2, 3, 3, 3))
    with pytest.raises(RuntimeError, match="conv2d_sigmoid_avgpool2d_backward: expected grad_output of size"):
        out, act = torch.ops.lenet_ext.conv2d_sigmoid_avgpool2d(x, w, None, [1, 1], [0] * 4, [1, 1], 1, [2, 2])
        torch.ops.lenet_ext.conv2d_sigmoid_avgpool2d_backward(
            torch.randn(1, 2, 2, 2), x, w, act, [1, 1], [0] * 4, [1, 1], 1, [2, 2], [True] * 3
        )


def test_backward_writes_no_gradient_for_the_activation():
    # The activation is a second, non-differentiable output kept for the backward. autograd would hand
    # the backward a tensor of zeros in its shape (it did: a 256 x 6 x 28 x 28 fill per LeNet step);
    # the operator's Function asks for None instead.
    x = torch.randn(8, 1, 28, 28, requires_grad=True)
    w = torch.randn(6, 1, 5, 5, requires_grad=True)
    out = LF.conv2d_sigmoid_avgpool2d(x, w, padding=2)
    activation_shape = [8, 6, 28, 28]
    with torch.profiler.profile(record_shapes=True) as prof:
        gx, gw = torch.autograd.grad(out.sum(), [x, w])
    fills = [
        e
        for e in prof.events()
        if e.name in ("aten::fill_", "aten::zero_") and e.input_shapes[:1] == [activation_shape]
    ]
    assert not fills, [(e.name, e.input_shapes) for e in fills]
    ref = [t.detach().clone().requires_grad_() for t in (x, w)]
    expected = torch.autograd.grad(reference(ref[0], ref[1], None, dict(padding=2), 2).sum(), ref)
    assert_close(gx, expected[0])
    assert_close(gw, expected[1])
