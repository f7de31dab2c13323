#!/usr/bin/env bash
# Pins down a crash in our C++ error paths on a machine where it happens (it never did on the CPU-only
# machines): records the toolchain and the process's libraries, runs the error-path tests in a fresh
# process for each build variant, and on a crash takes a native backtrace with gdb (or cuda-gdb, which
# also debugs host code, where gdb is missing). Builds in scratch copies; the checkout is untouched.
#
#   scripts/error_path_probe.sh          # logs under $OUT if set, else ./error-probe-out/
#
# Variants: the default build (baseline host code, per-level tile kernels); LENET_EXT_NATIVE=1 (all host code
# for the machine's own level, as the crashing run was built); a CPU-only build.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
out=$(realpath -m "${OUT:-./error-probe-out}")
mkdir -p "$out"
python=${PYTHON:-python3}
tests=(tests/test_shape_math.py::test_rejects_sizes_past_the_limit
       tests/test_shape_math.py::test_rejects_non_positive_arguments
       tests/test_conv2d.py::test_operator_rejects_bad_arguments_directly
       tests/test_pool2d.py::test_operators_check_their_arguments tests/test_fused.py::test_bad_arguments)
debugger=$(command -v gdb || command -v cuda-gdb || true)

{
  date -u
  uname -a
  "$python" -c "import sys, torch; print(sys.version); print('torch', torch.__version__); print(torch.__config__.show())"
  gcc --version | head -1
  grep -o -w -E 'avx2|avx512f|avx512bw|avx512vl' /proc/cpuinfo | sort -u | tr '\n' ' '
  echo
  env | grep -E '^(TORCH|OMP|KMP|LD_|PYTHON|PYTEST)' || true
} >"$out/machine.txt" 2>&1

probe() {  # probe NAME ENV...: build a scratch copy with ENV, run the tests, take a backtrace on a crash
  local name=$1
  shift
  local dir
  dir=$(mktemp -d /tmp/lenet_ext_probe.XXXXXX)
  git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf - | tar -xf - -C "$dir"
  (
    cd "$dir" || exit 1
    env "$@" "$python" setup.py build_ext --inplace >"$out/$name-build.log" 2>&1 || { echo "$name: build failed"; exit 1; }
    readelf -d lenet_ext/_C*.so | grep NEEDED >"$out/$name-needed.txt"
    # the OpenMP runtimes a process holds after our first parallel kernel and our first error
    "$python" - >"$out/$name-maps.txt" 2>&1 <<'EOF'
import os, torch, lenet_ext
import lenet_ext.functional as F
F.conv2d(torch.randn(4, 4, 16, 16), torch.randn(4, 4, 3, 3))
try:
    torch.ops.lenet_ext_testing.window_output_size(10, 0, 0, 0, 1, 1, True)
except RuntimeError as e:
    print("raised:", e)
print(sorted({l.split()[-1] for l in open("/proc/self/maps") if "omp" in l.split()[-1]}))
EOF
    "$python" -X faulthandler -m pytest -q -p no:cacheprovider "${tests[@]}" >"$out/$name-tests.log" 2>&1
    local rc=$?
    echo "$name: tests exit $rc"
    if [ $rc -ne 0 ] && [ -n "$debugger" ]; then
      timeout 600 "$debugger" -q -batch -ex run -ex "bt 40" -ex "info sharedlibrary" \
        --args "$python" -m pytest -q -p no:cacheprovider -x "${tests[@]}" >"$out/$name-backtrace.txt" 2>&1
    fi
  )
  rm -rf "$dir"
}

probe default >>"$out/summary.txt" 2>&1
probe native LENET_EXT_NATIVE=1 >>"$out/summary.txt" 2>&1
probe cpu-only LENET_EXT_CUDA=0 >>"$out/summary.txt" 2>&1
cat "$out/summary.txt"
