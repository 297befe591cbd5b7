#!/usr/bin/env bash
# How benchmarks/results/mnre.{json,md} and logs/mnre_h200/ were made on a lent H200 (no package index, no hub).
# Here: python benchmarks/offline_bundle.py --out .devcarry/bundle --fp16 --no-crops
#       (cd .devcarry && tar czf carry/bundle.tgz bundle)
#       pip download --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
#           --implementation cp -d .devcarry/carry/wheels pydantic typer pyyaml tqdm
# There (the tree and .devcarry/carry travel): ROCMRE_COMMIT=<commit> bash benchmarks/gpu_mnre_h200.sh
set -u
cd "$(dirname "$0")/.."
tar xzf .devcarry/carry/bundle.tgz -C /tmp
python3 -m pip install -q --no-index --find-links .devcarry/carry/wheels pydantic typer pyyaml tqdm
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
mkdir -p "$OUT/results" /tmp/mnre
# 1. the fp32 reference of the speed issue (every speed lever off), seed 1, beside ...
( ROCMRE_DATA=/tmp/bundle/data ROCMRE_CACHE=/tmp/bundle/cache OMP_NUM_THREADS=1 PYTHONPATH=src \
  python3 -m rocmre train --config configs/mnre_roc.yaml --quiet --output-dir /tmp/mnre/roc_fp32-s1 \
  --set seed=1 --set model.text_backbone=/tmp/bundle/minilm-l6 --set train.mixed_precision=no \
  --set train.group_by_length=false --set train.description_refresh_steps=1 --set train.fused_optimizer=false \
  > /tmp/mnre/roc_fp32-s1.log 2>&1 ) &
# ... ROC and the classifier, 3 seeds each (the canonical configs)
python3 benchmarks/mnre.py --bundle /tmp/bundle --jobs 6 --seeds 1,2,3 --variants roc,classifier \
  --out-root /tmp/mnre --results "$OUT/results"
wait
# 2. (a second call on the same warm machine) the two recipe rows, then every row scored together
python3 benchmarks/mnre.py --bundle /tmp/bundle --jobs 6 --seeds 1,2,3 \
  --add-variant 'roc_frozen_descriptions=configs/mnre_roc.yaml;model.freeze_description_encoder=true' \
  --variants roc,classifier,roc_name_swap,roc_frozen_descriptions --out-root /tmp/mnre --results "$OUT/results"
cd /tmp/mnre && tar czf "$OUT/runs.tgz" --exclude='*.safetensors' --exclude='*.pt' --exclude='text_encoder' \
  --exclude='checkpoints' .
