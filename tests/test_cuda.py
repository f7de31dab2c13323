"""The CUDA kernels: registration (checkable without a GPU), then, on a GPU, agreement with torch and with
our CPU kernels for every operator and gradient, half-precision accuracy, determinism, layouts, empty and
large tensors.

Whether this lenet_ext was built with CUDA: `_C` is an empty module, so we ask the dispatcher. A build
either registers CUDA kernels for every operator or for none; the registration test fails on a partial
set, and requires the full set when LENET_EXT_CUDA=1 (CI's CUDA build) or a GPU is present.
Pooling is tested at the operator level (torch.ops.lenet_ext.*), so these tests need only the operators.
"""

import datetime
import os
import re

import pytest
import torch
import torch.nn.functional as F
from cases import AVG_POOL2D, CONV2D, MAX_POOL2D, torch_conv2d
from common import LAYOUTS, assert_close, make_input, to_layout
from conftest import CUDA_POOL_KERNELS, cuda_pool_kernels

import lenet_ext
import lenet_ext.functional
from lenet_ext.backends import (
    CUDA_CONV_ALGORITHMS,
    cuda_conv_algorithm,
    cuda_fused_block,
    cuda_pool_layout,
    cuda_pool_planar,
    cuda_verified,
)

OPS = sorted(n for n in torch._C._dispatch_get_all_op_names() if n.startswith("lenet_ext::"))
_ops = torch.ops.lenet_ext


def _has_cuda_kernel(name):
    return torch._C._dispatch_has_kernel_for_dispatch_key(name, "CUDA")


def _has_any_device_kernel(name):
    return torch._C._dispatch_has_kernel_for_dispatch_key(name, "CompositeExplicitAutograd")


def _has_cpu_kernel(name):
    return torch._C._dispatch_has_kernel_for_dispatch_key(name, "CPU")


BUILT_WITH_CUDA = any(_has_cuda_kernel(n) for n in OPS)
gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.mark.skipif(torch.version.cuda is None, reason="this torch has no CUDA")
def test_every_operator_has_a_cuda_kernel():
    required = os.environ.get("LENET_EXT_CUDA") == "1" or torch.cuda.is_available()
    if not BUILT_WITH_CUDA and not required:
        pytest.skip("lenet_ext was built without CUDA kernels")
    kernels = {
        "conv2d_forward",
        "conv2d_backward",
        "max_pool2d_forward",
        "max_pool2d_forward_values",
        "max_pool2d_backward",
        "avg_pool2d_forward",
        "avg_pool2d_backward",
    }
    assert {f"lenet_ext::{k}" for k in kernels} <= set(OPS), OPS
    # every operator runs on CUDA: its own kernel, or one written once for every device
    # (CompositeExplicitAutograd: the fused LeNet block, the algorithm setting)
    missing = [n for n in OPS if not (_has_cuda_kernel(n) or _has_any_device_kernel(n))]
    assert not missing, f"no CUDA kernel registered for {missing}"


# ------------------------------------------------------------------------------------ kernel families
# csrc/cuda/families.h: the GPU run each kernel family passed its parity tests in. Every CUDA setting
# defaults to "auto", which takes an opt-in family only once it is listed there. Checkable without a GPU:
# the settings resolve on the host (lenet_ext_testing.cuda_families_in_use).
OPT_IN = {  # family -> (its setting, the choices that name it)
    "conv_gemm_pipelined": (cuda_conv_algorithm, {"gemm"}),
    "conv_phased": (cuda_conv_algorithm, {"gemm", "tensor_cores"}),
    "conv_direct": (cuda_conv_algorithm, {"direct"}),
    "conv_tensor_cores": (cuda_conv_algorithm, {"tensor_cores"}),
    "pool_nhwc": (cuda_pool_layout, {"native"}),
    "pool_runs": (cuda_pool_planar, {"runs"}),
    "fused_pass": (cuda_fused_block, {"fused"}),
}


def test_every_verified_family_names_its_gpu_run():
    table = cuda_verified()
    assert set(OPT_IN) <= set(table)
    # the defaults' own kernels are the ones a GPU run has verified
    for family in ("conv_gemm", "conv_direct_forward", "conv_grad_bias", "pool_planar"):
        assert table[family] is not None, family
    for family, run in table.items():
        if run is not None:
            assert set(run) == {"gpu", "torch", "commit", "date"} and run["gpu"] and run["torch"], family
            assert re.fullmatch(r"[0-9a-f]{7,40}", run["commit"]), run
            assert datetime.date.fromisoformat(run["date"]) <= datetime.date.today()


def test_auto_takes_an_opt_in_family_only_once_it_is_verified():
    def in_use():
        return set(torch.ops.lenet_ext_testing.cuda_families_in_use())

    verified = {family for family, run in cuda_verified().items() if run is not None}
    for setting, _ in OPT_IN.values():
        assert setting.current() == "auto"
    assert in_use() == set(OPT_IN) & verified
    for family, (setting, naming) in OPT_IN.items():
        for choice in setting.CHOICES:
            with setting(choice):
                taken = choice in naming or (choice == "auto" and family in verified)
                assert (family in in_use()) == taken, (family, choice)
    assert in_use() == set(OPT_IN) & verified  # every setting restored


# --------------------------------------------------------------------------------------------- helpers
# TF32 is off for every test (conftest.py): F.conv2d on CUDA is then a full float32 reference.


def _conv(x, w, b, stride, padding4, dilation, groups):
    return _ops.conv2d_forward(x, w, b, stride, padding4, dilation, groups)


def _conv_all(x, w, b, go, conf):
    """Forward and the three gradients from our operators."""
    out = _conv(x, w, b, *conf)
    gx, gw, gb = _ops.conv2d_backward(go, x, w, *conf, [True, True, b is not None])
    return out, gx, gw, gb


def _torch_conv_all(x, w, b, go, conf):
    x, w = x.detach().requires_grad_(), w.detach().requires_grad_()
    b = b.detach().requires_grad_() if b is not None else None
    out = torch_conv2d(x, w, b, *conf)
    got = torch.autograd.grad(out, [t for t in (x, w, b) if t is not None], go)
    return (out.detach(), *got, None) if b is None else (out.detach(), *got)


def _conv_case(case, dtype, device, layout="contiguous", bias=True):
    """Inputs for a cases.CONV2D case, a grad_output, and the operator's arguments."""
    conf = case.op_args()
    x = make_input(case.input, dtype, device, layout)
    w = make_input(case.weight, dtype, device)
    b = torch.randn(case.weight[0], dtype=dtype, device=device) if bias else None
    out = torch_conv2d(x.float(), w.float(), None, *conf)
    go = to_layout(torch.randn(out.shape, dtype=dtype, device=device), layout)
    return x, w, b, go, conf


# ---------------------------------------------------------------------------------------------- conv2d
# Every conv test runs each CUDA conv algorithm (lenet_ext.backends.cuda_conv_algorithm): "auto" is the
# default, "gemm" forces the implicit GEMM everywhere and "direct" the opt-in direct kernels, so a GPU run
# checks every kernel. The ids start with "conv-": scripts/gpu_check.sh counts "conv-direct" tests as the
# direct kernels' GPU runs.
@pytest.fixture(params=CUDA_CONV_ALGORITHMS, ids=[f"conv-{a}" for a in CUDA_CONV_ALGORITHMS])
def conv_kernels(request):
    with cuda_conv_algorithm(request.param):
        yield request.param


@gpu
@pytest.mark.parametrize("case", CONV2D, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_conv2d_matches_torch_and_cpu(case, dtype, conv_kernels):
    x, w, b, go, conf = _conv_case(case, dtype, "cuda")
    ours = _conv_all(x, w, b, go, conf)
    for got, want in zip(ours, _torch_conv_all(x, w, b, go, conf)):
        assert_close(got, want)
    cpu = _conv_all(x.cpu(), w.cpu(), b.cpu(), go.cpu(), conf)
    for got, want in zip(ours, cpu):
        assert_close(got.cpu(), want)


@gpu
@pytest.mark.parametrize("case", [CONV2D[n] for n in ("lenet-conv1", "gemm-3x3", "pointwise", "big-kernel")], ids=str)
def test_conv2d_float32_no_less_accurate_than_torch(case, conv_kernels):
    """Against float64 on the same inputs, our float32 error is at most torch's own float32 error (with TF32
    off) plus a few units in the last place: float32 results are float32-accurate, whatever the algorithm."""
    x, w, b, go, conf = _conv_case(case, torch.float32, "cuda")
    ref = _torch_conv_all(x.double(), w.double(), b.double(), go.double(), conf)
    eps = torch.finfo(torch.float32).eps
    for got, tgot, r in zip(_conv_all(x, w, b, go, conf), _torch_conv_all(x, w, b, go, conf), ref):
        scale = r.abs().max().item()
        ours_err = (got.double() - r).abs().max().item()
        torch_err = (tgot.double() - r).abs().max().item()
        assert ours_err <= 2 * torch_err + 4 * eps * scale, (ours_err, torch_err)


def test_tf32_is_off_in_every_test():
    assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32


@gpu
@pytest.mark.parametrize("layout", LAYOUTS)
def test_conv2d_any_layout(layout, conv_kernels):
    for name in ("lenet-conv2", "gemm-strided"):
        x, w, b, go, conf = _conv_case(CONV2D[name], torch.float32, "cuda", layout)
        for got, want in zip(_conv_all(x, w, b, go, conf), _torch_conv_all(x, w, b, go, conf)):
            assert_close(got, want)


@gpu
@pytest.mark.parametrize(
    "case", [CONV2D[n] for n in ("lenet-conv1", "lenet-conv2", "gemm-3x3", "gemm-groups")], ids=str
)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_conv2d_half_precision_no_worse_than_torch(case, dtype, conv_kernels):
    """Judged against a float64 computation on the same rounded inputs: our error may be at most twice
    torch's own error in that dtype (plus one unit in the last place of the output's scale)."""
    x, w, b, go, conf = _conv_case(case, torch.float32, "cuda")
    xh, wh, bh, goh = (t.to(dtype) for t in (x, w, b, go))
    ref = _torch_conv_all(xh.double(), wh.double(), bh.double(), goh.double(), conf)
    ours = _conv_all(xh, wh, bh, goh, conf)
    theirs = _torch_conv_all(xh, wh, bh, goh, conf)
    eps = torch.finfo(dtype).eps
    for got, tgot, r in zip(ours, theirs, ref):
        assert got.dtype == dtype
        scale = r.abs().max().item()
        ours_err = (got.double() - r).abs().max().item()
        torch_err = (tgot.double() - r).abs().max().item()
        assert ours_err <= 2 * torch_err + eps * scale, (ours_err, torch_err)


@gpu
def test_conv2d_without_bias_and_mask_subsets(conv_kernels):
    x, w, _, go, conf = _conv_case(CONV2D["gemm-3x3"], torch.float32, "cuda", bias=False)
    want = _torch_conv_all(x, w, None, go, conf)
    assert_close(_conv(x, w, None, *conf), want[0])
    for mask in ([True, False, False], [False, True, False], [False, False, True]):
        got = _ops.conv2d_backward(go, x, w, *conf, mask)
        assert [g is not None for g in got] == mask
    gb = _ops.conv2d_backward(go, x, w, *conf, [False, False, True])[2]
    assert_close(gb, go.sum((0, 2, 3)))


@gpu
@pytest.mark.parametrize("case", CONV2D.tagged("gradcheck"), ids=str)
def test_conv2d_gradcheck(case, conv_kernels):
    """float64 gradients (and, through lenet_ext/ops/autograd.py, the backward's own gradients) by finite differences."""
    x, w, b, _, conf = _conv_case(case, torch.float64, "cuda")
    x, w, b = (t.requires_grad_() for t in (x, w, b))
    assert torch.autograd.gradcheck(lambda x, w, b: _conv(x, w, b, *conf), (x, w, b))
    assert torch.autograd.gradgradcheck(lambda x, w, b: _conv(x, w, b, *conf), (x, w, b))


@gpu
def test_conv2d_empty_tensors(conv_kernels):
    conf = ((1, 1), (1, 1, 1, 1), (1, 1), 1)
    x = torch.randn(0, 3, 8, 8, device="cuda")
    w = torch.randn(4, 3, 3, 3, device="cuda")
    b = torch.randn(4, device="cuda")
    out = _conv(x, w, b, *conf)
    assert out.shape == (0, 4, 8, 8)
    gx, gw, gb = _ops.conv2d_backward(out, x, w, *conf, [True, True, True])
    assert gx.shape == x.shape and torch.equal(gw, torch.zeros_like(w)) and torch.equal(gb, torch.zeros_like(b))
    # no input channels: the output is the bias
    x0, w0 = torch.randn(2, 0, 5, 5, device="cuda"), torch.randn(3, 0, 3, 3, device="cuda")
    assert torch.equal(_conv(x0, w0, b[:3], *conf), b[:3].view(1, 3, 1, 1).expand(2, 3, 5, 5))


@gpu
@pytest.mark.parametrize("case", [CONV2D["lenet-conv2"], CONV2D["gemm-3x3"]], ids=str)
def test_conv2d_is_deterministic(case, conv_kernels):
    x, w, b, go, conf = _conv_case(case, torch.float32, "cuda")
    first = _conv_all(x, w, b, go, conf)
    torch.use_deterministic_algorithms(True)
    try:
        second = _conv_all(x, w, b, go, conf)
    finally:
        torch.use_deterministic_algorithms(False)
    for a, c in zip(first, second):
        assert torch.equal(a, c)


@gpu
def test_conv2d_large_index_uses_int64(conv_kernels):
    """More than 2^30 input elements switches the kernels to int64 indices."""
    if torch.cuda.mem_get_info()[0] < 12 * 2**30:
        pytest.skip("needs 12 GiB of free GPU memory")
    x = torch.randn(1, 2, 23200, 23200, device="cuda", dtype=torch.float16)  # 1.08e9 elements
    w = torch.randn(3, 2, 3, 3, device="cuda", dtype=torch.float16)
    conf = ((1, 1), (1, 1, 1, 1), (1, 1), 1)
    ours = _conv(x, w, None, *conf)
    # Check the last rows (far past 2^31 bytes) against torch on a slice with the same receptive field.
    want = F.conv2d(x[:, :, -9:].float(), w.float(), padding=(0, 1))
    torch.testing.assert_close(ours[:, :, -8:-1].float(), want, rtol=1e-2, atol=1e-2)


# --------------------------------------------------------------------------------------------- pooling
def _max_ours(x, go, kernel, stride, padding, dilation, ceil_mode):
    out, idx = _ops.max_pool2d_forward(x, kernel, stride, padding, dilation, ceil_mode)
    values = _ops.max_pool2d_forward_values(x, kernel, stride, padding, dilation, ceil_mode)
    gx = _ops.max_pool2d_backward(go, x, idx, kernel, stride, padding, dilation, ceil_mode)
    return out, idx, values, gx


# torch's own CUDA kernels are the reference, on NCHW copies: its channels_last kernels disagree with its
# NCHW and CPU ones in two places, and ours follow the latter. Its avg_pool2d backward with padding gives
# wrong gradients (pytorch/pytorch#188344, in torch 2.11); its max_pool2d records index 0 instead of the
# first tap for a window of only padding. Layouts are checked separately.
def _max_torch(x, go, kernel, stride, padding, dilation, ceil_mode):
    x, go = x.detach().contiguous().requires_grad_(), go.contiguous()
    out, idx = F.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode=ceil_mode, return_indices=True)
    (gx,) = torch.autograd.grad(out, x, go)
    return out.detach(), idx, out.detach(), gx


def _avg_ours(x, go, kernel, stride, padding, ceil_mode, include_pad, divisor):
    conf = (kernel, stride, padding, ceil_mode, include_pad, divisor)
    return _ops.avg_pool2d_forward(x, *conf), _ops.avg_pool2d_backward(go, x, *conf)


def _avg_torch(x, go, kernel, stride, padding, ceil_mode, include_pad, divisor):
    x, go = x.detach().contiguous().requires_grad_(), go.contiguous()
    out = F.avg_pool2d(x, kernel, stride, padding, ceil_mode, include_pad, divisor)
    (gx,) = torch.autograd.grad(out, x, go)
    return out.detach(), gx


def _pool_case(shape, dtype, layout, out_fn, distinct=True):
    x = make_input(shape, dtype, "cuda", layout, distinct=distinct)
    go = to_layout(torch.randn(out_fn(x.float()).shape, dtype=dtype, device="cuda"), layout)
    return x, go


@pytest.fixture(params=CUDA_POOL_KERNELS)
def pool_kernels(request):
    """Every CUDA pooling kernel family (conftest.CUDA_POOL_KERNELS: planar, native channels_last, runs)."""
    with cuda_pool_kernels(request.param):
        yield request.param


def _assert_layout_kept(results, x):
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        assert all(t.is_contiguous(memory_format=torch.channels_last) for t in results)


@gpu
@pytest.mark.parametrize("case", MAX_POOL2D, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_max_pool2d_matches_torch_and_cpu(case, dtype, layout, pool_kernels):
    channels = 8 if layout == "channels_last" else None  # 8: every vector width of the native kernels
    cfg = case.op_args()
    x, go = _pool_case(case.shape(channels, batched=True), dtype, layout, lambda t: F.max_pool2d(t, **case.kwargs()))
    ours = _max_ours(x, go, *cfg)
    theirs = _max_torch(x, go, *cfg)
    # values and indices are exact; the gradient sums grad_output entries, in an order of our own
    for got, want in zip(ours[:3], theirs[:3]):
        assert torch.equal(got, want)
    assert_close(ours[3], theirs[3])
    _assert_layout_kept(ours, x)
    if _has_cpu_kernel("lenet_ext::max_pool2d_forward") and dtype != torch.float16:
        cpu = _max_ours(x.cpu(), go.cpu(), *cfg)
        for got, want in zip(ours, cpu):
            assert_close(got.cpu(), want) if got.is_floating_point() else torch.testing.assert_close(got.cpu(), want)


@gpu
@pytest.mark.parametrize("case", AVG_POOL2D, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_avg_pool2d_matches_torch_and_cpu(case, dtype, layout, pool_kernels):
    channels = 8 if layout == "channels_last" else None
    cfg = case.op_args()
    shape = case.shape(channels, batched=True)
    x, go = _pool_case(shape, dtype, layout, lambda t: F.avg_pool2d(t, **case.kwargs()), distinct=False)
    ours = _avg_ours(x, go, *cfg)
    for got, want in zip(ours, _avg_torch(x, go, *cfg)):
        assert_close(got, want)
    _assert_layout_kept(ours, x)
    if _has_cpu_kernel("lenet_ext::avg_pool2d_forward") and dtype != torch.float16:
        for got, want in zip(ours, _avg_ours(x.cpu(), go.cpu(), *cfg)):
            assert_close(got.cpu(), want)


@gpu
@pytest.mark.parametrize("layout", LAYOUTS)
def test_pooling_any_layout(layout, pool_kernels):
    case = MAX_POOL2D["k3-s2-ceil"]
    cfg = case.op_args()
    x, go = _pool_case(case.shape(), torch.float32, layout, lambda t: F.max_pool2d(t, **case.kwargs()))
    ours, theirs = _max_ours(x, go, *cfg), _max_torch(x, go, *cfg)
    for got, want in zip(ours[:3], theirs[:3]):
        assert torch.equal(got, want)
    assert_close(ours[3], theirs[3])
    case = AVG_POOL2D["k3-s2-ceil-exclude-pad"]
    acfg = case.op_args()
    x, go = _pool_case(case.shape(), torch.float32, layout, lambda t: F.avg_pool2d(t, **case.kwargs()))
    ours = _avg_ours(x, go, *acfg)
    for got, want in zip(ours, _avg_torch(x, go, *acfg)):
        assert_close(got, want)
    if layout == "channels_last":  # same layout rule as the CPU kernels and the fake kernels
        assert ours[0].is_contiguous(memory_format=torch.channels_last)


@gpu
@pytest.mark.parametrize("channels", [1, 2, 3, 4, 8, 16, 24])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64, torch.uint8, torch.int64])
def test_native_channels_last_every_vector_width(channels, dtype, pool_kernels):
    """Channel counts that pick each vector width, and an input whose storage starts one element in
    (so no vector access is aligned): values, indices and gradients equal the planar kernels' and torch's."""
    base = (torch.randn(2 * channels * 9 * 10 + 1, device="cuda") * 50).to(dtype)
    x = base[1:].view(2, 9, 10, channels).permute(0, 3, 1, 2)  # channels_last, misaligned
    case = MAX_POOL2D["k3-s2-ceil"]
    cfg = case.op_args()
    out, idx = _ops.max_pool2d_forward(x, *cfg)
    want, want_idx = F.max_pool2d(x.contiguous(), **case.kwargs(), return_indices=True)
    assert torch.equal(out, want) and torch.equal(idx, want_idx)
    _assert_layout_kept([out, idx], x)
    if dtype.is_floating_point:
        go = torch.randn_like(out)
        assert_close(_ops.max_pool2d_backward(go, x, idx, *cfg), _max_torch(x, go, *cfg)[3], dtype=dtype)
        acfg = AVG_POOL2D["k3-s2-ceil-exclude-pad"].op_args()
        ours = _avg_ours(x, go, *acfg)
        for got, ref in zip(ours, _avg_torch(x, go, *acfg)):
            assert_close(got, ref, dtype=dtype)
        _assert_layout_kept(ours, x)


@gpu
@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_integer_max_pool2d(dtype, layout, pool_kernels):
    """torch's CPU kernel is the reference (its CUDA one may not take every integer type), on an NCHW copy
    (its channels_last kernel refuses 8-bit planes of more than 127 elements); the minimum of the type fills
    windows of only padding, as -inf does for floats."""
    info = torch.iinfo(dtype)
    for case in MAX_POOL2D:
        x = to_layout(torch.randint(info.min, info.max, case.shape(8, batched=True), dtype=dtype), layout)
        cfg = case.op_args()
        out, idx = _ops.max_pool2d_forward(x.cuda(), *cfg)
        want, want_idx = F.max_pool2d(x.contiguous(), **case.kwargs(), return_indices=True)
        assert torch.equal(out.cpu(), want) and torch.equal(idx.cpu(), want_idx)
        assert torch.equal(_ops.max_pool2d_forward_values(x.cuda(), *cfg).cpu(), want)


@gpu
def test_max_pool2d_nan_and_minus_inf_windows():
    x = torch.full((1, 1, 4, 6), float("-inf"), device="cuda")
    x[0, 0, 0, 2] = float("nan")
    x[0, 0, 1, 3] = float("nan")  # same window as (0, 2): torch keeps the last NaN's index
    x[0, 0, 3, 0] = 1.0
    cfg = ((2, 2), (2, 2), (0, 0), (1, 1), False)
    go = torch.randn(1, 1, 2, 3, device="cuda")
    ours, theirs = _max_ours(x, go, *cfg), _max_torch(x, go, *cfg)
    for got, want in zip(ours, theirs):
        torch.testing.assert_close(got, want, equal_nan=True, rtol=0, atol=0)


@gpu
def test_pooling_3d_input_and_empty_batch():
    # the operators take 4D only, on every device; lenet_ext.functional adds the batch dimension
    x = torch.randn(3, 9, 8, device="cuda")
    with pytest.raises(RuntimeError, match="expected a 4D input"):
        _ops.max_pool2d_forward(x, [2, 2], [2, 2], [0, 0], [1, 1], False)
    out, idx = lenet_ext.functional.max_pool2d(x, 2, return_indices=True)
    want, want_idx = F.max_pool2d(x, 2, return_indices=True)
    assert torch.equal(out, want) and torch.equal(idx, want_idx)
    e = torch.randn(0, 3, 8, 8, device="cuda")
    out, idx = _ops.max_pool2d_forward(e, [2, 2], [2, 2], [0, 0], [1, 1], False)
    assert out.shape == (0, 3, 4, 4) and idx.shape == (0, 3, 4, 4)
    assert _ops.max_pool2d_backward(out, e, idx, [2, 2], [2, 2], [0, 0], [1, 1], False).shape == e.shape
    assert _ops.avg_pool2d_forward(e, [2, 2], [2, 2], [0, 0], False, True, None).shape == (0, 3, 4, 4)
    assert _ops.avg_pool2d_backward(out, e, [2, 2], [2, 2], [0, 0], False, True, None).shape == e.shape


@gpu
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_pooling_backward_is_deterministic(layout, pool_kernels):
    cfg = ((3, 3), (1, 1), (1, 1), (1, 1), False)  # overlapping windows: several outputs per input
    x = torch.randn(4, 8, 32, 32, device="cuda")
    x[:, :, ::3, ::3] = 5.0  # ties: one input is the maximum of many windows
    x = to_layout(x, layout)
    go = to_layout(torch.randn(4, 8, 32, 32, device="cuda"), layout)
    torch.use_deterministic_algorithms(True)
    try:
        runs = [_max_ours(x, go, *cfg)[3] for _ in range(2)]
        avg = [_avg_ours(x, go, (3, 3), (1, 1), (1, 1), False, True, None)[1] for _ in range(2)]
    finally:
        torch.use_deterministic_algorithms(False)
    assert torch.equal(runs[0], runs[1]) and torch.equal(avg[0], avg[1])
    assert_close(runs[0], _max_torch(x, go, *cfg)[3])


@gpu
def test_pooling_large_index_uses_int64():
    """More than 2^31 elements: indices and offsets past int32 must be right."""
    if torch.cuda.mem_get_info()[0] < 24 * 2**30:
        pytest.skip("needs 24 GiB of free GPU memory")
    x = torch.randn(1, 2, 32768, 32800, device="cuda", dtype=torch.float16)  # 2.15e9 elements
    out, idx = _ops.max_pool2d_forward(x, [2, 2], [2, 2], [0, 0], [1, 1], False)
    tail = x[:, :, -4:]  # the last rows, whose flat indices exceed 2^30 within the plane
    want, want_idx = F.max_pool2d(tail, 2, return_indices=True)
    assert torch.equal(out[:, :, -2:], want)
    assert torch.equal(idx[:, :, -2:], want_idx + (32768 - 4) * 32800)
    avg = _ops.avg_pool2d_forward(x, [2, 2], [2, 2], [0, 0], False, True, None)
    assert_close(avg[:, :, -2:], F.avg_pool2d(tail, 2))


# ------------------------------------------------------------------------------------------- errors
@gpu
def test_cuda_rejects_mixed_devices_and_bad_dtypes():
    x = torch.randn(1, 1, 8, 8, device="cuda")
    with pytest.raises(RuntimeError, match="same device"):
        _conv(x, torch.randn(1, 1, 3, 3), None, (1, 1), (0, 0, 0, 0), (1, 1), 1)
    with pytest.raises(NotImplementedError, match="not implemented for 'Bool'"):
        _ops.max_pool2d_forward(x.bool(), [2, 2], [2, 2], [0, 0], [1, 1], False)
    with pytest.raises(NotImplementedError, match="not implemented for 'Int'"):
        _ops.avg_pool2d_forward(x.int(), [2, 2], [2, 2], [0, 0], False, True, None)
