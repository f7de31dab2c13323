"""The CPU tile kernels at every instruction-set level this machine runs, and the level switches.

Each level (default, avx2, avx512) is its own compiled copy of csrc/cpu/tiles.h with its own tile shapes,
so each one is checked against torch on its own: every conv2d configuration, each algorithm, both dtypes.
A machine with AVX-512 runs the AVX2 and baseline code too, which is how a wheel built here is checked
for CPUs of a lower level.
"""

import os
import platform
import re
import shutil
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from cases import CONV2D, Conv2dCase
from common import assert_close, check_conv2d

import lenet_ext
from lenet_ext import backends
from lenet_ext.models import LeNet, ModernLeNet, builtin_twin

LEVELS = backends.available_cpu_isas()


@pytest.fixture(params=LEVELS)
def level(request):
    with backends.cpu_isa(request.param):
        yield request.param


@pytest.mark.parametrize("algorithm", ["auto", "direct", "im2col", "winograd"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", CONV2D, ids=str)
def test_conv2d_at_each_level(case, dtype, algorithm, level):
    with backends.conv_algorithm(algorithm):
        check_conv2d(case, dtype)


# Shapes whose tiles differ between levels: channel counts around each level's channel blocks (1, 2,
# 3 and 5 to 17 output channels), planes that end in a partial tile, wide strided rows, deep kernels.
LEVEL_SHAPES = [
    Conv2dCase.unnamed((2, 3, 17, 19), (1, 3, 3, 3), padding=1),
    Conv2dCase.unnamed((2, 4, 13, 11), (2, 4, 3, 3), padding=1),
    Conv2dCase.unnamed((2, 6, 9, 9), (6, 2, 3, 3), groups=3, padding=1),
    Conv2dCase.unnamed((2, 5, 15, 9), (5, 5, 3, 3)),
    Conv2dCase.unnamed((1, 7, 12, 33), (17, 7, 3, 3), padding=(1, 2)),
    Conv2dCase.unnamed((2, 3, 20, 41), (12, 3, 5, 5), stride=2, padding=2),
    Conv2dCase.unnamed((2, 5, 19, 30), (20, 5, 3, 3), stride=(2, 3), padding=1, dilation=2),
    Conv2dCase.unnamed((2, 40, 8, 8), (9, 40, 3, 3), padding=1),
]


@pytest.mark.parametrize("algorithm", ["direct", "im2col"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("case", LEVEL_SHAPES, ids=str)
def test_tile_shapes_at_each_level(case, layout, algorithm, level):
    with backends.conv_algorithm(algorithm):
        check_conv2d(case, torch.float32, layout=layout)


# The shapes that auto gives Winograd on levels with 16 vector registers (32-256 channels, 3x3, stride 1,
# planes of 14 x 14 or more), forward and input gradient, at every level: on the others they take the tiles.
@pytest.mark.parametrize(
    "case",
    [
        Conv2dCase.unnamed((2, 32, 16, 15), (32, 32, 3, 3), padding=1),
        Conv2dCase.unnamed((1, 64, 14, 17), (40, 64, 3, 3), padding=(0, 1)),
    ],
    ids=str,
)
def test_winograd_shapes_at_each_level(case, level):
    check_conv2d(case, torch.float32)


# Strided layers of many output channels: channel tiles of 16, 32 or 64 channels (as wide as the level's
# registers allow), images taller than one band of rows, stride 2 (a compiled-in stride) and others.
WIDE_STRIDED_SHAPES = [
    Conv2dCase.unnamed((2, 3, 61, 43), (64, 3, 7, 7), stride=2, padding=3),
    Conv2dCase.unnamed((1, 8, 30, 30), (96, 8, 3, 3), stride=2, padding=1),
    Conv2dCase.unnamed((2, 4, 21, 23), (40, 2, 3, 3), stride=2, groups=2),
    Conv2dCase.unnamed((1, 6, 33, 35), (130, 6, 3, 3), stride=(2, 1), padding=1),
    Conv2dCase.unnamed((1, 5, 70, 9), (128, 5, 3, 3), stride=3, padding=(0, 1)),
]


# Strided layers of 1 to 3 output channels per group (depthwise among them): pixel tiles over the input's
# stride phases, with dilation, uneven strides and padding, and planes that end in a partial tile.
STRIDE_PHASE_SHAPES = [
    Conv2dCase.unnamed((2, 8, 23, 21), (8, 1, 3, 3), stride=2, padding=1, groups=8),
    Conv2dCase.unnamed((1, 6, 30, 31), (6, 1, 5, 5), stride=(3, 2), padding=(2, 1), groups=6),
    Conv2dCase.unnamed((2, 4, 19, 25), (2, 4, 3, 3), stride=(2, 3), dilation=2, padding=(1, 2)),
    Conv2dCase.unnamed((1, 3, 40, 37), (3, 1, 7, 7), stride=2, padding=3, groups=3),
    Conv2dCase.unnamed((2, 2, 9, 8), (1, 2, 2, 3), stride=(1, 2)),
    Conv2dCase.unnamed((1, 2, 6, 7), (2, 1, 3, 3), stride=(2**62, 2), padding=1, groups=2),  # one output row
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", STRIDE_PHASE_SHAPES, ids=str)
def test_strided_pixel_tiles_at_each_level(case, dtype, level):
    with backends.conv_algorithm("direct"):
        check_conv2d(case, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", WIDE_STRIDED_SHAPES, ids=str)
def test_wide_strided_channel_tiles_at_each_level(case, dtype, level):
    with backends.conv_algorithm("direct"):
        check_conv2d(case, dtype)


@pytest.mark.parametrize("model_class", [LeNet, ModernLeNet])
def test_lenet_training_step_at_each_level(model_class, level):
    """The whole network, fused LeNet block included, against its torch.nn twin: loss and every
    parameter's gradient."""
    torch.manual_seed(0)
    ours = model_class().double()
    twin = builtin_twin(ours)
    x = torch.randn(8, 1, 28, 28, dtype=torch.float64)
    y = torch.randint(0, 10, (8,))
    losses = [F.cross_entropy(m(x), y) for m in (ours, twin)]
    for loss in losses:
        loss.backward()
    assert_close(losses[0], losses[1])
    for (name, p), q in zip(ours.named_parameters(), twin.parameters()):
        assert_close(p.grad, q.grad, msg=name)


def test_autotune_picks_a_correct_kernel(level):
    before = backends.autotune
    backends.autotune = True
    try:
        assert backends.autotune is True
        for case in [*CONV2D, *LEVEL_SHAPES]:
            for _ in range(2):  # the first call times the candidates, the second uses the cached choice
                check_conv2d(case, torch.float32)
    finally:
        backends.autotune = before
    assert backends.autotune is before


def test_the_old_name_of_autotune_is_refused_naming_the_new_one():
    for use in (lambda: backends.benchmark, lambda: setattr(backends, "benchmark", True)):
        with pytest.raises(AttributeError, match=r"lenet_ext\.backends\.autotune"):
            use()


def test_level_setting_round_trips():
    now = backends.cpu_isa()
    assert now == (os.environ.get("LENET_EXT_CPU_ISA") or LEVELS[-1])
    assert "default" in LEVELS
    for name in LEVELS:
        with backends.cpu_isa(name) as chosen:
            assert chosen == name and backends.cpu_isa() == name
        assert backends.cpu_isa() == now
    with pytest.raises(ValueError, match="cpu_isa must be one of"):
        backends.cpu_isa("sse9")
    missing = [name for name in backends.CPU_ISAS if name not in LEVELS]
    for name in missing:
        with pytest.raises(RuntimeError, match=f"does not support the '{name}' instruction-set level"):
            backends.cpu_isa(name)
        with pytest.raises(RuntimeError, match="does not support"):
            torch.ops.lenet_ext._set_cpu_isa(backends.CPU_ISAS.index(name))
    with pytest.raises(RuntimeError, match="unknown CPU instruction-set level"):
        torch.ops.lenet_ext._set_cpu_isa(7)


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            return set(re.search(r"^flags\s*:(.*)$", f.read(), re.M).group(1).split())
    except (OSError, AttributeError):
        return None


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64") or _cpu_flags() is None, reason="x86-64 Linux")
def test_detected_levels_match_the_cpu_flags():
    flags = _cpu_flags()
    assert ("avx2" in LEVELS) == ({"avx2", "fma"} <= flags)
    assert ("avx512" in LEVELS) == ({"avx2", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl"} <= flags)


def _python(code, **env):
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **env}, timeout=120
    )


@pytest.mark.parametrize("name", LEVELS)
def test_environment_variable_forces_a_level(name):
    run = _python("import lenet_ext; print(lenet_ext.backends.cpu_isa())", LENET_EXT_CPU_ISA=name)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == name


def test_environment_variable_errors_are_clear():
    run = _python("import lenet_ext", LENET_EXT_CPU_ISA="avx1024")
    assert run.returncode != 0 and "LENET_EXT_CPU_ISA must be one of default, avx2, avx512" in run.stderr
    for name in (n for n in backends.CPU_ISAS if n not in LEVELS):
        run = _python("import lenet_ext", LENET_EXT_CPU_ISA=name)
        assert run.returncode != 0 and f"does not support the '{name}' instruction-set level" in run.stderr


@pytest.mark.skipif(
    platform.machine() != "x86_64" or shutil.which("objdump") is None or os.environ.get("LENET_EXT_NATIVE") == "1",
    reason="needs objdump and a default (portable) x86-64 build",
)
def test_wider_instructions_only_in_their_levels_code():
    """A default build must run on any x86-64 CPU: AVX registers (ymm) may appear only in the avx2 and
    avx512 copies of the tile kernels, and AVX-512's zmm only in the avx512 copy. Anything else would
    stop a CPU without them with an illegal instruction, wherever the dispatcher points."""
    library = lenet_ext._C.__file__
    listing = subprocess.run(
        ["objdump", "-d", "-C", "--no-show-raw-insn", library], capture_output=True, text=True, check=True
    ).stdout
    function, offenders = None, set()
    for line in listing.splitlines():
        header = re.match(r"^[0-9a-f]+ <(.*)>:$", line)
        if header:
            function = header.group(1)
        elif "%zmm" in line and "::isa_avx512::" not in function:
            offenders.add(("zmm", function))
        elif "%ymm" in line and "::isa_avx2::" not in function and "::isa_avx512::" not in function:
            offenders.add(("ymm", function))
    assert "::isa_avx2::" in listing and "::isa_avx512::" in listing
    assert not offenders, sorted(offenders)[:10]
