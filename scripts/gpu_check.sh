#!/usr/bin/env bash
# Every CUDA path of nfstudy once and every GPU figure, on one GPU, in one command
# (docs/BENCHMARKS.md, "The GPU check"):
#   bash scripts/gpu_check.sh              # on a GPU machine: results under $OUT, else a printed folder
#   bash scripts/gpu_check.sh --dry-run    # the same code on the CPU at tiny sizes (CI runs this)
#   bash scripts/gpu_check.sh --only bench # one section again (repeatable)
# Needs torch and pydantic. Where pydantic is missing, put its wheels in .whl/ at the root of
# this repository (see the docs): they are installed into a temporary folder first.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$(mktemp -d -t nfstudy-gpu-check-XXXXXX)}"
mkdir -p "$OUT"
export OUT PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
if ! "$PY" -c "import pydantic" 2>/dev/null && compgen -G ".whl/*.whl" >/dev/null; then
  site="$(mktemp -d -t nfstudy-site-XXXXXX)"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl || exit 1
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
echo "results: $OUT"
"$PY" scripts/gpu_check.py --out "$OUT" "$@" 2>&1 | tee -a "$OUT/gpu_check.log"
exit "${PIPESTATUS[0]}"
