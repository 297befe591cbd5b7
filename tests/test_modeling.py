"""The ROC model and the classification baseline: prompts, metrics, training, save/load, MORE, Accelerate."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rocmre.data import read_mnre
from rocmre.data.record import Entity, RelationRecord
from rocmre.evaluation.metrics import evaluate_predictions, micro_prf, ranking_metrics
from rocmre.modeling.features import PairFeaturizer, TypeCache, add_marker_tokens
from rocmre.modeling.prompting import HEAD_END, HEAD_START, MARKERS, TAIL_END, TAIL_START, PromptOptions

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tokenizer():
    from rocmre.backbones.text import load_text_backbone

    tok = load_text_backbone("minilm-l6").tokenizer
    add_marker_tokens(tok)
    return tok


def featurizer(tokenizer, max_length: int, tagger: str = "none", cache: Path | None = None, **prompt):
    return PairFeaturizer(
        tokenizer, max_length=max_length, prompt=PromptOptions(**prompt), type_cache=TypeCache(tagger, cache)
    )


def marker_counts(tokenizer, ids: list[int]) -> dict[str, int]:
    return {m: ids.count(tokenizer.convert_tokens_to_ids(m)) for m in MARKERS}


# -- structural prompts -------------------------------------------------------------------------
def test_prompt_writes_types_and_positions(tokenizer):
    rec = RelationRecord(
        ["Barack", "Obama", "met", "Angela", "Merkel", "in", "Berlin"],
        Entity("Barack Obama", 0, 2, "person"),
        Entity("Berlin", 6, 7, "location"),
        "/per/loc/place_of_residence",
    )
    f = featurizer(tokenizer, 64)([rec])[0]
    text = tokenizer.decode(f.input_ids)
    assert "<h> [ person ] barack obama </h>" in text
    assert "<t> [ location ] berlin </t>" in text
    assert text.startswith("[CLS] the head comes first, a few words apart.")
    assert f.input_ids[f.head_index] == tokenizer.convert_tokens_to_ids(HEAD_START)
    assert f.input_ids[f.tail_index] == tokenizer.convert_tokens_to_ids(TAIL_START)
    plain = featurizer(tokenizer, 64, use_types=False, use_positions=False)([rec])[0]
    assert tokenizer.decode(plain.input_ids) == "[CLS] <h> barack obama </h> met angela merkel in <t> berlin </t> [SEP]"


def test_markers_survive_truncation_at_the_last_token_and_when_nested(tokenizer):
    words = ("lots of words before " * 20).split() + ["Darien", "Lake", "Performing", "Arts", "Center"]
    n = len(words)
    nested = RelationRecord(
        words, Entity("Darien Lake Performing Arts Center", n - 5, n), Entity("Darien Lake", n - 5, n - 3), "None"
    )
    last = RelationRecord(words, Entity("lots", 0, 1), Entity("Center", n - 1, n), "None")
    for rec in (nested, last):
        f = featurizer(tokenizer, 32)([rec])[0]
        assert len(f.input_ids) <= 32
        assert marker_counts(tokenizer, f.input_ids) == dict.fromkeys(MARKERS, 1)
        assert f.input_ids[-1] == tokenizer.sep_token_id
    text = tokenizer.decode(featurizer(tokenizer, 32)([nested])[0].input_ids)
    assert "<h> [ unknown ] <t> [ unknown ] darien lake </t> performing arts center </h>" in text


def test_every_hard_mnre_record_keeps_its_markers(tokenizer, mnre_root):
    """The 134 records whose entity ends at the last token and the 67 with overlapping spans, at a tight length."""
    hard = []
    for split in ("train", "val", "test"):
        for r in read_mnre(mnre_root, split):
            (hs, he), (ts, te) = r.head.span, r.tail.span
            if max(he, te) == len(r.tokens) or (hs < te and ts < he):
                hard.append(r)
    assert len(hard) == 134 + 67 - sum(  # records in both groups are counted once
        1
        for r in hard
        if max(r.head.end, r.tail.end) == len(r.tokens) and r.head.start < r.tail.end and r.tail.start < r.head.end
    )
    for f in featurizer(tokenizer, 40)(hard):
        assert len(f.input_ids) <= 40
        assert marker_counts(tokenizer, f.input_ids) == dict.fromkeys(MARKERS, 1)
        assert f.input_ids.index(tokenizer.convert_tokens_to_ids(HEAD_END)) > f.head_index
        assert f.input_ids.index(tokenizer.convert_tokens_to_ids(TAIL_END)) > f.tail_index


def test_spacy_types_come_from_the_text_not_the_label(tokenizer, tmp_path):
    rec = RelationRecord(
        ["Barack", "Obama", "visited", "Paris"],
        Entity("Barack Obama", 0, 2),
        Entity("Paris", 3, 4),
        "/per/org/member_of",
    )  # a deliberately wrong label
    f = featurizer(tokenizer, 64, "spacy", tmp_path)([rec])[0]
    assert (f.head_type, f.tail_type) == ("person", "location")
    assert (tmp_path / "entity-types" / "spacy.json").is_file()  # cached for the next run


# -- metrics ------------------------------------------------------------------------------------
def test_micro_f1_by_hand_with_the_negative_label():
    gold = ["None", "None", "a", "a", "b", "b"]
    pred = ["None", "a", "a", "None", "b", "a"]
    # predicted positives: a, a, b, a = 4; gold positives: 4; correct positives: a (idx 2), b (idx 4) = 2
    p, r, f = micro_prf(gold, pred, "None")
    assert (p, r) == (0.5, 0.5) and f == pytest.approx(0.5)
    res = evaluate_predictions(gold, pred, "None", ["None", "a", "b"])
    assert res.accuracy == pytest.approx(3 / 6)
    per = {s.relation: s for s in res.per_relation}
    assert per["a"].precision == pytest.approx(1 / 3) and per["a"].recall == pytest.approx(1 / 2)
    assert per["b"].precision == 1.0 and per["b"].recall == 0.5
    assert res.macro_f1 == pytest.approx(np.mean([0.4, 2 / 3]))
    # naming the wrong negative label changes the numbers: it is never guessed
    gold2, pred2 = ["None", "None", "None", "a"], ["None", "None", "a", "a"]
    assert micro_prf(gold2, pred2, "None") == pytest.approx((0.5, 1.0, 2 / 3))
    assert micro_prf(gold2, pred2, "none") == pytest.approx((0.75, 0.75, 0.75))


def test_ranking_metrics_by_hand():
    scores = np.array([[0.9, 0.5, 0.1], [0.2, 0.3, 0.8], [0.1, 0.9, 0.3]])
    h1, h3, mrr = ranking_metrics([0, 1, 2], scores)
    assert h1 == pytest.approx(1 / 3) and h3 == 1.0 and mrr == pytest.approx((1 + 1 / 2 + 1 / 2) / 3)
    assert ranking_metrics([-1], scores[:1]) == (0.0, 0.0, 0.0)  # a relation the model cannot retrieve


def test_none_margin_is_tuned_to_maximise_f1():
    from rocmre.modeling.decision import DecisionRule

    raw = np.array([[0.50, 0.55], [0.50, 0.52], [0.50, 0.60]])
    gold = ["None", "None", "a"]
    rule = DecisionRule(["None", "a"], "None")
    margin, f1 = rule.tune_none_margin(raw, gold, grid=np.array([0.0, 0.07, 0.2]))
    assert margin == pytest.approx(0.07) and f1 == 1.0


# -- training, saving, loading --------------------------------------------------------------------
@pytest.mark.parametrize("fixture", ["tiny_roc_dir", "tiny_cls_dir"])
def test_training_lowers_the_loss(fixture, request):
    folder = request.getfixturevalue(fixture)
    metrics = json.loads((folder / "metrics.json").read_text())
    losses = metrics["results"]["train_loss"]
    assert len(losses) == 9
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    assert (folder / "model.safetensors").is_file() and (folder / "README.md").is_file()
    assert 0.0 <= metrics["val"]["f1"] <= 1.0


@pytest.mark.parametrize("fixture", ["tiny_roc_dir", "tiny_cls_dir"])
def test_save_load_gives_identical_predictions(fixture, request, mnre_root, cache_dir, tmp_path):
    from rocmre.modeling.model import RelationModel
    from rocmre.modeling.runtime import ModelRuntime

    folder = request.getfixturevalue(fixture)
    records = read_mnre(mnre_root, "test").records[:20]
    a = RelationModel.from_pretrained(folder)
    a.save_pretrained(tmp_path / "copy")
    b = RelationModel.from_pretrained(tmp_path / "copy")
    assert a.config == b.config
    ra, rb = ModelRuntime(a, cache_dir), ModelRuntime(b, cache_dir)
    sa = ra.score(ra.featurize(records, with_labels=False)).scores
    sb = rb.score(rb.featurize(records, with_labels=False)).scores
    np.testing.assert_array_equal(sa, sb)
    assert sa.shape == (20, len(a.relation_labels))


def test_evaluate_writes_reports(tiny_roc_dir, tmp_path):
    from typer.testing import CliRunner

    from rocmre.cli import app

    result = CliRunner().invoke(
        app, ["evaluate", "--model", str(tiny_roc_dir), "--split", "val", "--out", str(tmp_path), "--quiet"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "eval_val.json").read_text())
    assert report["records"] == 1624 and report["records_with_image"] == 7
    assert report["overall"]["negative_label"] == "None"
    assert report["overall"]["hits_at_1"] is not None
    assert report["with_image"]["count"] + report["without_image"]["count"] == 1624
    assert (tmp_path / "confusion_val.png").stat().st_size > 1000
    assert "| relation | precision |" in (tmp_path / "eval_val.md").read_text()


def test_evaluate_with_added_relations(tiny_roc_dir, tmp_path):
    """`rocmre evaluate --relations FILE` scores the model with relations added without retraining (the file of
    `rocmre predict --relations`); a bad file fails with its name and nothing is written."""
    from typer.testing import CliRunner

    from rocmre.cli import app

    new = tmp_path / "new.json"
    new.write_text(json.dumps({"/per/per/rival": ["The head person and the tail person compete against each other."],
                               "/per/per/couple": {"descriptions": ["The two persons are married."]}}))
    out = tmp_path / "with_new"
    result = CliRunner().invoke(app, ["evaluate", "--model", str(tiny_roc_dir), "--split", "val", "--relations",
                                      str(new), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "relations added from new.json: 2 (1 new)" in (out / "eval_val.md").read_text().splitlines()[0]
    assert json.loads((out / "eval_val.json").read_text())["records"] == 1624
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"/per/per/rival": {"descriptions": []}}))
    result = CliRunner().invoke(app, ["evaluate", "--model", str(tiny_roc_dir), "--split", "val", "--relations",
                                      str(bad), "--out", str(tmp_path / "bad_out"), "--quiet"])
    assert result.exit_code != 0 and "bad.json" in result.output
    assert not (tmp_path / "bad_out").exists()


def test_type_constraint_lowers_contradicting_relations(tiny_roc_dir):
    from rocmre.modeling.decision import DecisionRule, type_indices
    from rocmre.modeling.model import RelationModel

    m = RelationModel.from_pretrained(tiny_roc_dir)
    m.set_decision(type_prior=True)
    labels = m.relation_labels
    loc = type_indices(["location"])
    out = DecisionRule.from_model(m).decide(np.zeros((1, len(labels))), loc, loc).scores[0]
    assert out[labels.index("/per/org/member_of")] < 0  # a person relation for a location head
    assert out[labels.index("/loc/loc/contain")] == 0
    assert out[labels.index("None")] == 0


def test_type_prior_scope_added_vs_trained_keeps_the_trained_relations(tiny_roc_dir, cache_dir, tmp_path):
    """With type_prior_scope 'added_vs_trained', the trained relations keep the model's scores and only an added
    relation is placed against them with the prior; the trained set comes from config.trained_labels (filled by
    training), or, for a model saved before it, from the added_at_inference provenance that add_relations
    writes."""
    from rocmre.inference.extractor import RelationExtractor
    from rocmre.modeling.decision import DecisionRule, type_indices

    ex = RelationExtractor.from_pretrained(tiny_roc_dir, cache_dir=cache_dir, type_prior=True)
    trained = ex.relations
    assert ex.model.config.trained_labels == trained and not any(ex.model.added_relations())
    ex.add_relations({"/per/org/coached_by": {"descriptions": ["The head is coached by the tail."],
                                              "head_types": ["person"], "tail_types": ["organization"]}})
    labels = ex.model.relation_labels
    loc = type_indices(["location"])

    def penalised() -> set[str]:
        out = DecisionRule.from_model(ex.model).decide(np.zeros((1, len(labels))), loc, loc).scores[0]
        return {lab for lab, v in zip(labels, out, strict=True) if v < 0}

    assert {"/per/org/member_of", "/per/org/coached_by"} <= penalised()  # scope "all"
    raw = np.random.default_rng(0).normal(size=(3, len(labels)))
    ex.set_decision(type_prior_scope="added_vs_trained")
    contest = DecisionRule.from_model(ex.model)
    assert contest.added_relations.tolist() == [lab == "/per/org/coached_by" for lab in labels]
    ex.model.config.trained_labels = []  # a model saved before trained_labels: provenance says what was added
    assert DecisionRule.from_model(ex.model).added_relations.tolist() == contest.added_relations.tolist()
    out = contest.prior_scores(raw, np.repeat(loc, 3), np.repeat(loc, 3))
    new = labels.index("/per/org/coached_by")
    np.testing.assert_allclose(np.delete(out, new, 1), np.delete(raw, new, 1))
    assert not np.allclose(out[:, new], raw[:, new])
    ex.save_pretrained(tmp_path / "contest")
    assert RelationExtractor.from_pretrained(tmp_path / "contest",
                                             cache_dir=cache_dir).decision.type_prior_scope == "added_vs_trained"
    with pytest.raises(ValueError, match="type_prior_scope"):
        ex.set_decision(type_prior_scope="some")


# -- MORE: the tail is an object in the image -------------------------------------------------------
#: Boxes drawn by hand on two MNRE test images (normalised cx, cy, w, h).
NADAL_IMG, CRICKET_IMG = "twitter_19_31_22_54.jpg", "twitter_19_31_0_62.jpg"
NADAL_TOKENS = [
    "Tennis",
    "star",
    "Rafael",
    "Nadal",
    "gets",
    "engaged",
    "to",
    "girlfriend",
    "of",
    "14",
    "years",
    ",",
    "Mery",
    "Perello",
]
CRICKET_TOKENS = ["Rameez", "Raja", "criticizes", "Shadab", "Khan", "after", "flop", "show", "in", "series", "decider"]
OBJECTS = {
    NADAL_IMG: {
        "man in yellow shirt": (0.42, 0.55, 0.66, 0.9),
        "woman kissing him": (0.58, 0.5, 0.34, 1.0),
        "smiling woman on the right": (0.86, 0.62, 0.28, 0.75),
    },
    CRICKET_IMG: {
        "diving cricketer in green": (0.51, 0.56, 0.48, 0.46),
        "standing player in the back": (0.29, 0.39, 0.24, 0.78),
    },
}
MORE_RECORDS = [
    (NADAL_IMG, NADAL_TOKENS, (2, 4), "woman kissing him", "/per/per/partner"),
    (NADAL_IMG, NADAL_TOKENS, (12, 14), "man in yellow shirt", "/per/per/partner"),
    (NADAL_IMG, NADAL_TOKENS, (2, 4), "smiling woman on the right", "none"),
    (NADAL_IMG, NADAL_TOKENS, (2, 4), "man in yellow shirt", "/per/per/alternate_names"),
    (CRICKET_IMG, CRICKET_TOKENS, (3, 5), "diving cricketer in green", "/per/per/alternate_names"),
    (CRICKET_IMG, CRICKET_TOKENS, (0, 2), "diving cricketer in green", "none"),
    (CRICKET_IMG, CRICKET_TOKENS, (0, 2), "standing player in the back", "none"),
]


@pytest.fixture(scope="module")
def more_fixture(mnre_root, tmp_path_factory) -> Path:
    """A MORE-format dataset built from the MNRE images we have, with hand-drawn boxes."""
    root = tmp_path_factory.mktemp("more-e2e")
    labels = ["none", "/per/per/partner", "/per/per/alternate_names"]
    (root / "rel2id.json").write_text(json.dumps({lab: i for i, lab in enumerate(labels)}) + "\n")
    (root / "txt").mkdir()
    for split in ("train", "valid", "test"):
        (root / "img_org" / split).mkdir(parents=True)
        torch.save({k: {n: list(b) for n, b in v.items()} for k, v in OBJECTS.items()}, root / f"ent_{split}_dict.pth")
        for img in OBJECTS:
            shutil.copyfile(mnre_root / "img_org" / "test" / img, root / "img_org" / split / img)
        lines = []
        for img, tokens, (s, e), obj, rel in MORE_RECORDS:
            rec = {
                "img_id": img,
                "token": tokens,
                "h": {"name": " ".join(tokens[s:e]), "pos": [s, e]},
                "t": {"name": obj},
                "relation": rel,
            }
            lines.append(repr(rec))
        (root / "txt" / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def test_more_roc_end_to_end(more_fixture, cache_dir, tmp_path):
    from rocmre.data import read_more
    from rocmre.evaluation.report import evaluate_dataset
    from rocmre.modeling.model import RelationModel
    from rocmre.modeling.runtime import ModelRuntime
    from rocmre.training.config import RunConfig
    from rocmre.training.trainer import train

    cfg = RunConfig.from_yaml(
        REPO / "configs" / "more_roc.yaml",
        [
            f"data.path={more_fixture}",
            f"output_dir={tmp_path / 'more'}",
            f"cache_dir={cache_dir}",
            "model.fusion_layers=1",
            "model.max_length=64",
            "train.epochs=2",
            "train.batch_size=4",
            "train.descriptions_per_relation=1",
        ],
    )
    summary = train(cfg, show_progress=False)
    model = RelationModel.from_pretrained(summary.output_dir)
    assert model.config.negative_label == "none"
    assert set(model.relation_labels) >= {"none", "/per/per/partner", "/per/per/alternate_names"}
    runtime = ModelRuntime(model, cache_dir)
    test = read_more(more_fixture, "test")
    assert all(r.tail.is_object and r.has_image for r in test)
    feats = runtime.featurize(test.records)
    assert all(f.object_box is not None and f.tail_type == "object" for f in feats)
    text = model.tokenizer.decode(feats[0].input_ids)
    assert "in the image : <t> [ object ] woman kissing him </t>" in text
    batch = runtime.collator(feats)
    assert batch["object_mask"].all() and batch["object_has_image"].all()
    ev = evaluate_dataset(runtime, test)
    assert ev.overall.count == len(MORE_RECORDS) and ev.n_with_image == len(MORE_RECORDS)


# -- Accelerate: the same command on 2 processes ---------------------------------------------------
@pytest.mark.skipif(sys.platform != "linux", reason="gloo process group on Linux")
def test_training_runs_on_two_cpu_processes_with_accelerate(mnre_root, cache_dir, tmp_path):
    from conftest import tiny_run_config

    cfg = tiny_run_config("roc", tmp_path / "ddp", cache_dir)
    cfg.train.epochs = 1
    (tmp_path / "run.yaml").write_text(cfg.to_yaml())
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [
        str(accelerate),
        "launch",
        "--multi_gpu",  # with no GPU present, accelerate then runs gloo processes on the CPU (MULTI_CPU)
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "rocmre",
        "train",
        "--config",
        str(tmp_path / "run.yaml"),
        "--quiet",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    # 24 records, batch 8 per process, 2 processes: 2 steps per epoch, 16 examples per step
    assert metrics["timings"]["processes"] == 2
    assert metrics["steps"] == 2
    assert (tmp_path / "ddp" / "model.safetensors").is_file()


def test_relations_without_descriptions_fall_back_to_label_names_or_fail(tmp_path):
    from rocmre.descriptions.store import load_builtin
    from rocmre.training.config import RunConfig
    from rocmre.training.setup import relation_set

    partial = load_builtin("mnre")
    partial.remove("/per/per/alumi")
    partial.save(tmp_path / "partial.json")
    labels = load_builtin("mnre").labels
    cfg = RunConfig.model_validate({"model": {"descriptions": str(tmp_path / "partial.json")}})
    got = relation_set(cfg, labels)
    assert got.labels == labels  # the data's label order is kept
    assert got.texts("/per/per/alumi") == ["/per/per/alumi"]
    assert got.relations["/per/per/alumi"].descriptions[0].provenance["method"] == "label-name"
    cfg.model.missing_descriptions = "error"
    with pytest.raises(ValueError, match="lack relations of the data"):
        relation_set(cfg, labels)
