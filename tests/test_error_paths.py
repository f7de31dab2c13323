"""A C++ argument error from our operators reaches Python as an exception in any process state.

On a GPU machine (torch 2.11, Python 3.12, AVX-512, the suite under pytest-xdist) every worker died of a
segmentation fault at the first argument check that threw in our C++ code, even a fresh worker. Those
tests pass here; these re-run them in child processes under the conditions of that run that this
machine can recreate, so a crash fails one test with the child's fatal-error dump instead of ending the
run: a fresh process; one where torch.compile (inductor, with its compile workers) and our OpenMP
kernels have run; one where torch captures and symbolizes the C++ stack of each error with its own
unwinder over our frames (TORCH_SHOW_CPP_STACKTRACES=1); two xdist workers, where xdist is installed.
And the process holds one OpenMP runtime, torch's, whatever its file is called: never a second one
brought in by our library.
"""

import importlib.util
import os
import shutil
import subprocess
import sys

import pytest
import torch

import lenet_ext
import lenet_ext.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# every test whose C++ throw crashed a worker there
ERROR_TESTS = [
    "tests/test_shape_math.py::test_rejects_sizes_past_the_limit",
    "tests/test_shape_math.py::test_rejects_non_positive_arguments",
    "tests/test_conv2d.py::test_operator_rejects_bad_arguments_directly",
    "tests/test_pool2d.py::test_operators_check_their_arguments",
    "tests/test_fused.py::test_bad_arguments",
]
# run first in the same process: inductor's compile workers and our OpenMP team are alive afterwards
WARM_UP = [
    "tests/test_pool2d.py::test_torch_compile_fullgraph[cpu]",
    "tests/test_conv2d.py::test_torch_compile_fullgraph",
]
CONDITIONS = {
    "fresh process": ([], {}),
    "after torch.compile and our parallel kernels": (WARM_UP, {}),
    "torch's own C++ stack capture": ([], {"TORCH_SHOW_CPP_STACKTRACES": "1"}),
    "two pytest-xdist workers": (["-n", "2"], {}),
}
HAS_XDIST = importlib.util.find_spec("xdist") is not None
OPENMP_RUNTIMES = ("libgomp", "libiomp", "libomp")


@pytest.mark.parametrize("condition", list(CONDITIONS))
def test_errors_raise_in_the_conditions_of_the_crashing_run(condition):
    before, env = CONDITIONS[condition]
    if "-n" in before and not HAS_XDIST:
        pytest.skip("pytest-xdist is not installed")
    cmd = [sys.executable, "-X", "faulthandler", "-m", "pytest", "-q", "-p", "no:cacheprovider", *before, *ERROR_TESTS]
    proc = subprocess.run(
        cmd, cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=900, check=False
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"exit {proc.returncode} ({condition}):\n{output[-6000:]}"
    assert "Fatal Python error" not in output


def openmp_runtime(path):
    name = os.path.basename(path)
    return name.startswith(OPENMP_RUNTIMES) and ".so" in name


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_the_process_holds_one_openmp_runtime():
    x = torch.randn(8, 4, 16, 16)
    F.conv2d(x, torch.randn(4, 4, 3, 3))  # our parallel kernel and torch's have both started their teams
    torch.nn.functional.conv2d(x, torch.randn(4, 4, 3, 3))
    with open("/proc/self/maps") as f:
        mapped = {line.split()[-1] for line in f if len(line.split()) >= 6}
    runtimes = {os.path.realpath(p) for p in mapped if openmp_runtime(p)}
    assert len(runtimes) <= 1, f"more than one OpenMP runtime in one process: {sorted(runtimes)}"


@pytest.mark.skipif(shutil.which("readelf") is None, reason="needs binutils' readelf")
def test_the_extension_brings_no_openmp_runtime_of_its_own():
    # its GOMP_* calls resolve to the runtime libtorch_cpu loaded (see setup.py)
    library = lenet_ext._C.__file__
    dynamic = subprocess.run(["readelf", "-d", library], capture_output=True, text=True, check=True).stdout
    needed = [line.split("[")[1].rstrip("]") for line in dynamic.splitlines() if "(NEEDED)" in line]
    assert needed, dynamic
    assert not [n for n in needed if openmp_runtime(n)], needed
