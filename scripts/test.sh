#!/usr/bin/env bash
# Set up .venv (CPU torch first, then the project with its test extra) and run the tests.
# Usage: bash scripts/test.sh [pytest args]   e.g. -m "not slow" for the quick suite.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# torch first: the CPU wheel, so that pip does not pull a multi-GB CUDA build.
.venv/bin/python -m pip install -q --disable-pip-version-check torch==2.13.0
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
.venv/bin/python -m ruff check .
exec .venv/bin/python -m pytest "$@"
