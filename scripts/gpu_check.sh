#!/usr/bin/env bash
# One command for a CUDA machine (torch with CUDA, nvcc, ninja, pytest; no network needed):
#   1. build in place: pip install --no-build-isolation --no-deps -e .  (TORCH_CUDA_ARCH_LIST=9.0)
#   2. the whole test suite, CUDA tests included
#   3. compute-sanitizer memcheck over scripts/cuda_smoke.py (every operator once)
#   4. speed beside torch/cuDNN (bench/gpu_speed.py), then the lead's benchmark harness if it exists
#   5. LeNet training on CUDA for 3 epochs, if the `train` command exists
# Logs and JSON go to $OUT if set, else ./gpu-check-out/ (8 files, flat). Every step has a time limit so
# the whole run stays under 8 minutes on an H100; a failing step is recorded, the rest still run, and
# the exit status is non-zero if any step failed. summary.txt lists each step's status and time.
set -uo pipefail
cd "$(dirname "$0")/.."

out="${OUT:-./gpu-check-out}"
mkdir -p "$out"
summary="$out/summary.txt"
harness="$out/harness.log"
: >"$summary"
: >"$harness"
python="${PYTHON:-python}"
failed=0

note() { echo "$*" | tee -a "$summary"; }

# step NAME SECONDS LOG COMMAND...: runs COMMAND under `timeout`, appending its output to LOG.
step() {
  local name=$1 limit=$2 log=$3
  shift 3
  local start=$SECONDS
  echo "=== $name: $*" >>"$log"
  timeout --kill-after=10 "$limit" "$@" >>"$log" 2>&1
  local rc=$?
  local took=$((SECONDS - start))
  if [ $rc -eq 0 ]; then
    note "PASS  $name (${took}s)"
  else
    [ $rc -eq 124 ] && note "FAIL  $name: timed out after ${limit}s (log: $(basename "$log"))" ||
      note "FAIL  $name: exit $rc after ${took}s (log: $(basename "$log"))"
    failed=1
  fi
  return $rc
}

has_module() { "$python" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$1') is None)" 2>/dev/null; }

{
  echo "gpu_check $(date -u +%Y-%m-%dT%H:%M:%SZ) commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  nvidia-smi 2>&1 || echo "nvidia-smi not available"
  "$python" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())"
  command -v nvcc >/dev/null && nvcc --version | tail -1
  echo
} >>"$summary" 2>&1

# 1. build. CUDA_HOME is pinned when the toolkit is at the usual place: a bare nvcc wrapper on PATH can
# make torch guess a CUDA_HOME whose lib64 lacks libcudart.
if [ -z "${CUDA_HOME:-}" ] && [ -x /usr/local/cuda/bin/nvcc ]; then
  export CUDA_HOME=/usr/local/cuda
fi
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" LENET_EXT_CUDA=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}"
step build 170 "$out/build.log" "$python" -m pip install --no-build-isolation --no-deps -e . || {
  note "build failed: the remaining steps would test a stale or missing extension; stopping"
  exit 1
}

# 2. tests
step pytest 140 "$out/pytest.log" "$python" -m pytest -q -p no:cacheprovider tests
tail -3 "$out/pytest.log" >>"$summary"

# 3. memcheck
sanitizer=$(command -v compute-sanitizer)
for candidate in "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer" \
  "${CUDA_HOME:-/usr/local/cuda}/compute-sanitizer/compute-sanitizer"; do
  [ -z "$sanitizer" ] && [ -x "$candidate" ] && sanitizer=$candidate
done
if [ -n "$sanitizer" ]; then
  step memcheck 60 "$out/sanitizer.log" "$sanitizer" --tool memcheck --error-exitcode 1 "$python" scripts/cuda_smoke.py
  grep -E "ERROR SUMMARY|cuda_smoke" "$out/sanitizer.log" >>"$summary"
else
  note "FAIL  memcheck: compute-sanitizer not found"
  failed=1
fi

# 4. speed
step gpu_speed 40 "$harness" "$python" bench/gpu_speed.py --json "$out/speed.json"
if has_module lenet_ext.benchmark && has_module lenet_ext.__main__; then
  step bench 30 "$harness" "$python" -m lenet_ext bench --device cuda --json "$out/bench.json"
else
  note "SKIP  bench: lenet_ext.benchmark is not there yet"
fi

# 5. training
if has_module lenet_ext.train && has_module lenet_ext.__main__; then
  step train 30 "$harness" "$python" -m lenet_ext train --device cuda --epochs 3 --json "$out/train.json"
else
  note "SKIP  train: the train command is not there yet"
fi

note "total ${SECONDS}s; $([ $failed -eq 0 ] && echo 'all steps passed' || echo 'some steps FAILED')"
exit $failed
