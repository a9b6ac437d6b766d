#!/usr/bin/env bash
# Fill .whl/ (git-ignored) with the wheels of bench/wheelhouse.txt for CPython 3.12 on x86_64
# Linux, one by one, without dependencies (the list is complete). Needs the package index.
#   bash bench/build_wheelhouse.sh            # then: du -sh .whl  (about 25 MB)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
mkdir -p .whl
grep -vE '^\s*(#|$)' bench/wheelhouse.txt | while read -r req; do
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux_2_17_x86_64 -d .whl "$req"
done
ls .whl | wc -l
du -sh .whl
