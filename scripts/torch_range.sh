#!/usr/bin/env bash
# Runs the test suite against each end of the supported torch range (pyproject.toml), each in a fresh
# virtual environment with a fresh build, in scratch copies of this checkout (so the checkout's own
# build is untouched). Any failing end fails the script.
#
#   scripts/torch_range.sh                   # both ends: 2.11.0 (oldest) and 2.15.0 (newest)
#   scripts/torch_range.sh 2.11.0            # one version
#   PYTHON=python3.12 scripts/torch_range.sh
#
# Extra pytest arguments go in PYTEST_ARGS. The registry's default torch wheel is a CUDA build (about
# 0.5 GB, plus its CUDA libraries); LENET_EXT_CUDA decides whether our CUDA kernels are built (default 0
# here: the CPU suite; set 1 on a machine with nvcc).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VERSIONS=("$@")
[ ${#VERSIONS[@]} -eq 0 ] && VERSIONS=(2.11.0 2.15.0)
WORK=${TORCH_RANGE_DIR:-$(mktemp -d /tmp/lenet_ext_torch_range.XXXXXX)}
mkdir -p "$WORK"
read -r -a pytest_args <<<"${PYTEST_ARGS:-}"

failed=()
for version in "${VERSIONS[@]}"; do
  dir=$WORK/torch-$version
  rm -rf "$dir"
  mkdir -p "$dir"
  echo "=== torch $version in $dir"
  git ls-files -z --cached --others --exclude-standard | tar --null --ignore-failed-read -T - -cf - | tar -xf - -C "$dir"
  start=$(date +%s)
  (
    cd "$dir"
    "$PYTHON" -m venv .venv
    . .venv/bin/activate
    # A machine-wide pip configuration may hold a constraint that caps torch below the newest release
    # (and would downgrade it again while installing the package): read none in this environment, so
    # the version asked for is the version tested.
    export PIP_CONFIG_FILE=/dev/null
    # one resolution, so torch's own pins (setuptools<82 for 2.11) hold beside ours
    pip install -q "torch==$version" "setuptools>=77" wheel ninja pytest hypothesis
    LENET_EXT_CUDA=${LENET_EXT_CUDA:-0} pip install -q --no-build-isolation -e ".[test]"
    python -c "import torch, lenet_ext; print('torch', torch.__version__, 'lenet_ext built against', lenet_ext._build_info.TORCH_VERSION)"
    python -m pytest -q -p no:cacheprovider "${pytest_args[@]}"
  ) && status=0 || status=$?
  echo "=== torch $version: exit $status after $(( $(date +%s) - start )) s"
  [ "$status" -eq 0 ] || failed+=("$version")
done

if [ ${#failed[@]} -ne 0 ]; then
  echo "torch_range.sh: failed on torch ${failed[*]} (builds and venvs kept in $WORK)" >&2
  exit 1
fi
echo "torch_range.sh: passed on torch ${VERSIONS[*]}"
[ -z "${TORCH_RANGE_DIR:-}" ] && rm -rf "$WORK"
exit 0
