#!/usr/bin/env bash
# One command for a CUDA machine (torch with CUDA, nvcc, ninja, pytest; no network needed):
#   1. build in place: pip install --no-build-isolation --no-deps -e .  (TORCH_CUDA_ARCH_LIST=9.0)
#   2. the CUDA tests (pytest -k cuda: every CUDA pooling kernel family and conv algorithm, TF32 off),
#      then the error-path tests that once crashed workers
#   3. compute-sanitizer memcheck over scripts/cuda_smoke.py (every operator once, every pooling family)
#   4. speed beside torch/cuDNN (bench/gpu_speed.py), host time per small call (bench/host_time.py), the
#      benchmark harness (again for the conv rows with the opt-in direct and pipelined GEMM kernels, the
#      fused-block rows with its opt-in pass, and the pooling forwards with the opt-in runs), and the two
#      CUDA pooling kernel families for channels_last side by side (scripts/cuda_pool_layouts.py)
#   5. LeNet training on CUDA for 3 epochs beside its torch.nn twin, eagerly and replayed as CUDA graphs
#   6. the rest of the test suite (the CPU tests), if time is left
# Everything it writes goes to $OUT (default ./gpu-check-out/), flat: one log per step, summary.txt
# (each step's status and time, the pytest pass/fail counts) and counts.json (the same counts, for tools).
#
# Time: the whole run fits BUDGET seconds (default 660: a 12-minute device slot less start-up). Each step
# has its own limit, cut to what is left of the budget; a step that cannot get 20 s is recorded as
# skipped. A failing or timed-out step is recorded and the rest still run; the exit status is non-zero
# if any step failed or was skipped for time. Only a failed build stops the run.
#
# CPU: pytest runs WORKERS processes (default: cores / 2, at most 8) with OMP_NUM_THREADS=THREADS
# (default 2) each, so the workers' CPU kernels do not oversubscribe the cores.
set -uo pipefail
cd "$(dirname "$0")/.."

out="${OUT:-./gpu-check-out}"
mkdir -p "$out"
summary="$out/summary.txt"
: >"$summary"
python="${PYTHON:-python}"
budget="${BUDGET:-660}"
cores=$(nproc)
workers="${WORKERS:-$((cores / 2 < 8 ? (cores / 2 > 1 ? cores / 2 : 1) : 8))}"
threads="${THREADS:-2}"
failed=0

note() { echo "$*" | tee -a "$summary"; }

# step NAME SECONDS LOG COMMAND...: runs COMMAND under `timeout`, appending its output to LOG. The limit
# is cut to the budget that is left; with less than 20 s left the step is skipped (and counts as failed).
step() {
  local name=$1 limit=$2 log=$3
  shift 3
  local left=$((budget - SECONDS))
  if [ "$left" -lt 20 ]; then
    note "SKIP  $name: only ${left}s of the ${budget}s budget left"
    failed=1
    return 124
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  local start=$SECONDS
  echo "=== $name (limit ${limit}s): $*" >>"$log"
  timeout --kill-after=10 "$limit" "$@" >>"$log" 2>&1
  local rc=$?
  local took=$((SECONDS - start))
  if [ $rc -eq 0 ]; then
    note "PASS  $name (${took}s)"
  elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    note "FAIL  $name: timed out after ${limit}s (log: $(basename "$log"))"
    failed=1
  else
    note "FAIL  $name: exit $rc after ${took}s (log: $(basename "$log"))"
    failed=1
  fi
  return $rc
}

# counts NAME LOG: pass/fail counts of a pytest -v log, from its per-test lines (so a run cut short by
# its time limit still reports what finished), into summary.txt and counts.json.
counts() {
  [ -f "$2" ] || return 0
  "$python" - "$1" "$2" "$out/counts.json" <<'EOF' | tee -a "$summary"
import json, re, sys
name, log, path = sys.argv[1:]
outcomes = ("PASSED", "FAILED", "ERROR", "SKIPPED", "XFAIL", "XPASS")
counts = {k.lower(): 0 for k in outcomes}
# kernels not yet verified on a GPU, opt-in until they pass: test-id marker -> name
opt_in = {"native": "native channels_last pooling", "runs": "planar pooling by runs", "conv-direct": "direct conv2d",
          "conv-gemm": "pipelined, phased GEMM conv2d", "conv-tensor_cores": "tensor-core conv2d",
          "fused-pass": "fused block pass"}
opt_in_counts = {m: {k.lower(): 0 for k in outcomes} for m in opt_in}
failed = []
pattern = re.compile(r"(?:^|\s)(" + "|".join(outcomes) + r")(?:\s|$)")
for line in open(log, errors="replace"):
    if "::" not in line:
        continue
    m = pattern.search(line)
    if not m:
        continue
    k = m.group(1).lower()
    counts[k] += 1
    test = next((w for w in line.split() if "::" in w), "?")
    for marker in opt_in:
        if marker in test:
            opt_in_counts[marker][k] += 1
    if k in ("failed", "error"):
        failed.append(test)
try:
    data = json.load(open(path))
except (OSError, ValueError):
    data = {}
data[name] = {"counts": counts, "failed": failed, **{f"opt_in {opt_in[m]}": c for m, c in opt_in_counts.items()}}
json.dump(data, open(path, "w"), indent=1)
print(f"      {name}: " + ", ".join(f"{v} {k}" for k, v in counts.items() if v))
for marker, c in opt_in_counts.items():
    print(f"      {name}, {opt_in[marker]} tests: " + ", ".join(f"{v} {k}" for k, v in c.items() if v))
for t in failed[:40]:
    print(f"      failed: {t}")
EOF
}

has_module() { "$python" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$1') is None)" 2>/dev/null; }

{
  echo "gpu_check $(date -u +%Y-%m-%dT%H:%M:%SZ) commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo "budget ${budget}s, ${cores} cores, pytest ${workers} workers x OMP_NUM_THREADS=${threads}"
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
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" LENET_EXT_CUDA=1 MAX_JOBS="${MAX_JOBS:-$cores}"
step build 180 "$out/build.log" "$python" -m pip install --no-build-isolation --no-deps -e . || {
  note "build failed: the remaining steps would test a stale or missing extension; stopping"
  exit 1
}

# the kernel families and the GPU runs that verified them (csrc/cuda/families.h): a family whose parity
# tests pass below, and whose timings hold, gets a row there naming this run
"$python" -c "
from lenet_ext.backends import cuda_verified
for name, run in cuda_verified().items():
    print(f'  {name:22}', 'not yet verified' if run is None else 'verified: ' + ', '.join(run.values()))
" >>"$summary" 2>&1

pytest_args=(-v -p no:cacheprovider --durations=15)
if has_module xdist; then
  pytest_args+=(-n "$workers")
else
  note "note: pytest-xdist is not installed, the tests run in one process"
fi

# 2. the CUDA tests, first: they are what this machine is for
OMP_NUM_THREADS=$threads step pytest-cuda 180 "$out/pytest-cuda.log" \
  "$python" -m pytest "${pytest_args[@]}" -k cuda tests
counts pytest-cuda "$out/pytest-cuda.log"

# 2b. the tests whose C++ argument errors once crashed test workers on a GPU machine (issue: no process
# crash), under the same pytest-xdist workers, in a few seconds: the rest of the suite runs last, if time
# is left, and a crash here must not wait for it
OMP_NUM_THREADS=$threads step error-paths 60 "$out/error-paths.log" \
  "$python" -m pytest "${pytest_args[@]}" tests/test_shape_math.py tests/test_error_paths.py \
  tests/test_conv2d.py::test_operator_rejects_bad_arguments_directly \
  tests/test_pool2d.py::test_operators_check_their_arguments tests/test_fused.py::test_bad_arguments
counts error-paths "$out/error-paths.log"
# a crash there is the one to pin down: the toolchain, the mapped libraries and a native backtrace, for
# each build variant (scripts/error_path_probe.sh; three builds, so only when it is needed)
if grep -q -E "Segmentation fault|Fatal Python error|node down|crashed|[1-9][0-9]* failed" "$out/error-paths.log"; then
  OUT="$out/error-probe" step error-probe 150 "$out/error-probe.log" scripts/error_path_probe.sh
fi

# 2c. which throw kills a process on this image, if one does (the crash investigation): torch's own max-pool
# heap corruption (expected: only the unmasked trial dies), then, each in a fresh process, a TORCH_CHECK
# raised through libc10 from our frames and a throw from our own library. If only the first throw dies,
# the cause is unwinding from libc10 through our frames with this toolchain.
step heap-probe 40 "$out/heap-probe.log" "$python" scripts/torch_maxpool_heap_probe.py --runs 2 --json "$out/heap-probe.json"
step throw-origins 30 "$out/throw-origins.log" bash -c '
  for call in "torch.ops.lenet_ext_testing.window_output_size(10, 0, 0, 0, 1, 1, True)" \
              "torch.ops.lenet_ext.max_pool2d_forward(torch.ones(1, 1, 4, 4, dtype=torch.bool), [2, 2], [2, 2], [0, 0], [1, 1], False)"; do
    "$0" -X faulthandler -c "import torch, lenet_ext
try:
    $call
except Exception as e:
    print(\"raised\", type(e).__name__)"
    echo "exit $? for $call"
  done' "$python"

# 3. memcheck
sanitizer=$(command -v compute-sanitizer)
for candidate in "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer" \
  "${CUDA_HOME:-/usr/local/cuda}/compute-sanitizer/compute-sanitizer"; do
  [ -z "$sanitizer" ] && [ -x "$candidate" ] && sanitizer=$candidate
done
if [ -n "$sanitizer" ]; then
  step memcheck 90 "$out/memcheck.log" "$sanitizer" --tool memcheck --error-exitcode 1 "$python" scripts/cuda_smoke.py
  [ -f "$out/memcheck.log" ] && grep -E "ERROR SUMMARY|cuda_smoke" "$out/memcheck.log" >>"$summary"
else
  note "FAIL  memcheck: compute-sanitizer not found"
  failed=1
fi

# 4. speed (TF32 off in both: they say so in their output)
step gpu_speed 90 "$out/gpu_speed.log" "$python" bench/gpu_speed.py --json "$out/gpu_speed.json"
step bench 90 "$out/bench.log" "$python" -m lenet_ext bench --device cuda --json "$out/bench.json"
step host_time 20 "$out/host_time.log" "$python" bench/host_time.py --device cuda --json "$out/host_time.json"
# the opt-in conv kernels on the same rows (direct; the pipelined GEMM with the phased input gradient), so
# a row in csrc/cuda/families.h, which makes "auto" take them, has numbers behind it
step bench-direct 45 "$out/bench-direct.log" "$python" -m lenet_ext bench --device cuda --filter conv2d \
  --cuda-conv-algorithm direct --json "$out/bench-direct.json"
step bench-gemm 45 "$out/bench-gemm.log" "$python" -m lenet_ext bench --device cuda --filter conv2d \
  --cuda-conv-algorithm gemm --json "$out/bench-gemm.json"
step bench-fused 30 "$out/bench-fused.log" "$python" -m lenet_ext bench --device cuda --filter lenet_block \
  --cuda-fused-block fused --json "$out/bench-fused.json"
step bench-pool-runs 30 "$out/bench-pool-runs.log" "$python" -m lenet_ext bench --device cuda --filter pool2d.forward \
  --cuda-pool-planar runs --json "$out/bench-pool-runs.json"
step pool_layouts 45 "$out/pool_layouts.log" "$python" scripts/cuda_pool_layouts.py --json "$out/pool_layouts.json"

# 5. training
step train 60 "$out/train.log" "$python" -m lenet_ext train --device cuda --epochs 3 --json "$out/train.json"
[ -f "$out/train.log" ] && grep -E "TF32|loss gap|twin" "$out/train.log" | tail -3 >>"$summary"
# each training step replayed as a CUDA graph, at the default batch and at LeNet's 256
for batch in 64 256; do
  step "train-graph-b$batch" 45 "$out/train-graph-b$batch.log" "$python" -m lenet_ext train --device cuda \
    --epochs 3 --cuda-graph --batch-size "$batch" --json "$out/train-graph-b$batch.json"
  [ -f "$out/train-graph-b$batch.log" ] && grep -E "loss gap|speed" "$out/train-graph-b$batch.log" | tail -2 >>"$summary"
done

# the same with the opt-in kernels LeNet would take (direct convs, the fused block's pass), to say whether
# making them the default reaches the training targets
step train-opt-in 45 "$out/train-opt-in.log" "$python" -c "
import sys
from lenet_ext import backends, cli
backends.cuda_conv_algorithm('direct')
backends.cuda_fused_block('fused')
sys.exit(cli.main(['train', '--device', 'cuda', '--epochs', '3', '--cuda-graph', '--json', '$out/train-opt-in.json']))"
[ -f "$out/train-opt-in.log" ] && grep -E "loss gap|speed" "$out/train-opt-in.log" | tail -2 >>"$summary"

# 6. the rest of the suite
OMP_NUM_THREADS=$threads step pytest-rest 150 "$out/pytest-rest.log" \
  "$python" -m pytest "${pytest_args[@]}" -k "not cuda" tests
counts pytest-rest "$out/pytest-rest.log"

note "total ${SECONDS}s of ${budget}s; $([ $failed -eq 0 ] && echo 'all steps passed' || echo 'some steps FAILED')"
exit $failed
