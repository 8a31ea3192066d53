#!/usr/bin/env bash
# The test command: set up .venv if needed, lint, then run the whole test suite.
# Extra arguments go to pytest (e.g. scripts/test.sh -k mlip3).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export AIIDA_PATH=${AIIDA_PATH:-$(mktemp -d)}   # never touch ~/.aiida from tests
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python -m pytest "$@"
