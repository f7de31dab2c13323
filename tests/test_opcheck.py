"""torch.library.opcheck over every lenet_ext operator on one sample grid (the cases tagged "opcheck" in
tests/cases.py, in each dtype and layout, with every gradient mask and with and without a bias; the
pooling operators on every device), and torch.compile(fullgraph=True) of LeNet and of a small
ResNet-style model with a dynamic batch size, against eager, forward and backward.

The compile tests use backend="aot_eager": it traces through our fake kernels and autograd
registrations exactly as inductor does, without inductor's C++ compile, which takes minutes on a
2-core CI machine. test_pool2d.py compiles the pooling layers with inductor itself.
"""

import pytest
import torch
from cases import AVG_POOL2D, CONV2D, MAX_POOL2D
from common import assert_close, make_input

import lenet_ext
from lenet_ext.models import LeNet, ModernLeNet, builtin_twin

ops = torch.ops.lenet_ext
DTYPES = [torch.float32, torch.float64]


# every gradient mask the backward takes; a sample without a bias asks for no bias gradient
MASKS = [[True, True, True], [True, False, False], [False, True, False], [False, False, True], [False, True, True]]
# five dtype and layout samples per case (sliced in float32 only), so that each case meets every mask
SAMPLES = [(torch.float32, layout) for layout in ("contiguous", "channels_last", "sliced")] + [
    (torch.float64, layout) for layout in ("contiguous", "channels_last")
]


def _conv_grid():
    """Each opcheck case in each sample, with a mask and a bias or none taken in turn: every case meets every
    mask (less the bias gradient where there is no bias) and both bias choices."""
    for c, case in enumerate(CONV2D.tagged("opcheck")):
        for j, (dtype, layout) in enumerate(SAMPLES):
            bias, mask = (c + j) % 2 == 0, MASKS[(c + j) % len(MASKS)]
            if not bias:
                mask = [mask[0], mask[1] or not mask[0], False]
            grads = "".join(name for name, wanted in zip("xwb", mask) if wanted)
            name = f"{case}-{str(dtype).removeprefix('torch.')}-{layout}-{'bias' if bias else 'no-bias'}-grad-{grads}"
            yield pytest.param(case, dtype, layout, bias, mask, id=name)


@pytest.mark.parametrize("case,dtype,layout,bias,mask", _conv_grid())
def test_conv2d_ops(case, dtype, layout, bias, mask):
    x = make_input(case.input, dtype, "cpu", layout, requires_grad=True)
    w = make_input(case.weight, dtype, "cpu", requires_grad=True)
    b = torch.randn(case.weight[0], dtype=dtype, requires_grad=True) if bias else None
    conf = case.op_args()
    torch.library.opcheck(ops.conv2d_forward, (x, w, b, *conf))
    grad = torch.randn(ops.conv2d_forward(x, w, b, *conf).shape, dtype=x.dtype)
    torch.library.opcheck(ops.conv2d_backward, (grad.requires_grad_(), x, w, *conf, mask))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_pool_ops(dtype, layout, pool_device):
    """On every device (on CUDA, with each kernel family for channels_last inputs: see conftest.py)."""
    for case in MAX_POOL2D.tagged("opcheck"):
        x = make_input(case.shape(batched=True), dtype, pool_device, layout, requires_grad=True, distinct=True)
        conf = case.op_args()
        out, idx = ops.max_pool2d_forward(x.detach(), *conf)
        torch.library.opcheck(ops.max_pool2d_forward, (x, *conf))
        torch.library.opcheck(ops.max_pool2d_forward_values, (x, *conf))
        grad = torch.randn_like(out).requires_grad_()
        torch.library.opcheck(ops.max_pool2d_backward, (grad, x.detach(), idx, *conf))
    for case in AVG_POOL2D.tagged("opcheck"):
        x = make_input(case.shape(batched=True), dtype, pool_device, layout, requires_grad=True)
        conf = case.op_args()
        out = ops.avg_pool2d_forward(x.detach(), *conf)
        torch.library.opcheck(ops.avg_pool2d_forward, (x, *conf))
        torch.library.opcheck(ops.avg_pool2d_backward, (torch.randn_like(out).requires_grad_(), x.detach(), *conf))


@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_ops(dtype):
    x = make_input((2, 3, 9, 8), dtype, "cpu", "channels_last", requires_grad=True)
    w = torch.randn(4, 3, 3, 3, dtype=dtype, requires_grad=True)
    conf = ([1, 1], [1, 0, 1, 0], [1, 1], 1, [2, 3])
    torch.library.opcheck(ops.conv2d_sigmoid_avgpool2d, (x, w, None, *conf))
    out, act = ops.conv2d_sigmoid_avgpool2d(x.detach(), w.detach(), None, *conf)
    args = (torch.randn_like(out), x.detach(), w.detach(), act, *conf, [True, True, False])
    torch.library.opcheck(ops.conv2d_sigmoid_avgpool2d_backward, args)


# torch.ops.lenet_ext holds the public operators (opchecked above) and the private settings and queries the
# package itself needs (lenet_ext.backends, the fake kernels); the test-only operators live apart, under
# torch.ops.lenet_ext_testing (csrc/testing/ops.cpp). A new schema in csrc/ops.cpp must be named here, and,
# if it takes tensors, get samples above.
PUBLIC_OPERATORS = {
    "conv2d_forward", "conv2d_backward", "max_pool2d_forward", "max_pool2d_forward_values",
    "max_pool2d_backward", "avg_pool2d_forward", "avg_pool2d_backward", "conv2d_sigmoid_avgpool2d",
    "conv2d_sigmoid_avgpool2d_backward",
}  # fmt: skip
PRIVATE_SETTINGS = {  # no tensors: nothing to opcheck
    "_set_conv_algorithm", "_set_conv_benchmark", "_set_cpu_isa", "_cpu_isa_supported",
    "_set_cuda_conv_algorithm", "_set_cuda_pool_layout", "_set_cuda_pool_planar", "_set_cuda_fused_block",
    "_cuda_families", "_accepts_dtype", "_set_pool_algorithm", "_set_huge_pages",
}  # fmt: skip
TESTING_OPERATORS = {  # CPU-only test hooks (test_shape_math, test_cuda, test_pool2d, test_conv2d, test_fused)
    "window_output_size", "valid_outputs", "cuda_families_in_use", "cuda_pool2d_on_host",
    "cuda_conv2d_direct_on_host", "cuda_conv2d_gemm_on_host", "cuda_fused_on_host",
}  # fmt: skip


def _registered(namespace):
    prefix = namespace + "::"
    return {n[len(prefix) :] for n in torch._C._dispatch_get_all_op_names() if n.startswith(prefix)}


def test_every_operator_is_covered():
    assert _registered("lenet_ext") == PUBLIC_OPERATORS | PRIVATE_SETTINGS


def test_test_only_operators_live_apart():
    assert _registered("lenet_ext_testing") == TESTING_OPERATORS
    for name in TESTING_OPERATORS:
        assert not hasattr(torch.ops.lenet_ext, name) and not hasattr(torch.ops.lenet_ext, "_" + name)


# --------------------------------------------------------------------------------------- torch.compile
class Block(torch.nn.Module):
    """A ResNet basic block: two 3x3 convs, a strided 1x1 projection when the shape changes."""

    def __init__(self, nn, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.proj = nn.Conv2d(cin, cout, 1, stride) if (stride != 1 or cin != cout) else None

    def forward(self, x):
        y = self.conv2(torch.relu(self.conv1(x)))
        return torch.relu(y + (self.proj(x) if self.proj is not None else x))


def resnet(nn):
    return torch.nn.Sequential(
        nn.Conv2d(3, 8, 5, 2, 2),  # strided stem
        torch.nn.ReLU(),
        nn.MaxPool2d(3, 2, 1),
        Block(nn, 8, 8, 1),
        Block(nn, 8, 16, 2),
        nn.Conv2d(16, 16, 3, groups=4, padding="same"),
        nn.AvgPool2d(2, ceil_mode=True, count_include_pad=False),
        torch.nn.Flatten(),
        torch.nn.Linear(16 * 2 * 2, 10),
    )


def _check_compiled(model, reference, shapes):
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, dynamic=True, backend="aot_eager")
    for shape in shapes:  # several batch sizes through one dynamic graph
        x = torch.randn(shape, requires_grad=True)
        xr = x.detach().clone().requires_grad_()
        out, ref = compiled(x), reference(xr)
        assert_close(out, ref)
        g = torch.randn_like(ref)
        out.backward(g)
        ref.backward(g)
        assert_close(x.grad, xr.grad)
        for p, pr in zip(model.parameters(), reference.parameters()):
            assert_close(p.grad, pr.grad)
            p.grad = pr.grad = None


def test_compile_resnet_dynamic_batch():
    torch.manual_seed(0)
    ours = resnet(lenet_ext.nn)
    theirs = resnet(torch.nn)
    theirs.load_state_dict(ours.state_dict())
    _check_compiled(ours, theirs, [(3, 3, 28, 28), (5, 3, 28, 28), (1, 3, 28, 28)])


@pytest.mark.parametrize("cls", [LeNet, ModernLeNet])
def test_compile_lenet_dynamic_batch(cls):
    torch.manual_seed(0)
    model = cls()
    _check_compiled(model, builtin_twin(model), [(4, 1, 28, 28), (7, 1, 28, 28)])
