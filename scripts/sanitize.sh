#!/usr/bin/env bash
# Builds lenet_ext's host code with AddressSanitizer + UndefinedBehaviorSanitizer in a scratch copy of
# this checkout (so the checkout's own lenet_ext/_C*.so stays the normal build), then runs the CPU tests
# under it. Any finding fails the script.
#
#   scripts/sanitize.sh                      # every error-path test, and the kernels' own tests
#                                            # (a few minutes)
#   scripts/sanitize.sh tests                # the whole suite
#   PYTHON=/path/to/python scripts/sanitize.sh
#
# Needs gcc's libasan. The ASan runtime must be loaded before Python, hence LD_PRELOAD; libstdc++ is
# preloaded after it, or ASan's __cxa_throw interceptor finds no real __cxa_throw (python itself does
# not link libstdc++) and aborts on the first C++ exception, torch's included.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=${PYTHON:-$(command -v python)}
TESTS=("$@")
if [ ${#TESTS[@]} -eq 0 ]; then
  # Every test where our C++ code rejects its arguments and throws (test_bad_inputs.py and
  # test_error_paths.py run theirs in child processes, which inherit the sanitizer), beside the kernels'.
  TESTS=(tests/test_bad_inputs.py tests/test_shape_math.py tests/test_error_paths.py tests/test_fused.py
         tests/test_conv2d.py tests/test_pool2d.py tests/test_determinism.py)
fi

libasan=$(gcc -print-file-name=libasan.so)
libstdcxx=$(gcc -print-file-name=libstdc++.so)
if [ ! -e "$libasan" ] || [ "$libasan" = libasan.so ]; then
  echo "sanitize.sh: gcc's libasan.so not found" >&2
  exit 1
fi

WORK=${SANITIZE_DIR:-$(mktemp -d /tmp/lenet_ext_sanitize.XXXXXX)}
mkdir -p "$WORK"
echo "sanitize.sh: building in $WORK"
# Tracked and untracked-but-not-ignored files: the checkout as git sees it, without build outputs.
git ls-files -z --cached --others --exclude-standard | tar --null --ignore-failed-read -T - -cf - | tar -xf - -C "$WORK"
cd "$WORK"
start=$(date +%s)
LENET_EXT_SANITIZE=1 LENET_EXT_CUDA=0 MAX_JOBS=${MAX_JOBS:-2} "$PYTHON" setup.py -q build_ext --inplace
echo "sanitize.sh: build took $(( $(date +%s) - start )) s"

log=$WORK/sanitize.log
start=$(date +%s)
set +e
# detect_leaks=0: CPython and torch keep allocations alive at exit by design. allocator_may_return_null:
# torch itself tries terabyte allocations on some bad inputs (see test_bad_inputs.py) and must get its
# own "can't allocate memory" error back, not an ASan abort.
# halt_on_error: the first finding aborts the run, so it cannot scroll by unnoticed.
LD_PRELOAD="$libasan $libstdcxx" \
  ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1:halt_on_error=1:abort_on_error=1 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  "$PYTHON" -m pytest -q -x -p no:cacheprovider "${TESTS[@]}" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
echo "sanitize.sh: tests took $(( $(date +%s) - start )) s"
if grep -q -e "ERROR: AddressSanitizer" -e "runtime error:" "$log"; then
  echo "sanitize.sh: sanitizer findings above (full log: $log)" >&2
  exit 1
fi
if [ "$status" -ne 0 ]; then
  echo "sanitize.sh: tests failed under the sanitizers (exit $status; log: $log)" >&2
  exit "$status"
fi
echo "sanitize.sh: no findings"
[ -z "${SANITIZE_DIR:-}" ] && rm -rf "$WORK"
exit 0
