#!/usr/bin/env bash
# The GPU half in one command (issue #20): bash benchmarks/gpu_suite.sh OUT_DIR [--dry-run --device cpu] [...]
# A thin wrapper of `python -m benchmarks.gpu_suite` (its header: the steps, their time limits, what must travel).
# It runs from the repository root with the machine's python3 (PYTHON=... to choose another; the project's
# .venv when there is one), unbuffered, so that a command killed at its limit still leaves its output.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ]; then
    PY=.venv/bin/python
fi
export PYTHONUNBUFFERED=1
exec "$PY" -m benchmarks.gpu_suite "$@"
