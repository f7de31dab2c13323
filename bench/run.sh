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
case "${LEVEL:-}" in
  "") ;;
  avx2) export LENET_EXT_CPU_ISA=avx2 ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2
        name="$name-avx2" ;;
  default) export LENET_EXT_CPU_ISA=default ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41 \
                  MKL_ENABLE_INSTRUCTIONS=SSE4_2
           name="$name-default" ;;
  avx512) export LENET_EXT_CPU_ISA=avx512; name="$name-avx512" ;;
  *) echo "LEVEL must be default, avx2 or avx512" >&2; exit 2 ;;
esac
stem="bench/results/$(hostname -s 2>/dev/null || hostname)-${name}-$(date +%Y-%m-%d)"
"$PYTHON" -m lenet_ext.benchmark --device "$device" --json "$stem.json" --plot "docs/bench-$name.png" "$@" \
  | tee "$stem.txt"
echo "wrote $stem.json, $stem.txt and docs/bench-$name.png" >&2
