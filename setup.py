"""Build lenet_ext._C from csrc/.

The build decides once, prints what it decided, and never hand-lists sources:

* ``csrc/*.cpp``, ``csrc/cpu/*.cpp`` and ``csrc/cpu/reference/*.cpp`` are always compiled;
* ``csrc/cuda/*.cu`` are compiled when CUDA is wanted and possible.

``LENET_EXT_CUDA``: unset means "CUDA when the toolkit and a CUDA build of torch are both present",
``0`` never builds CUDA, ``1`` requires it and fails loudly when it cannot.
``TORCH_CUDA_ARCH_LIST`` defaults to ``8.0;9.0`` when no GPU is visible. ``MAX_JOBS`` is honoured by
ninja through torch's BuildExtension. ``LENET_EXT_SANITIZE=1`` adds ASan/UBSan to the host code.

The host code is built for the architecture's baseline, so a wheel runs on every CPU torch runs on; the CPU
tile kernels (``csrc/cpu/level_*.cpp``) are built once per instruction-set level and chosen at run time.
``LENET_EXT_NATIVE=1`` builds everything for the build machine's own level instead (such a build runs only
on CPUs of that level).

The build records the torch it compiled against in ``lenet_ext/_build_info.py`` (generated, git-ignored):
torch's C++ ABI changes between releases, so ``import lenet_ext`` refuses to load ``_C`` under another torch.
"""

import glob
import os
import shutil
import sys

import torch
from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ARCH_LIST = "8.0;9.0"


def _locate_cuda_home():
    """Point CUDA_HOME at a toolkit that has both nvcc and the CUDA runtime library.

    torch guesses the toolkit from the nvcc found on PATH, which on some machines is a wrapper in
    /usr/local/bin, giving /usr/local (no libcudart there). An explicit CUDA_HOME/CUDA_PATH always wins.
    """
    if os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH"):
        return
    candidates = []
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    candidates.append("/usr/local/cuda")
    for home in candidates:
        if os.path.exists(os.path.join(home, "bin", "nvcc")) and glob.glob(os.path.join(home, "lib*", "libcudart.so*")):
            os.environ["CUDA_HOME"] = home
            return


_locate_cuda_home()
from torch.utils import cpp_extension  # noqa: E402  (reads CUDA_HOME at import)


def _say(message):
    print(f"lenet_ext setup: {message}", file=sys.stderr)


def _want_cuda():
    knob = os.environ.get("LENET_EXT_CUDA", "").strip()
    if knob not in ("", "0", "1"):
        sys.exit(f"lenet_ext setup: LENET_EXT_CUDA must be 0, 1 or unset, got {knob!r}")
    has_torch_cuda = torch.version.cuda is not None
    has_toolkit = cpp_extension.CUDA_HOME is not None
    if knob == "0":
        return False, "LENET_EXT_CUDA=0"
    if has_torch_cuda and has_toolkit:
        return True, f"torch {torch.__version__} has CUDA {torch.version.cuda}, toolkit at {cpp_extension.CUDA_HOME}"
    missing = "this torch build has no CUDA" if not has_torch_cuda else "no CUDA toolkit found (set CUDA_HOME)"
    if knob == "1":
        sys.exit(f"lenet_ext setup: LENET_EXT_CUDA=1 but {missing}")
    return False, missing


def _sources(pattern):
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def build_extension():
    with_cuda, why = _want_cuda()
    sources = _sources("csrc/*.cpp") + _sources("csrc/cpu/*.cpp") + _sources("csrc/cpu/reference/*.cpp")
    # -fopenmp: at::parallel_for is inline OpenMP; without the flag its pragma is ignored and every
    # "parallel" loop of ours runs on one thread.
    cxx_flags = ["-O3", "-fvisibility=hidden", "-fopenmp"]
    nvcc_flags = ["-O3", "--use_fast_math", "-lineinfo"]
    link_flags = ["-fopenmp"]
    define_macros = []
    if os.environ.get("LENET_EXT_SANITIZE") == "1":
        cxx_flags = ["-O1", "-g", "-fno-omit-frame-pointer", "-fopenmp", "-fsanitize=address,undefined"]
        link_flags += ["-fsanitize=address,undefined"]
        _say("sanitizer build (ASan + UBSan)")
    else:
        level = _native_level()
        if level:
            cxx_flags.append(f"-march={level}")
            _say(f"LENET_EXT_NATIVE=1: all host code built for {level}; the extension runs only on CPUs of that level")
        else:
            _say(
                "host code built for the baseline of this architecture; the tile kernels are also built for "
                "AVX2 and AVX-512 (x86-64) and chosen when the process runs (LENET_EXT_CPU_ISA forces one)"
            )
    if with_cuda:
        sources += _sources("csrc/cuda/*.cu")
        define_macros.append(("LENET_EXT_WITH_CUDA", None))
        if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
            os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_ARCH_LIST
        arch = os.environ.get("TORCH_CUDA_ARCH_LIST", "of the visible GPU")
        _say(f"building CPU + CUDA kernels ({why}); arch list {arch}")
        ext_cls = cpp_extension.CUDAExtension
    else:
        _say(f"building CPU kernels only ({why})")
        ext_cls = cpp_extension.CppExtension

    return ext_cls(
        name="lenet_ext._C",
        sources=sources,
        include_dirs=[os.path.join(ROOT, "csrc")],
        define_macros=define_macros,
        extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags},
        extra_link_args=_without_own_openmp_runtime(link_flags),
        py_limited_api=False,
    )


def _native_level():
    """With LENET_EXT_NATIVE=1, the build machine's x86-64 level (x86-64-v4, v3 or v2) for all host code.

    Off by default: the default build runs on every CPU of its architecture and picks the tile kernels'
    level at run time (csrc/cpu/dispatch.cpp). A native build runs only on CPUs of the build machine's level.
    """
    if os.environ.get("LENET_EXT_NATIVE") != "1":
        return None
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(f.read().split())
    except OSError:
        return None
    if {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"} <= flags:
        return "x86-64-v4"
    if {"avx2", "fma", "bmi2"} <= flags:
        return "x86-64-v3"
    return None


def _without_own_openmp_runtime(link_flags):
    """The link flags less -fopenmp: _C uses the OpenMP runtime that libtorch_cpu loaded, never its own.

    Compiling with -fopenmp is what makes at::parallel_for's inline pragmas real; the GOMP_* calls they
    make are then resolved when _C loads, from the runtime libtorch_cpu (a dependency of _C) brought in.
    Linking with -fopenmp instead records the compiler's own runtime (libgomp.so.1) as a dependency, and
    wherever torch's runtime goes by another name (a renamed libgomp in some wheels, Intel's libiomp5 in
    conda builds) that loads a second OpenMP runtime into the process.
    """
    return [flag for flag in link_flags if flag != "-fopenmp"]


def _record_build_info():
    """Writes lenet_ext/_build_info.py: the torch this build compiles against, which lenet_ext/__init__.py
    compares with the torch it runs under before it loads _C."""
    path = os.path.join(ROOT, "lenet_ext", "_build_info.py")
    text = (
        "# Generated by setup.py at build time (git-ignored): the torch that lenet_ext._C was compiled against.\n"
        f"TORCH_VERSION = {str(torch.__version__)!r}\n"
    )
    with open(path, "w") as f:
        f.write(text)
    _say(f"building against torch {torch.__version__} (recorded in lenet_ext/_build_info.py)")


_record_build_info()
setup(
    ext_modules=[build_extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
)
