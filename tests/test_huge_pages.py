"""lenet_ext.backends.huge_pages: fresh CPU result buffers advised as transparent huge pages
(csrc/cpu/memory.h). The advice must reach the kernel's page tables (the VMA holding a large result carries
the "hg" flag, MADV_HUGEPAGE's mark, in /proc/self/smaps), and change no value."""

import os

import pytest
import torch
import torch.nn.functional as TF

import lenet_ext
import lenet_ext.functional as LF
from common import assert_close

ops = torch.ops.lenet_ext
THP_SIZE = "/sys/kernel/mm/transparent_hugepage/hpage_pmd_size"
needs_thp = pytest.mark.skipif(not os.path.exists(THP_SIZE), reason="no transparent huge pages on this system")


def huge_page_bytes():
    with open(THP_SIZE) as f:
        return int(f.read())


def vm_flags(address):
    """The VmFlags of the mapping of this process that holds `address`."""
    inside = False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()[0]
            if "-" in head and ":" not in head:
                lo, hi = (int(v, 16) for v in head.split("-"))
                inside = lo <= address < hi
            elif inside and line.startswith("VmFlags:"):
                return line.split()[1:]
    raise AssertionError(f"no mapping holds {address:#x}")


def first_whole_huge_page(t):
    """The address of the first huge page wholly inside t's bytes (None if there is none)."""
    huge = huge_page_bytes()
    lo = -(-t.data_ptr() // huge) * huge
    return lo if lo + huge <= t.data_ptr() + t.numel() * t.element_size() else None


def test_setting():
    assert lenet_ext.backends.current_huge_pages() == "on"
    with lenet_ext.backends.huge_pages("off"):
        assert lenet_ext.backends.current_huge_pages() == "off"
        assert ops._set_huge_pages(-1) == 1
    assert lenet_ext.backends.current_huge_pages() == "on"
    with pytest.raises(ValueError, match="huge_pages must be one of"):
        lenet_ext.backends.huge_pages("always")
    with pytest.raises(RuntimeError, match="expected -1 \\(read\\) or 0 to 1"):
        ops._set_huge_pages(2)


# Each pass allocates a result far larger than two huge pages: a 16 x 64 x 64 x 64 float map is 16 MiB.
PASSES = {
    "max_pool2d": lambda x: LF.max_pool2d(x, 3, 1, 1, return_indices=True)[1],
    "avg_pool2d": lambda x: LF.avg_pool2d(x, 3, 1, 1),
    "conv2d": lambda x: LF.conv2d(x, torch.randn(16, 64, 1, 1)),
}


@needs_thp
@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="no /proc/self/smaps")
@pytest.mark.parametrize("name", PASSES)
def test_large_results_are_advised(name):
    x = torch.randn(16, 64, 64, 64)
    out = PASSES[name](x)
    page = first_whole_huge_page(out)
    assert page is not None
    assert "hg" in vm_flags(page)


@pytest.mark.parametrize("choice", ["on", "off"])
def test_values_do_not_depend_on_the_setting(choice):
    x = torch.randn(8, 64, 48, 48, requires_grad=True)
    with lenet_ext.backends.huge_pages(choice):
        y, i = LF.max_pool2d(x, 3, 1, 1, return_indices=True)
        a = LF.avg_pool2d(x, 3, 1, 1)
        (gy,) = torch.autograd.grad((y.sum() + a.square().sum()), x)
    ty, ti = TF.max_pool2d(x, 3, 1, 1, return_indices=True)
    ta = TF.avg_pool2d(x, 3, 1, 1)
    (tg,) = torch.autograd.grad((ty.sum() + ta.square().sum()), x)
    assert_close(y, ty)
    assert torch.equal(i, ti)
    assert_close(a, ta)
    assert_close(gy, tg)
