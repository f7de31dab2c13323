#!/usr/bin/env bash
# The full suite on one device, as recorded in the README:
#
#   bench/run.sh [cpu|cuda] [harness options...]
#
# writes bench/results/<machine>-<device>-<date>.json (and .txt, the table) and docs/bench-<device>.png.
# Run from a checkout with lenet_ext built in place or installed; cuda needs a GPU and a CUDA build.
# Extra options go to the harness, e.g. `bench/run.sh cpu --threads 2 --filter conv2d`; SUFFIX (e.g. -1t)
# keeps a variant's files apart: `SUFFIX=-1t bench/run.sh cpu --threads 1`.
#
# LEVEL=avx2 (or default) measures a lower CPU instruction-set level on a machine that has a higher one,
# for BOTH sides: our kernels (LENET_EXT_CPU_ISA), and torch's own (ATen's CPU capability, oneDNN's and
# MKL's instruction sets), so that the ratio is the one a CPU of that level would see. The files get the
# level in their name.
set -euo pipefail
cd "$(dirname "$0")/.."
device=${1:-cpu}
shift || true
PYTHON=${PYTHON:-python}
name="${device}${SUFFIX:-}"
if [ -n "${LEVEL:-}" ]; then
  # our level and torch's, from one table (lenet_ext/bench/levels.py); an unknown level stops here
  exports=$("$PYTHON" -m lenet_ext.bench.levels "$LEVEL")
  eval "$exports"
  name="$name-$LEVEL"
fi
stem="bench/results/$(hostname -s 2>/dev/null || hostname)-${name}-$(date +%Y-%m-%d)"
"$PYTHON" -m lenet_ext.bench --device "$device" --json "$stem.json" --plot "docs/bench-$name.png" "$@" \
  | tee "$stem.txt"
echo "wrote $stem.json, $stem.txt and docs/bench-$name.png" >&2
