#!/usr/bin/env bash
# GPU check in one call, no network (docs/benchmarks-serving.md, "GPU check").
#
#   bash bench/build_wheelhouse.sh          # once, where the package index is reachable
#   bash bench/gpu_check.sh                 # on the GPU machine (carry .whl/ there)
#   bash bench/gpu_check.sh --dry-run       # here: CPU, tiny model, about a minute
#
# Uses python3 with its torch; when `adapters` is missing it makes a venv that sees the system
# site-packages (torch, numpy) and installs bench/wheelhouse.txt from .whl/ with --no-index
# (our pins shadow a newer system transformers). Everything is bounded by CHECK_TIMEOUT_S
# (default 470 s); results go to $OUT (or bench/out/) as gpu_check.txt and gpu_check.json.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-bench/out}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONPATH="$PWD"
started=$(date +%s)
if ! "$PY" -c "import adapters" 2>/dev/null; then
  [ -d .whl ] || { echo "no .whl/ here: run bench/build_wheelhouse.sh first" >&2; exit 2; }
  VENV=${GPU_CHECK_VENV:-/tmp/gpu-check-venv}
  "$PY" -m venv --system-site-packages "$VENV" || exit 2
  "$VENV/bin/python" -m pip install -q --no-index --find-links .whl \
    -r <(grep -vE '^\s*(#|$)' bench/wheelhouse.txt) || exit 2
  PY="$VENV/bin/python"
  echo "installed the wheelhouse in $VENV in $(( $(date +%s) - started )) s"
fi
"$PY" - <<'PYEOF'
import adapters, torch, transformers
print(f"torch {torch.__version__} (cuda {torch.version.cuda}, available {torch.cuda.is_available()}),"
      f" transformers {transformers.__version__}, adapters {adapters.__version__}")
PYEOF
OUT="$OUT" timeout "${CHECK_TIMEOUT_S:-470}" "$PY" -m bench.gpu_check --out "$OUT" "$@" 2>&1 \
  | tee "$OUT/gpu_check.txt"
rc=${PIPESTATUS[0]}
echo "gpu_check exit $rc after $(( $(date +%s) - started )) s (124 = timed out)"
exit "$rc"
