#!/usr/bin/env bash
# The main job: installs rocmre, trains ROC on MNRE briefly (under 10 minutes on 2 CPU cores), evaluates it on
# the test split and predicts one new example with its explanation.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export ROCMRE_DATA=${ROCMRE_DATA:-$(cd .. && pwd)/shared/data}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
R=.venv/bin/rocmre
$R data stats mnre/RE_data
$R train --config configs/quickstart.yaml
$R evaluate --model runs/quickstart --split test
.venv/bin/python - <<'PY'
from rocmre import RelationExtractor

m = RelationExtractor.from_pretrained("runs/quickstart")
p = m.predict("Rafael Nadal gets engaged to girlfriend of 14 years , Mery Perello", head="Rafael Nadal",
              tail="Mery Perello", top_k=3)
print(f"\n{p.head['name']} [{p.head['type']}] -> {p.tail['name']} [{p.tail['type']}]: {p.relation} "
      f"(score {p.score:.3f})")
print(f"  because it matches: {p.description!r}")
for c in p.top_k:
    print(f"  {c.relation:32s} {c.score:.3f}  {c.description}")
PY
echo
echo "Full training (about 6 epochs): .venv/bin/rocmre train --config configs/mnre_roc.yaml"
echo "All benchmarks: .venv/bin/python benchmarks/suite.py --jobs 1"
