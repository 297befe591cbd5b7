#!/usr/bin/env bash
# How benchmarks/results/zero_shot.{json,md} were made on a lent H200 (no package index, no hub): the bundle and
# wheels are prepared here as in benchmarks/gpu_mnre_h200.sh, then there (the tree and .devcarry/carry travel):
#   ROCMRE_COMMIT=<commit> bash benchmarks/gpu_zero_shot_h200.sh [extra zero_shot.py options]
set -u
cd "$(dirname "$0")/.."
tar xzf .devcarry/carry/bundle.tgz -C /tmp
python3 -m pip install -q --no-index --find-links .devcarry/carry/wheels pydantic typer pyyaml tqdm
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONPATH=src
mkdir -p "$OUT/results" /tmp/zs
# 3 folds x 2 variants of ROC, trained side by side, then every row scored on the GPU
python3 benchmarks/zero_shot.py --bundle /tmp/bundle --jobs 9 --variants roc,roc_frozen_descriptions \
  --out-root /tmp/zs --results "$OUT/results" "$@" 2>&1 | grep -v "it/s\]" | tail -40
rc=${PIPESTATUS[0]}
cd /tmp/zs && tar czf "$OUT/runs.tgz" --exclude='*.safetensors' --exclude='*.pt' --exclude='text_encoder' \
  --exclude='checkpoints' --exclude='tokenizer*' --exclude='vocab.txt' .
exit "$rc"
