"""The case tables themselves (tests/cases.py): each case's two forms, the functional keyword arguments and
the raw operator's arguments, describe the same call, so tests of either form test the same thing."""

import pytest
import torch
import torch.nn.functional as F
from cases import AVG_POOL2D, CONV2D, MAX_POOL2D, Conv2dCase, Table, torch_conv2d


@pytest.mark.parametrize("case", [c for c in CONV2D if c.functional], ids=str)
def test_conv2d_operator_form_is_the_functional_call(case):
    x, w = torch.randn(case.input, dtype=torch.float64), torch.randn(case.weight, dtype=torch.float64)
    torch.testing.assert_close(torch_conv2d(x, w, None, *case.op_args()), F.conv2d(x, w, **case.kwargs()))


@pytest.mark.parametrize("case", MAX_POOL2D, ids=str)
def test_max_pool2d_operator_form_is_the_functional_call(case):
    x = torch.randn(case.shape(batched=True), dtype=torch.float64)
    kernel, stride, padding, dilation, ceil_mode = case.op_args()
    op_form = F.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode, return_indices=True)
    assert all(map(torch.equal, op_form, F.max_pool2d(x, **case.kwargs(), return_indices=True)))


@pytest.mark.parametrize("case", AVG_POOL2D, ids=str)
def test_avg_pool2d_operator_form_is_the_functional_call(case):
    x = torch.randn(case.shape(batched=True), dtype=torch.float64)
    assert torch.equal(F.avg_pool2d(x, *case.op_args()), F.avg_pool2d(x, **case.kwargs()))


def test_tables_refuse_what_would_silently_test_less():
    with pytest.raises(ValueError, match="unknown tags"):
        Conv2dCase("typo", (1, 1, 4, 4), (1, 1, 3, 3), tags=("gradchek",))
    with pytest.raises(ValueError, match="two cases have the id"):
        Table(CONV2D["basic"], CONV2D["basic"])
    with pytest.raises(KeyError, match="no case is tagged"):
        MAX_POOL2D.tagged("gemm")
    with pytest.raises(ValueError, match="write padding"):  # a symmetric padding has a functional form
        Conv2dCase("symmetric", (1, 1, 4, 4), (1, 1, 3, 3), padding=(1, 1, 2, 2))
    with pytest.raises(ValueError, match="no torch.nn.functional form"):
        CONV2D["gemm-strided"].kwargs()
    assert CONV2D["depthwise"].tags.count("depthwise") == 1 and "pointwise" in CONV2D["pointwise"].tags
