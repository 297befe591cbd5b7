"""An experiment's description set (docs/experiments.md, relation pre-training): MNRE's curated descriptions plus,
for each MNRE relation with a Wikidata counterpart (``resources/relations/mnre_wikidata.json``), its first
counterpart's ``"name: description"``, the very text the relation pre-training matched pairs to.

    python benchmarks/wikidata_mnre_descriptions.py runs/mnre_plus_wikidata.json
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402,F401  (puts src/ on the path)


def main(out: str) -> None:
    from rocmre.data.relation_corpora import mnre_counterparts
    from rocmre.descriptions.store import RelationDescriptions
    from rocmre.descriptions.wikidata import load_wikidata_descriptions

    mnre = RelationDescriptions.load("mnre")
    firsts = {label: pids[0] for label, pids in mnre_counterparts().items() if pids and label in mnre}
    wikidata = load_wikidata_descriptions(sorted(set(firsts.values())), templates=False)
    for label, pid in firsts.items():
        mnre.add(label, [d for d in wikidata.relations[pid].descriptions])
    mnre.name = "mnre+wikidata"
    mnre.save(out)
    print(f"wrote {out}: {len(firsts)} relations given their Wikidata counterpart's description")


if __name__ == "__main__":
    main(sys.argv[1])
