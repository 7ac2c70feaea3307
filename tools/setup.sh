#!/usr/bin/env bash
# Create ./.venv and install segcook (editable) with its test extras. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch first. On machines that hold a local CPU wheel (torch==2.13.0) pip takes it; anywhere
# else set SEGCOOK_TORCH (e.g. "torch" for the default CUDA build). Then pin what we got, so
# that nothing below swaps it for a multi-GB CUDA build.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/python -m pip install -q "${SEGCOOK_TORCH:-torch==2.13.0}"
fi
.venv/bin/python -c "import torch; print('torch==' + torch.__version__.split('+')[0])" > .venv/constraints.txt
PIP_CONSTRAINT=.venv/constraints.txt .venv/bin/python -m pip install -q -e ".[dev]"
touch .venv/.installed
