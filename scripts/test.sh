#!/usr/bin/env bash
# Installs what is needed (into .venv) and runs the linter and the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export ROCMRE_DATA=${ROCMRE_DATA:-$(cd .. && pwd)/shared/data}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
.venv/bin/ruff check src tests benchmarks
.venv/bin/python -m pytest -q "$@"
