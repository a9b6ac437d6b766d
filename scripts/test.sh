#!/usr/bin/env bash
# Set up .venv (CPU torch first, then the project with its test extra) and run the tests.
# Usage: bash scripts/test.sh [pytest args]   e.g. -m quick for the quick suite (tests/conftest.py).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# torch first: the CPU wheel, so that pip does not pull a multi-GB CUDA build.
.venv/bin/python -m pip install -q --disable-pip-version-check torch==2.13.0
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test,ray]'
# The Redis-queue tests start a real redis-server (Debian package); install it when missing
# and we can (root + apt, as on CI). Without it those tests skip and say why.
if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends redis-server; } >/dev/null \
      || echo "warning: could not install redis-server; Redis queue tests will skip" >&2
  else
    echo "note: no redis-server (apt install redis-server); Redis queue tests will skip" >&2
  fi
fi
# The console's browser tests drive Debian's headless Chromium (chromium + chromium-driver);
# install them the same way when missing. Without them those tests skip and say why.
if ! command -v chromedriver >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends chromium chromium-driver fonts-dejavu-core; } >/dev/null \
      || echo "warning: could not install chromium; browser tests will skip" >&2
  else
    echo "note: no chromium/chromedriver (apt install chromium chromium-driver); browser tests will skip" >&2
  fi
fi
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
.venv/bin/python -m ruff check .
if [ $# -gt 0 ]; then
  exec .venv/bin/python -m pytest "$@"
fi
.venv/bin/python -m pytest
# The whole suite (no arguments) then runs the e2e modules of HTTP behaviour again against
# `--api-workers 2` (a supervisor, an engine process, two API processes; the list is
# TWO_PROCESS_MODULES in tests/conftest.py).
exec .venv/bin/python -m pytest --two-processes tests/e2e
