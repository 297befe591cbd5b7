"""``rocmre predict`` on a small JSONL file with bad lines: aligned output in skip mode, a located error in
fail mode, and the same numbers as the Python API."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from rocmre.cli import app
from rocmre.inference.extractor import PairInput, RelationExtractor

GOOD = [
    {"tokens": ["Tennis", "star", "Rafael", "Nadal", "gets", "engaged", "to", "Mery", "Perello"],
     "head": {"name": "Rafael Nadal", "start": 2, "end": 4}, "tail": {"name": "Mery Perello", "start": 7, "end": 9},
     "image": "images/post.jpg", "id": "nadal"},
    {"text": "Barack Obama visited Paris with Michelle Obama", "head": "Barack Obama", "tail": "Paris"},
    {"text": "Barack Obama visited Paris", "head": {"char_start": 0, "char_end": 12},
     "tail": {"name": "Paris", "type": "location"}},
    {"text": "Angela Merkel , chancellor of Germany", "head": {"name": "Angela Merkel", "start": 0, "end": 2},
     "tail": {"name": "Germany", "start": 5, "end": 6}},
    {"tokens": ["a", "man", "in", "Paris"], "head": {"name": "Paris", "start": 3, "end": 4},
     "tail": {"name": "man", "box": [0.5, 0.5, 0.4, 0.6]}, "image": "images/post.jpg"},
]
# the pairs as the Python API takes them (token offsets with a "text" count the tokens of the one tokenisation rule,
# the same in both)
API_PAIRS = [
    ("nadal", GOOD[0]["tokens"], GOOD[0]["head"], GOOD[0]["tail"], True),
    (None, GOOD[1]["text"], "Barack Obama", "Paris", False),
    (None, GOOD[2]["text"], (0, 12), {"name": "Paris", "type": "location"}, False),
    (None, GOOD[3]["text"], GOOD[3]["head"], GOOD[3]["tail"], False),
    (None, GOOD[4]["tokens"], GOOD[4]["head"], GOOD[4]["tail"], True),
]


def write_input(folder: Path, image: Path) -> Path:
    """Good lines 1, 2, 4, 6, 8; bad lines 3 (JSON), 5 (no head), 7 (absent entity), 9 (missing image), 10 (blank)."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    shutil.copy(image, folder / "images" / "post.jpg")
    lines = [
        json.dumps(GOOD[0]), json.dumps(GOOD[1]), "{not json",
        json.dumps(GOOD[2]), json.dumps({"text": "Barack Obama visited Paris", "tail": "Paris"}),
        json.dumps(GOOD[3]), json.dumps({"text": "Barack Obama visited Paris", "head": "Angela Merkel",
                                         "tail": "Paris"}),
        json.dumps(GOOD[4]), json.dumps({**GOOD[1], "image": "images/missing.jpg"}), "",
    ]
    path = folder / "pairs.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory: pytest.TempPathFactory, mnre_root: Path) -> Path:
    image = next(iter(sorted((mnre_root / "img_org" / "test").glob("*.jpg"))))
    return write_input(tmp_path_factory.mktemp("predict-cli"), image)


def run_cli(*args: str) -> Any:
    return CliRunner().invoke(app, ["predict", *args], catch_exceptions=False)


def api_predictions(model: Path, cache_dir: Path, pairs_file: Path, top_k: int, batch_size: int) -> list[dict]:
    ex = RelationExtractor.from_pretrained(model, cache_dir=cache_dir)
    image = pairs_file.parent / "images" / "post.jpg"
    items = [PairInput(text, head, tail, image if with_image else None)
             for _, text, head, tail, with_image in API_PAIRS]
    return [p.to_dict() for p in ex.predict_batch(items, batch_size=batch_size, top_k=top_k)]


def test_skip_mode_writes_aligned_output(tiny_roc_dir: Path, cache_dir: Path, pairs_file: Path,
                                         tmp_path: Path) -> None:
    out = tmp_path / "out" / "preds.jsonl"
    result = run_cli("--model", str(tiny_roc_dir), "--input", str(pairs_file), "--output", str(out),
                     "--top-k", "4", "--batch-size", "8", "--cache-dir", str(cache_dir))
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["line"] for r in rows] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]  # output line i answers input line i
    errors = {r["line"]: r for r in rows if "error" in r}
    assert set(errors) == {3, 5, 7, 9, 10}
    assert errors[10] == {"line": 10, "error": "blank line"}
    assert "invalid JSON" in errors[3]["error"]
    assert errors[5]["field"] == "head" and "missing" in errors[5]["error"]
    assert errors[7]["field"] == "head" and "Angela Merkel" in errors[7]["error"]
    assert errors[9]["field"] == "image" and "missing.jpg" in errors[9]["error"]
    preds = [r for r in rows if "error" not in r]
    assert preds[0]["id"] == "nadal" and preds[0]["has_image"] and len(preds[0]["top_k"]) == 4
    assert preds[4]["tail"]["box"] == [0.5, 0.5, 0.4, 0.6]
    assert "5 predicted, 5 skipped" in result.stderr
    assert "pairs.jsonl:7" in result.stderr and "Angela Merkel" in result.stderr
    # the CLI gives the Python API's numbers
    expected = api_predictions(tiny_roc_dir, cache_dir, pairs_file, top_k=4, batch_size=8)
    assert [{k: v for k, v in r.items() if k not in ("line", "id")} for r in preds] == expected


def test_fail_mode_stops_at_the_bad_line(tiny_roc_dir: Path, cache_dir: Path, pairs_file: Path,
                                         tmp_path: Path) -> None:
    result = run_cli("--model", str(tiny_roc_dir), "--input", str(pairs_file), "--output",
                     str(tmp_path / "preds.jsonl"), "--fail-on-bad-line", "--quiet", "--cache-dir", str(cache_dir))
    assert result.exit_code != 0
    assert "pairs.jsonl:3" in result.stderr and "invalid JSON" in result.stderr
    # with the JSON line fixed, the next bad line is named with its field
    fixed = pairs_file.parent / "fixed.jsonl"
    fixed.write_text("\n".join(line for i, line in enumerate(pairs_file.read_text().splitlines(), 1) if i != 3),
                     encoding="utf-8")
    result = run_cli("--model", str(tiny_roc_dir), "--input", str(fixed), "--output", str(tmp_path / "p.jsonl"),
                     "--fail-on-bad-line", "--quiet", "--cache-dir", str(cache_dir))
    assert result.exit_code != 0
    assert "fixed.jsonl:4, field 'head'" in result.stderr


def test_missing_image_can_be_ignored(tiny_roc_dir: Path, cache_dir: Path, pairs_file: Path, tmp_path: Path) -> None:
    only = tmp_path / "one.jsonl"
    only.write_text(pairs_file.read_text().splitlines()[8] + "\n", encoding="utf-8")
    out = tmp_path / "one-preds.jsonl"
    result = run_cli("--model", str(tiny_roc_dir), "--input", str(only), "--output", str(out),
                     "--missing-image", "ignore", "--quiet", "--cache-dir", str(cache_dir))
    assert result.exit_code == 0, result.output
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["line"] == 1 and row["has_image"] is False
    assert "1 predicted, 0 skipped" in result.stderr


def test_descriptions_file_replaces_the_relation_set(tiny_roc_dir: Path, cache_dir: Path, pairs_file: Path,
                                                     tmp_path: Path) -> None:
    from rocmre.descriptions.store import RelationDescriptions

    keep = ["None", "/per/per/couple", "/per/loc/place_of_residence"]
    descriptions = tmp_path / "three.json"
    RelationDescriptions.load(tiny_roc_dir / "descriptions.json").subset(keep).save(descriptions)
    out = tmp_path / "preds.jsonl"
    result = run_cli("--model", str(tiny_roc_dir), "--input", str(pairs_file), "--output", str(out), "--top-k", "10",
                     "--descriptions", str(descriptions), "--quiet", "--cache-dir", str(cache_dir))
    assert result.exit_code == 0, result.output
    preds = [json.loads(line) for line in out.read_text().splitlines() if "error" not in json.loads(line)]
    assert len(preds) == 5
    assert all(sorted(c["relation"] for c in p["top_k"]) == sorted(keep) for p in preds)


def test_type_prior_switch_api_and_cli(tiny_roc_dir: Path, cache_dir: Path, tmp_path: Path):
    """``type_prior`` costs each relation ``type_penalty`` per contradicted side; ``--type-prior`` gives the same."""
    plain = RelationExtractor.from_pretrained(tiny_roc_dir, cache_dir=cache_dir, type_prior=False)
    prior = RelationExtractor.from_pretrained(tiny_roc_dir, cache_dir=cache_dir, type_prior=True)
    assert prior.decision.type_prior and not plain.decision.type_prior and prior.runtime.decision_rule.type_constraint
    n = len(prior.relations)
    args = ("Barack Obama met Angela Merkel", "Barack Obama", "Angela Merkel")
    kw = {"head_type": "person", "tail_type": "person", "top_k": n}
    a = {c.relation: c.score for c in plain.predict(*args, **kw).top_k}
    b = {c.relation: c.score for c in prior.predict(*args, **kw).top_k}
    penalty = prior.decision.type_penalty
    sig = prior.model.descriptions.relations
    for rel in a:
        if rel == prior.model.config.negative_label:
            continue  # None: margin only
        bad = sum(bool(t) and "person" not in t for t in (sig[rel].head_types, sig[rel].tail_types))
        assert b[rel] == pytest.approx(a[rel] - penalty * bad, abs=1e-5), rel
    pairs = tmp_path / "pair.jsonl"
    pairs.write_text(json.dumps({"text": args[0], "head": {"name": args[1], "type": "person"},
                                 "tail": {"name": args[2], "type": "person"}}) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(app, ["predict", "--model", str(tiny_roc_dir), "--input", str(pairs), "--output",
                                      str(out), "--type-prior", "--top-k", str(n), "--quiet", "--cache-dir",
                                      str(cache_dir)])
    assert result.exit_code == 0, result.output
    line = json.loads(out.read_text(encoding="utf-8").splitlines()[0])
    cli = {c["relation"]: c["score"] for c in line["top_k"]}
    assert cli == pytest.approx(b, abs=1e-5)


def test_type_prior_refused_on_a_classifier(tiny_cls_dir: Path, cache_dir: Path):
    with pytest.raises(TypeError, match="ROC"):
        RelationExtractor.from_pretrained(tiny_cls_dir, cache_dir=cache_dir, type_prior=True)
