"""Settings of the kernels: CPU conv2d and pooling algorithms, CPU instruction-set level, autotuning, CUDA
conv2d algorithm, CUDA pooling layout.

    lenet_ext.backends.conv_algorithm("direct")   # force one algorithm (or "im2col", "winograd", "reference")
    with lenet_ext.backends.conv_algorithm("im2col"):
        ...                                       # or only inside a block
    with lenet_ext.backends.pool_algorithm("reference"):
        ...                                       # CPU pooling by the reference loops

    lenet_ext.backends.cpu_isa()                  # the level in use: "default", "avx2" or "avx512"
    with lenet_ext.backends.cpu_isa("avx2"):      # force a level this CPU supports
        ...
    lenet_ext.backends.available_cpu_isas()       # the levels this CPU supports

    lenet_ext.backends.autotune = True            # time the candidates of each new shape once
    lenet_ext.backends.huge_pages("off")          # fresh CPU results in 4 KiB pages (default "on")

``conv_algorithm``: ``"auto"`` (the default) uses the heuristics documented in ``csrc/cpu/conv2d.cpp``:
direct register-tiled kernels up to 1152 taps per output, except for strided 1x1 convolutions and, on
levels with 16 vector registers, strided ones of more than 64 channels per group (strided ones with 1 to
3 channels per group run over the input's stride phases); im2col + matrix product for the rest (and for
the weight gradient of 1x1 convolutions). The choice knows the instruction-set
level. ``"direct"`` forces the direct kernels, ``"im2col"`` the matrix product, ``"winograd"`` Winograd's
F(2x2, 3x3) for 3x3 stride-1 undilated convolutions of 8 or more channels per group (2.25 times fewer
multiplications, spent in ATen's batched matrix product), forward and input gradient; the heuristic for
every other pass and shape. ``"auto"`` takes Winograd on levels with 16 vector registers (AVX2, default)
for 32 to 256 channels on planes of 14 x 14 or more, where it beat the register tiles; ``autotune`` times
it as a candidate everywhere it applies. ``"reference"`` runs every pass (forward, input, weight and bias
gradients) by ``csrc/cpu/reference/conv2d.cpp``: the plain loops of the convolution's definition, on one
thread, summed in a fixed order (bias first, then input channel, kernel row, kernel column), in float32 for
the 16-bit types; meant to be read first, and to be the tests' second oracle, not to be fast.

``pool_algorithm``: ``"auto"`` (the default) runs the CPU pooling kernels of ``csrc/cpu/pool2d.cpp``;
``"reference"`` runs every pass of max_pool2d (with or without indices, and its backward) and avg_pool2d
(forward and backward) by ``csrc/cpu/reference/pool2d.cpp``, the same kind of plain loops, with torch's
tap order everywhere (so the values-only max forward keeps torch's NaN too). Neither setting reaches the
CUDA kernels. The CPU kernel of the fused conv -> sigmoid -> avg-pool block follows ``conv_algorithm`` for
its convolution (it calls the conv2d operators) but pools in its own pass, whatever ``pool_algorithm`` says.

``cpu_isa``: the register tiles are compiled once per instruction-set level and the best one the CPU
runs is picked at import (``csrc/cpu/dispatch.cpp``). The environment variable ``LENET_EXT_CPU_ISA``
(``default``, ``avx2`` or ``avx512``) picks another one at start-up; a level the CPU lacks raises
``RuntimeError`` instead of running instructions the CPU does not have.

``autotune``: off by default, like ``torch.backends.cudnn.benchmark``. When on, the first call of each
pass (forward, input gradient, weight gradient) for a new shape, dtype, level and thread count times the
candidate algorithms and keeps the fastest for the rest of the process; ``conv_algorithm`` other than
``"auto"`` still wins.

``huge_pages``: ``"on"`` (the default) advises each fresh CPU result buffer of two huge pages or more (an
output, a gradient, an im2col buffer) as transparent huge pages before the kernel first writes it, so that
its first touch faults 2 MiB at a time instead of 4 KiB (``csrc/cpu/memory.h`` says what that saves). It is a
hint to Linux, ignored where transparent huge pages are off; ``"off"`` leaves the buffers as torch allocates
them. torch's own ``THP_MEM_ALLOC_ENABLE=1`` does the same for every allocation.

``cuda_pool_layout``: which CUDA kernels pool a channels_last input, ``cuda_pool_planar``: how the CUDA
planar pooling forwards split their work, ``cuda_conv_algorithm``: which CUDA kernels convolve,
``cuda_fused_block``: whether the CUDA fused block fuses its sigmoid and pool (see the classes). Each
defaults to ``"auto"``, which takes a kernel family only once ``cuda_verified()`` names a GPU run that
passed its parity tests; the other choices force a family, verified or not. ``tf32_disabled``: full float32
in torch's own CUDA convolutions inside a block, for fair comparisons.

All settings are process-wide.
"""

import contextlib
import sys
import types

import torch

from . import _C  # noqa: F401

ALGORITHMS = ("auto", "direct", "im2col", "winograd", "reference")
POOL_ALGORITHMS = ("auto", "reference")
CPU_ISAS = ("default", "avx2", "avx512")

_ops = torch.ops.lenet_ext


class _Choice(contextlib.ContextDecorator):
    """A process-wide choice among CHOICES, kept by the private operator SETTER (index in, previous index
    out; -1 only reads). Setting it is a call; as a context manager it restores the previous choice."""

    CHOICES: tuple = ()
    SETTER = ""

    def __init__(self, name):
        if name not in self.CHOICES:
            raise ValueError(f"{type(self).__name__} must be one of {self.CHOICES}, got {name!r}")
        self.previous = self.CHOICES[self._set(self.CHOICES.index(name))]

    @classmethod
    def _set(cls, index):
        return getattr(_ops, cls.SETTER)(index)

    @classmethod
    def current(cls):
        return cls.CHOICES[cls._set(-1)]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._set(self.CHOICES.index(self.previous))
        return False


class conv_algorithm(_Choice):
    """Sets the CPU conv2d algorithm; also a context manager that restores the previous one."""

    CHOICES, SETTER = ALGORITHMS, "_set_conv_algorithm"


def current_conv_algorithm():
    return conv_algorithm.current()


class pool_algorithm(_Choice):
    """Sets the CPU pooling algorithm, "auto" or "reference"; also a context manager that restores the
    previous one."""

    CHOICES, SETTER = POOL_ALGORITHMS, "_set_pool_algorithm"


def current_pool_algorithm():
    return pool_algorithm.current()


HUGE_PAGES = ("on", "off")


class huge_pages(_Choice):
    """Whether the CPU kernels advise their fresh result buffers as transparent huge pages, "on" (the
    default) or "off"; also a context manager that restores the previous choice."""

    CHOICES, SETTER = HUGE_PAGES, "_set_huge_pages"


def current_huge_pages():
    return huge_pages.current()


class _IsaSetting(str):
    """The level now in use, as a string; as a context manager it restores the level that was in use
    before it was set."""

    def __new__(cls, name, previous=None):
        setting = super().__new__(cls, name)
        setting.previous = previous
        return setting

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.previous is not None:
            _ops._set_cpu_isa(CPU_ISAS.index(self.previous))
        return False


def cpu_isa(level=None):
    """The CPU instruction-set level in use; with ``level``, switches to it (it must be one this CPU
    supports) and returns it, usable as a context manager that switches back."""
    if level is None:
        return _IsaSetting(CPU_ISAS[_ops._set_cpu_isa(-1)])
    if level not in CPU_ISAS:
        raise ValueError(f"cpu_isa must be one of {CPU_ISAS}, got {level!r}")
    if level not in available_cpu_isas():
        raise RuntimeError(
            f"lenet_ext: this CPU does not support the {level!r} instruction-set level; "
            f"it supports: {', '.join(available_cpu_isas())}"
        )
    previous = CPU_ISAS[_ops._set_cpu_isa(CPU_ISAS.index(level))]
    return _IsaSetting(level, previous)


def available_cpu_isas():
    """The levels this CPU (and this build) can run, lowest first."""
    return tuple(name for code, name in enumerate(CPU_ISAS) if _ops._cpu_isa_supported(code))


# ------------------------------------------------------------------------------- CUDA pooling layout
CUDA_POOL_LAYOUTS = ("auto", "planar", "native")


class cuda_pool_layout(_Choice):
    """Chooses the CUDA pooling kernels for channels_last inputs; also a context manager.

    ``"planar"`` copies a channels_last input to NCHW, runs the planar kernels and copies the result back
    to channels_last. ``"native"`` runs kernels that read and write channels_last as it is, a vector of
    channels per access: no copies, but not yet verified on a GPU, so opt-in. ``"auto"`` (the default)
    takes "native" once ``cuda_verified()`` lists it (``pool_nhwc``), "planar" until then. Either way the
    result is channels_last. Process-wide; no effect on the CPU kernels.
    """

    CHOICES, SETTER = CUDA_POOL_LAYOUTS, "_set_cuda_pool_layout"


def current_cuda_pool_layout():
    return cuda_pool_layout.current()


CUDA_POOL_PLANAR = ("auto", "outputs", "runs")


class cuda_pool_planar(_Choice):
    """Chooses how the CUDA planar (NCHW) pooling forwards split their work; also a context manager.

    ``"outputs"`` gives each thread one output element. ``"runs"`` gives it a run of four
    neighbouring outputs of a row, whose row it decodes once and whose windows it reads together (a
    forward that moves a few bytes per output is bound by that bookkeeping); for windows two columns wide
    at column stride two (2x2 stride-2 pooling), a run reads its eight columns of each window row in
    16-byte vectors where the row length and alignment allow. Not yet verified on a GPU, so opt-in:
    ``"auto"`` (the default) takes "runs" once ``cuda_verified()`` lists it (``pool_runs``), "outputs"
    until then. The backwards are the same either way. Process-wide; no effect on the CPU kernels.
    """

    CHOICES, SETTER = CUDA_POOL_PLANAR, "_set_cuda_pool_planar"


def current_cuda_pool_planar():
    return cuda_pool_planar.current()


# ---------------------------------------------------------------------------------- CUDA conv2d kernels
CUDA_CONV_ALGORITHMS = ("auto", "gemm", "direct", "tensor_cores")


class cuda_conv_algorithm(_Choice):
    """Chooses the CUDA conv2d kernels; also a context manager.

    ``"auto"`` (the default) takes the kernels verified on a GPU: a direct forward for narrow layers, the
    implicit GEMM for the rest and for both gradients; each family below joins it once ``cuda_verified()``
    lists a GPU run it passed (``conv_gemm_pipelined``, ``conv_phased``, ``conv_direct`` for the gradients
    of narrow layers, ``conv_tensor_cores``). ``"gemm"`` takes the implicit GEMM for every pass,
    pipelined (float and double: asynchronous copies, cp.async on sm_80 and later, into a ring of
    shared-memory stages, k tiles ahead of the products; float16 and bfloat16: each k tile's loads in
    registers while the previous tile computes), with a strided, undilated convolution's input gradient
    split into stride phases, each a GEMM over only the taps that reach it (no products with structural
    zeros). ``"direct"`` takes the direct kernels of
    ``csrc/cuda/conv2d_items.h`` for every pass: for narrow layers (LeNet's, depthwise, a 3-channel stem), with an
    input gradient that skips the taps a stride leaves without an output, and a weight gradient summed in
    registers and per block instead of in GEMM tiles. ``"tensor_cores"`` takes, for float16 and bfloat16 on
    sm_80 and later GPUs, the implicit GEMM on tensor cores (WMMA, float accumulation) for every pass, with
    the phased input gradient; other dtypes and older GPUs run as ``"auto"``.

    "direct", "tensor_cores" and what "gemm" adds (the pipelines and the phases) have not yet run on a GPU,
    so they are opt-in. Process-wide; no effect on the CPU kernels.
    """

    CHOICES, SETTER = CUDA_CONV_ALGORITHMS, "_set_cuda_conv_algorithm"


def current_cuda_conv_algorithm():
    return cuda_conv_algorithm.current()


CUDA_FUSED_BLOCKS = ("auto", "composite", "fused")


class cuda_fused_block(_Choice):
    """Chooses what follows the convolution in the CUDA fused LeNet block (conv2d_sigmoid_avgpool2d);
    also a context manager.

    ``"composite"`` runs ATen's sigmoid and our avg_pool2d, each a pass over the conv's output, and in the
    backward ATen's arithmetic on the unpooled gradient. ``"fused"`` runs one pass each way
    (``csrc/cuda/fused_items.h``), as the CPU kernel does. Not yet run on a GPU, so opt-in: ``"auto"`` (the
    default) takes "fused" once ``cuda_verified()`` lists it (``fused_pass``), "composite" until then.
    Process-wide; no effect on the CPU kernels.
    """

    CHOICES, SETTER = CUDA_FUSED_BLOCKS, "_set_cuda_fused_block"


def current_cuda_fused_block():
    return cuda_fused_block.current()


def cuda_verified():
    """The CUDA kernel families (``csrc/cuda/families.h``), each with the GPU run that first passed its
    parity tests (``{"gpu", "torch", "commit", "date"}``), or None for a family no GPU run has verified. The
    ``"auto"`` choice of each CUDA setting takes an opt-in family only once it is listed here."""
    families = {}
    for row in _ops._cuda_families():
        name, *run = row.split("|")
        families[name] = dict(zip(("gpu", "torch", "commit", "date"), run)) if run else None
    return families


@contextlib.contextmanager
def tf32_disabled():
    """Full float32 in torch's own CUDA convolutions and matrix products inside the block.

    On Ampere and later GPUs cuDNN may use TF32 (10-bit mantissa) for float32 convolutions by default.
    Our kernels compute in full float32, so a torch reference, a twin in training or a benchmark rival
    must too, or the comparison measures TF32's rounding instead of our kernels. Restores the previous
    settings on exit.
    """
    previous = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = previous


class _BackendsModule(types.ModuleType):
    @property
    def autotune(self):
        return bool(_ops._set_conv_benchmark(-1))

    @autotune.setter
    def autotune(self, enabled):
        _ops._set_conv_benchmark(int(bool(enabled)))

    # the setting's old name: refused, not ignored (assigning a plain module attribute would change nothing);
    # reading it ends in the module's __getattr__, which says the same (a module replaces the message of an
    # AttributeError raised by a property's getter)
    @property
    def benchmark(self):
        raise AttributeError(_BENCHMARK_RENAMED)

    @benchmark.setter
    def benchmark(self, enabled):
        raise AttributeError(_BENCHMARK_RENAMED)


_BENCHMARK_RENAMED = (
    "lenet_ext.backends.benchmark is now lenet_ext.backends.autotune (the benchmark harness is lenet_ext.bench)"
)


def __getattr__(name):
    if name == "benchmark":
        raise AttributeError(_BENCHMARK_RENAMED)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# Reading the level now makes a bad LENET_EXT_CPU_ISA fail at import, with its message.
cpu_isa()
sys.modules[__name__].__class__ = _BackendsModule
