#!/usr/bin/env bash
# How benchmarks/results/h200_mpnet/mnre.{json,md,png} were made on a lent H200 (no package index, no hub):
# mpnet-base (all-mpnet-base-v2), ROC and the classifier with the canonical recipes (names swapped in training),
# 3 seeds each, side by side on the one GPU, each under the same time budget (train.max_minutes).
#
# The weights travel as int8 with a scale per row (benchmarks/offline_bundle.py --int8: sentence vectors of the
# dequantized encoder have cosine 0.9991 with the original's on 64 MNRE sentences); gzipped, the bundle is
# 102 MiB, over the 64 MiB one transfer takes, so it travels in two calls to the same warm machine.
# Here:
#   python benchmarks/offline_bundle.py --out .devcarry/bundle --backbone mpnet-base --fp16 --int8 --no-crops
#   python -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux2014_x86_64 -d .devcarry/part2/wheels pydantic==2.14.4 pydantic-core==2.50.5 \
#       annotated-types typing-inspection typing-extensions
#   mkdir -p .devcarry/part1 && (cd .devcarry && tar czf - bundle | split -b 56m - part1/bundle.tgz.)
#   mv .devcarry/part1/bundle.tgz.ab .devcarry/part2/
# Environment: MAX_MINUTES, the time budget of each run (default 4.5; empty: none, the 6 epochs alone);
# SEEDS, VARIANTS, JOBS; TRAIN_SECONDS, a deadline after which the runs that finished are scored; MNRE_ARGS, more
# mnre.py arguments (a smoke run's, say).
# results/h200_mpnet: the defaults. results/h200_mpnet_steps: MAX_MINUTES= SEEDS=1,2 JOBS=4 (the same steps for both).
# There: first call, carrying .devcarry/part1:   bash benchmarks/gpu_mpnet_h200.sh stage
#        then at once, carrying .devcarry/part2: ROCMRE_COMMIT=<commit> bash benchmarks/gpu_mpnet_h200.sh run
set -u
cd "$(dirname "$0")/.."
KEEP=/tmp/keep
case "${1:-}" in
stage)
  mkdir -p "$KEEP" && cp .devcarry/part1/bundle.tgz.* "$KEEP"/ && ls -la "$KEEP"
  nvidia-smi -L
  python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name(0))"
  ;;
run)
  set -o pipefail
  export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
  [ -f "$KEEP/bundle.tgz.aa" ] || { echo "no $KEEP/bundle.tgz.aa: run the stage call first, on this machine" >&2; exit 1; }
  cat "$KEEP"/bundle.tgz.* .devcarry/part2/bundle.tgz.* | tar xzf - -C /tmp || exit 1
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
    .devcarry/part2/wheels/*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  python3 benchmarks/offline_bundle.py --unpack /tmp/bundle || exit 1
  mkdir -p "$OUT/results" /tmp/mnre
  cap=()
  [ -n "${MAX_MINUTES-4.5}" ] && cap=(--set "train.max_minutes=${MAX_MINUTES-4.5}")
  args=(--bundle /tmp/bundle --backbone mpnet-base --jobs "${JOBS:-6}" --seeds "${SEEDS:-1,2,3}"
        --variants "${VARIANTS:-roc_name_swap,classifier_name_swap}" "${cap[@]}" --out-root /tmp/mnre
        --results "$OUT/results" ${MNRE_ARGS:-})
  # TRAIN_SECONDS: a deadline for training and scoring together; past it, what finished training is scored
  timeout "${TRAIN_SECONDS:-100000}" python3 benchmarks/mnre.py "${args[@]}" 2>&1 | tee "$OUT/mnre.log"
  rc=$?
  if [ "$rc" = 124 ]; then
    echo "deadline: scoring the runs that finished" | tee -a "$OUT/mnre.log"
    python3 benchmarks/mnre.py "${args[@]}" --skip-train --skip-missing 2>&1 | tee -a "$OUT/mnre.log"
    rc=$?
  fi
  (cd /tmp/mnre && tar czf "$OUT/runs.tgz" --exclude='*.safetensors' --exclude='*.pt' --exclude='text_encoder' \
    --exclude='checkpoints' --exclude='checkpoint-*' .)
  exit $rc
  ;;
*)
  echo "usage: $0 stage|run" >&2
  exit 2
  ;;
esac
