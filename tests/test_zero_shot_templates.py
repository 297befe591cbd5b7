"""benchmarks/zero_shot_templates.py: the built-in template set, the description sets it compares, and its
aggregation and choice on validation (synthetic rows; the real run needs zero_shot.py's fold models)."""

from __future__ import annotations

import pytest
from conftest import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("zero_shot_templates")


def test_builtin_templates_cover_every_mnre_relation_with_templates():
    from rocmre.descriptions.store import check_template, is_template, load_builtin

    curated, templates = load_builtin("mnre"), load_builtin("mnre_templates")
    assert templates.labels == curated.labels and templates.negative_label == curated.negative_label
    for label in curated.labels:
        texts = templates.texts(label)
        assert len(texts) == 5 and all(is_template(t) for t in texts)
        for t in texts:
            check_template(t)
        assert templates.relations[label].head_types == curated.relations[label].head_types
        assert templates.relations[label].tail_types == curated.relations[label].tail_types


def test_description_sets_keep_signatures_and_join_texts(bench):
    from rocmre.descriptions.store import load_builtin

    curated, templates = load_builtin("mnre"), load_builtin("mnre_templates")
    zero_shot = load_benchmark("zero_shot")  # the benchmark that adds held-out relations with these sets too
    sets = {k: zero_shot.description_set(curated, templates, k) for k in bench.DESCRIPTION_SETS}
    r = "/per/loc/place_of_birth"
    assert sets["curated"].texts(r) == curated.texts(r)
    assert sets["templates"].texts(r) == templates.texts(r)
    assert sets["curated + templates"].texts(r) == curated.texts(r) + templates.texts(r)
    assert all(s.relations[r].tail_types == ["location"] and s.labels == curated.labels for s in sets.values())
    assert set(zero_shot.HELD_OUT_DESCRIPTIONS.values()) <= set(bench.DESCRIPTION_SETS)


def test_aggregate_best_on_validation_and_render(bench):
    def row(fold, kind, val_g, g=0.5):
        return {"fold": fold, "source": "m", "descriptions": kind, "setting": "type prior",
                "unseen_only_top1": 0.6, "generalized_top1": g, "val_unseen_only_top1": 0.6,
                "val_generalized_top1": val_g}

    fold_rows = [row("A", "curated", 0.4), row("B", "curated", 0.6), row("A", "templates", 0.3, g=0.9),
                 row("B", "templates", 0.5, g=0.9), row("A", "curated + templates", 0.5),
                 row("B", "curated + templates", 0.5)]
    rows = bench.aggregate(fold_rows)
    assert [r["descriptions"] for r in rows] == list(bench.DESCRIPTION_SETS)
    assert rows[0]["val_generalized_top1"]["mean"] == pytest.approx(0.5)
    assert rows[0]["val_generalized_top1"]["std"] == pytest.approx(0.1414, abs=1e-4)
    # curated and curated + templates tie on validation (0.5): the curated set is kept; test (0.9) is never read
    assert bench.best_on_validation(rows) == {"`m` type prior": "curated"}
    lines = bench.render({"command": "python x", "commit": "c", "machine": "cpu", "date": "d", "variant": "v",
                          "out_root": "runs", "best_on_validation": bench.best_on_validation(rows), "rows": rows,
                          "fold_rows": fold_rows})
    assert "| `m` | type prior | templates | 60.0 ± 0.0 | 90.0 ± 0.0 | 60.0 ± 0.0 | 40.0 ± 14.1 |" in lines
    assert any("**curated**" in line for line in lines)
