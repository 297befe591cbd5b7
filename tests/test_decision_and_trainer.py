"""The one decision path, and a Trainer that checkpoints, resumes and replays exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_run_config
from safetensors.torch import load_file

# -- the decision rule ----------------------------------------------------------------------------


def test_decision_rule_orders_steps_and_top_k():
    from rocmre.modeling.decision import DecisionRule

    rule = DecisionRule(["None", "a", "b"], "None", none_margin=0.1)
    d = rule.decide(np.array([[0.50, 0.55, 0.2], [0.1, 0.2, 0.9]]))
    assert d.predictions == ["None", "b"]  # 0.60 > 0.55 once the margin is added
    top = d.top_k(0, 2)
    assert [c.label for c in top] == ["None", "a"] and top[0].score == pytest.approx(0.6)
    assert d.model_scores[0, 0] == pytest.approx(0.5)  # the model's own score is kept apart
    assert len(d.top_k(1, 0)) == 1  # at least one candidate


def test_top_k_over_thousands_of_relations_matches_a_stable_sort_with_ties():
    from rocmre.modeling.decision import DecisionRule

    labels = ["None"] + [f"r{i}" for i in range(2999)]
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 40, size=(3, 3000)).astype(np.float32) / 40  # many exact ties
    scores[2, 5] = np.nan  # NaN scores fall back to a full sort
    d = DecisionRule(labels, "None").decide(scores)
    for i in range(3):
        for k in (1, 3, 7):
            want = np.argsort(-d.scores[i], kind="stable")[:k]
            assert [c.index for c in d.top_k(i, k)] == want.tolist()


def test_second_stage_scorer_reranks_only_the_top_k():
    from rocmre.modeling.decision import DecisionRule

    calls = []

    def prefer_last(records, labels, candidates, scores):
        calls.append(candidates.copy())
        return np.tile(np.arange(candidates.shape[1], dtype=float), (len(candidates), 1))  # reverse the order

    rule = DecisionRule(["None", "a", "b", "c"], "None", second_stage=prefer_last, rerank_top_k=2)
    d = rule.decide(np.array([[0.5, 0.8, 0.7, 0.0], [0.9, 0.8, 0.7, 0.0]]))
    assert calls[0].tolist() == [[1, 2], [1, 2]]  # the negative label is never re-ranked
    assert d.predictions == ["b", "None"]  # swapped; the None decision stays the first stage's
    assert d.scores[0, 2] == pytest.approx(0.8)  # the block keeps the first stage's best score at its top
    assert d.scores[0, 3] < d.scores[0, 1]  # the rest stays below the re-ranked block
    assert [c.label for c in d.top_k(0, 4)] == ["b", "a", "None", "c"]
    assert [c.label for c in d.top_k(1, 4)] == ["None", "b", "a", "c"]


def test_second_stage_scorer_output_is_checked():
    from rocmre.modeling.decision import DecisionRule

    rule = DecisionRule(["None", "a", "b"], "None", second_stage=lambda r, lab, c, s: np.zeros((1, 1)),
                        rerank_top_k=2)
    with pytest.raises(ValueError, match="shape"):
        rule.decide(np.array([[0.1, 0.2, 0.3]]))
    rule = DecisionRule(["None", "a", "b"], "None", second_stage=lambda r, lab, c, s: np.full(c.shape, np.nan),
                        rerank_top_k=2)
    with pytest.raises(ValueError, match="non-finite"):
        rule.decide(np.array([[0.1, 0.2, 0.3]]))


def test_validation_evaluate_and_predict_batch_agree(tiny_roc_dir, mnre_root, cache_dir):
    """The same records through the validation loop's path, `rocmre evaluate`'s and `predict_batch`'s."""
    from rocmre.data import read_mnre
    from rocmre.evaluation.report import evaluate_dataset
    from rocmre.inference.extractor import PairInput, RelationExtractor

    ex = RelationExtractor.from_pretrained(tiny_roc_dir, cache_dir=cache_dir)
    ex.set_decision(none_margin=0.05)  # a non-zero margin must be applied identically everywhere
    data = read_mnre(mnre_root, "val")
    data.records = [r for r in data.records if not r.has_image][:24]
    # the validation loop: runtime.score + the model's rule
    scored = ex.runtime.score(ex.runtime.featurize(data.records, with_labels=False), 8)
    val = ex.runtime.decision_rule.decide(scored.scores, scored.head_types, scored.tail_types)
    ev = evaluate_dataset(ex.runtime, data, batch_size=8)
    pairs = [PairInput(r.tokens, r.head.span, r.tail.span) for r in data.records]
    preds = list(ex.predict_batch(pairs, batch_size=5, top_k=1))
    assert val.predictions == ev.pred == [p.relation for p in preds]
    np.testing.assert_allclose(val.scores, ev.scores, atol=1e-5)
    got = np.array([p.score for p in preds])
    np.testing.assert_allclose(got, val.scores.max(1), atol=1e-5)


# -- the trainer ----------------------------------------------------------------------------------
def _config(out: Path, cache_dir: Path, **train):
    cfg = tiny_run_config("roc", out, cache_dir)
    cfg.train.epochs = 2
    cfg.train.checkpoint_every = 2
    for k, v in train.items():
        setattr(cfg.train, k, v)
    return cfg


def _results(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())["results"]


KILLER = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from pathlib import Path
from conftest import tiny_run_config
from rocmre.training.config import RunConfig
from rocmre.training.trainer import Trainer, TrainerCallback

class KillAfterFirstSave(TrainerCallback):
    def on_save(self, trainer, state, checkpoint):
        os.kill(os.getpid(), signal.SIGKILL)

cfg = RunConfig.from_yaml({config!r})
Trainer(cfg, show_progress=False, callbacks=[KillAfterFirstSave()]).train()
"""


def test_killed_training_resumes_to_the_same_result(mnre_root, cache_dir, tmp_path):
    from rocmre.modeling.model import RelationModel
    from rocmre.training.trainer import find_latest_checkpoint, train

    full = _config(tmp_path / "full", cache_dir)
    train(full, show_progress=False)
    again = _config(tmp_path / "again", cache_dir)
    train(again, show_progress=False)
    wa, wb = load_file(str(tmp_path / "full" / "model.safetensors")), load_file(str(tmp_path / "again" /
                                                                                   "model.safetensors"))
    assert all((wa[k] == wb[k]).all() for k in wa)  # same seed, same weights

    cut = _config(tmp_path / "cut", cache_dir)
    (tmp_path / "cut.yaml").write_text(cut.to_yaml())
    script = KILLER.format(tests=str(Path(__file__).parent), config=str(tmp_path / "cut.yaml"))
    proc = subprocess.run([sys.executable, "-c", script], env=dict(os.environ), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert find_latest_checkpoint(tmp_path / "cut").name == "checkpoint-2"
    # an interrupted run is not a model
    assert not (tmp_path / "cut" / "config.json").exists()
    with pytest.raises(FileNotFoundError, match="not a rocmre model folder"):
        RelationModel.from_pretrained(tmp_path / "cut")

    summary = train(cut, show_progress=False, resume_from_checkpoint=True)
    assert summary.resumed_from.endswith("checkpoint-2")
    assert _results(tmp_path / "cut") == _results(tmp_path / "full")
    wc = load_file(str(tmp_path / "cut" / "model.safetensors"))
    assert all((wa[k] == wc[k]).all() for k in wa)
    # the newest two checkpoints are kept
    kept = sorted(p.name for p in (tmp_path / "cut" / "checkpoints").iterdir() if p.is_dir())
    assert kept == ["best", "checkpoint-4", "checkpoint-6"]


def test_time_budget_becomes_a_stored_step_budget(mnre_root, cache_dir, tmp_path):
    from rocmre.training.trainer import train

    cfg = _config(tmp_path / "budget", cache_dir, max_minutes=0.15, checkpoint_every=None)
    cfg.train.epochs = 200
    summary = train(cfg, show_progress=False)
    budget = _results(tmp_path / "budget")["budget"]
    assert budget["max_minutes"] == 0.15 and budget["estimated_step_seconds"] > 0
    assert summary.steps == _results(tmp_path / "budget")["total_steps"] == max(1, budget["steps_from_time_budget"])
    assert summary.steps < 600 == budget["epoch_steps"]
    timings = json.loads((tmp_path / "budget" / "metrics.json").read_text())["timings"]
    # the steps' own time, within the run's wall time; the old name stays for earlier readers
    assert 0 < timings["train_step_seconds"] == timings["optimizer_seconds"] <= 60 * timings["train_minutes"]


def test_resume_without_checkpoints_is_a_clear_error(tmp_path, cache_dir):
    from rocmre.training.trainer import Trainer

    with pytest.raises(FileNotFoundError, match="no checkpoint to resume from"):
        Trainer(_config(tmp_path / "none", cache_dir)).train(resume_from_checkpoint=True)


def test_epoch_batches_depend_only_on_seed_and_epoch():
    from rocmre.training.trainer import epoch_batches

    a = epoch_batches(100, 8, seed=3, epoch=1)
    assert a == epoch_batches(100, 8, seed=3, epoch=1) and a != epoch_batches(100, 8, seed=3, epoch=2)
    assert sorted(i for b in a for i in b) == list(range(100))
    lengths = [i % 17 for i in range(100)]
    g = epoch_batches(100, 8, seed=3, epoch=1, lengths=lengths)
    assert sorted(i for b in g for i in b) == list(range(100))
    spread = np.mean([max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in g])
    assert spread < np.mean([max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in a])


def test_speed_and_recipe_switches_train_and_are_recorded(mnre_root, cache_dir, tmp_path, monkeypatch):
    """bf16 autocast, length-grouped batches, descriptions refreshed every 2 steps, fast dropout, a frozen
    description tower, frozen lower text layers and name-swap augmentation together: the run finishes and says what
    it used."""
    from rocmre.modeling.model import RelationModel
    from rocmre.training import trainer as trainer_module
    from rocmre.training.trainer import train

    grouped = []
    real_epoch_batches = trainer_module.epoch_batches

    def spy(*args, **kwargs):
        grouped.append(args[4] if len(args) > 4 else kwargs.get("lengths"))
        return real_epoch_batches(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "epoch_batches", spy)

    cfg = _config(tmp_path / "switches", cache_dir, mixed_precision="bf16", group_by_length=True,
                  description_refresh_steps=2, inference_precision="bf16", checkpoint_every=None,
                  fast_dropout=True)
    cfg.model.freeze_description_encoder = True
    cfg.model.description_projection = "identity"
    cfg.model.frozen_text_layers = 2
    cfg.data.name_swap_prob = 0.5
    train(cfg, show_progress=False)
    assert grouped and all(lengths is not None and min(lengths) < max(lengths) for lengths in grouped)
    results = _results(tmp_path / "switches")
    assert results["precision"] == "bf16" and len(results["train_loss"]) == 6
    m = RelationModel.from_pretrained(tmp_path / "switches")
    assert m.config.freeze_description_encoder
    assert not any(p.requires_grad for p in m.description_encoder.parameters())
    proj = m.description_projection  # identity, frozen, and still the identity after training
    assert m.config.description_projection == "identity" and not proj.weight.requires_grad
    assert torch.equal(proj.weight, torch.eye(proj.in_features)) and not proj.bias.any()
    text = m.encoder.text_model
    assert not any(p.requires_grad for p in text.embeddings.parameters())  # a frozen prefix: markers fixed too
    assert not any(p.requires_grad for p in text.encoder.layer[1].parameters())
    assert all(p.requires_grad for p in text.encoder.layer[2].parameters())


def test_every_text_layer_frozen_trains_the_marker_residual_only(mnre_root, cache_dir, tmp_path):
    """``model.frozen_text_layers`` = all of MiniLM's 6 (zero_shot.py's `roc_mean_pooled_pairs_frozen6`): the
    cached prefix is the whole encoder, no text layer trains, the fusion layers over it do."""
    from rocmre.modeling.model import RelationModel
    from rocmre.training.trainer import train

    cfg = _config(tmp_path / "frozen6", cache_dir, checkpoint_every=None)
    cfg.model.frozen_text_layers = 6
    cfg.model.freeze_description_encoder = True
    cfg.model.description_projection = "identity"
    cfg.model.pair_pooling = "markers_plus_mean"
    train(cfg, show_progress=False)
    assert len(_results(tmp_path / "frozen6")["train_loss"]) == 6
    m = RelationModel.from_pretrained(tmp_path / "frozen6")
    assert m.frozen_prefix_layers == 6
    assert not any(p.requires_grad for p in m.encoder.text_model.encoder.layer.parameters())
    assert any(p.requires_grad for n, p in m.named_parameters() if "fusion" in n)


def test_name_swap_epoch_features_are_seeded(mnre_root, cache_dir, tmp_path):
    from rocmre.training.setup import build_model, load_run_data, make_runtime
    from rocmre.training.trainer import Trainer

    cfg = _config(tmp_path / "swap", cache_dir)
    cfg.data.name_swap_prob = 1.0
    data = load_run_data(cfg, "train", 24)
    model = build_model(cfg, data.labels.labels)
    runtime = make_runtime(model, cfg)
    base = runtime.featurize(data.records)
    t = Trainer(cfg)
    e0 = t._epoch_features(runtime, data, base, 0)
    assert [f.input_ids for f in e0] == [f.input_ids for f in t._epoch_features(runtime, data, base, 0)]
    assert sum(a.input_ids != b.input_ids for a, b in zip(base, e0, strict=True)) > 0
    assert [f.label for f in e0] == [f.label for f in base]


def test_prediction_precision_follows_the_validated_run(tiny_roc_dir, tmp_path, cache_dir):
    import shutil

    import yaml

    from rocmre.backbones.hardware import resolve_precision
    from rocmre.inference.extractor import RelationExtractor

    assert RelationExtractor.from_pretrained(tiny_roc_dir, cache_dir=cache_dir).runtime.precision == "fp32"
    copy = tmp_path / "bf16"
    shutil.copytree(tiny_roc_dir, copy)
    run = yaml.safe_load((copy / "run_config.yaml").read_text())
    run["train"]["inference_precision"] = "bf16"
    (copy / "run_config.yaml").write_text(yaml.safe_dump(run))
    ex = RelationExtractor.from_pretrained(copy, cache_dir=cache_dir)
    assert ex.runtime.precision == "bf16"
    p = ex.predict("Rafael Nadal gets engaged to Mery Perello", "Rafael Nadal", "Mery Perello")
    assert p.relation in ex.relations
    with pytest.raises(ValueError, match="precision must be"):
        RelationExtractor.from_pretrained(copy, precision="int8")
    assert resolve_precision("fp32") == "fp32" and resolve_precision("auto") in ("fp32", "bf16")


def test_cached_frozen_states_train_like_the_full_forward_pass(mnre_root, cache_dir, tmp_path):
    """Fixed markers + 2 frozen text layers: the trainer computes the frozen layers' output once per record and
    reuses it (records whose names were swapped are recomputed); losses and weights match a run that recomputes
    it every step, float rounding aside."""
    from rocmre.modeling.model import RelationModel
    from rocmre.training.trainer import Trainer

    def run(name: str, cache: bool) -> Trainer:
        cfg = _config(tmp_path / name, cache_dir, checkpoint_every=None, cache_frozen_states=cache)
        cfg.model.frozen_text_layers = 2
        cfg.data.name_swap_prob = 0.3
        trainer = Trainer(cfg, show_progress=False)
        trainer.train()
        return trainer

    cached, plain = run("cached", True), run("plain", False)
    assert plain.states_cache is None and not plain.model._prefix_states
    assert cached.model._prefix_states  # the description texts' prefix states are kept too
    # kept: the records met at least once as written (a record swapped in both epochs is never kept)
    assert 20 <= len(cached.states_cache) <= 24 and cached.states_cache.reused > 0
    assert cached.states_cache.computed > 24  # swapped records were computed for their batches
    assert np.allclose(cached.state.losses, plain.state.losses, atol=1e-4)
    wa = load_file(str(tmp_path / "cached" / "model.safetensors"))
    wb = load_file(str(tmp_path / "plain" / "model.safetensors"))
    assert all(torch.allclose(wa[k], wb[k], atol=1e-4) for k in wa)
    model = RelationModel.from_pretrained(tmp_path / "cached")
    assert model.frozen_prefix_layers == 2
    text = model.encoder.text_model
    assert not any(p.requires_grad for p in text.embeddings.parameters())
    model.train()
    assert not text.encoder.layer[1].training and text.encoder.layer[2].training


def test_weight_average_by_hand():
    """``WeightAverage``: the warm-up then the set decay, frozen weights left out, the averaged weights swapped in
    and the current ones restored, and its state saved and restored whole."""
    from rocmre.training.weight_average import WeightAverage

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
    net[1].weight.requires_grad_(False)
    avg = WeightAverage(net, decay=0.5)
    assert avg.names == ["0.weight", "0.bias", "1.bias"]
    start = net[0].weight.detach().clone()
    assert avg.current_decay() == pytest.approx(0.1)  # (1 + 0) / (10 + 0) < 0.5: warm-up
    with torch.no_grad():
        net[0].weight.add_(1.0)
    avg.update()
    torch.testing.assert_close(avg.shadow[0], start + 0.9)
    for _ in range(20):
        avg.update()
    assert avg.current_decay() == 0.5 and avg.updates == 21
    torch.testing.assert_close(avg.shadow[0], start + 1.0)  # converged on the unchanged weights
    with torch.no_grad():
        net[0].weight.add_(2.0)
    avg.update()  # decay 0.5: half-way
    torch.testing.assert_close(avg.shadow[0], start + 2.0)
    with avg.swapped():
        torch.testing.assert_close(net[0].weight.detach(), start + 2.0)
    torch.testing.assert_close(net[0].weight.detach(), start + 3.0)
    other = WeightAverage(net, decay=0.5)
    other.load_state_dict(avg.state_dict())
    assert other.updates == 22 and all(torch.equal(a, b) for a, b in zip(other.shadow, avg.shadow, strict=True))
    with pytest.raises(ValueError, match="does not fit"):
        other.load_state_dict({"0.weight": start})
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        WeightAverage(net, decay=1.0)


def test_the_trainer_keeps_the_weight_average_and_resumes_it(mnre_root, cache_dir, tmp_path):
    """``train.ema_decay``: validation and the saved model use the averaged weights (the checkpoint of the best step
    holds them in ``ema.safetensors`` beside the raw weights); a killed run resumes to the same model."""
    from rocmre.training.trainer import find_latest_checkpoint, train
    from rocmre.training.weight_average import EMA_NAME

    full = _config(tmp_path / "full", cache_dir, ema_decay=0.9, keep_checkpoints=10)
    train(full, show_progress=False)
    results = _results(tmp_path / "full")
    best = tmp_path / "full" / "checkpoints" / f"checkpoint-{results['best_step']}"
    raw, ema = load_file(str(best / "model.safetensors")), load_file(str(best / EMA_NAME))
    model = load_file(str(tmp_path / "full" / "model.safetensors"))
    trained = [k for k in ema if k != "__updates__"]
    assert trained and int(ema["__updates__"]) == results["best_step"]
    assert all(torch.equal(model[k], ema[k]) for k in trained)
    assert any(not torch.equal(model[k], raw[k]) for k in trained)

    cut = _config(tmp_path / "cut", cache_dir, ema_decay=0.9, keep_checkpoints=10)
    (tmp_path / "cut.yaml").write_text(cut.to_yaml())
    script = KILLER.format(tests=str(Path(__file__).parent), config=str(tmp_path / "cut.yaml"))
    proc = subprocess.run([sys.executable, "-c", script], env=dict(os.environ), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert (find_latest_checkpoint(tmp_path / "cut") / EMA_NAME).is_file()
    train(cut, show_progress=False, resume_from_checkpoint=True)
    assert _results(tmp_path / "cut") == results
    resumed = load_file(str(tmp_path / "cut" / "model.safetensors"))
    assert all(torch.equal(model[k], resumed[k]) for k in model)


# -- score offsets of relations added without retraining -------------------------------------------------------------


def test_relation_offsets_come_before_the_type_prior_and_the_margin():
    from rocmre.modeling.decision import DecisionRule

    scores = np.array([[0.30, 0.50, 0.55], [0.10, 0.20, 0.90]])
    plain = DecisionRule(["None", "a", "new"], "None")
    shifted = DecisionRule(["None", "a", "new"], "None", relation_offsets=[0.0, 0.0, -0.1])
    assert plain.decide(scores).predictions == ["new", "new"]
    d = shifted.decide(scores)
    assert d.predictions == ["a", "new"]  # 0.45 < 0.50; 0.80 still first
    assert d.scores[0, 2] == pytest.approx(0.45) and d.model_scores[0, 2] == pytest.approx(0.55)
    assert DecisionRule(["None", "a"], "None", relation_offsets=[0.0, 0.0]).relation_offsets is None  # all 0: off
    with pytest.raises(ValueError, match="relation_offsets"):
        DecisionRule(["None", "a"], "None", relation_offsets=[0.0])


def test_type_prior_added_vs_trained_decides_only_the_contest_with_added_relations():
    """Scope added_vs_trained: an added relation wins exactly where it does with the prior on every relation, and
    elsewhere the trained relations keep their own scores, order and None decision."""
    from rocmre.modeling.decision import DecisionRule

    labels = ["None", "per_per", "per_loc", "new_per_per"]
    # signatures (head, tail) over the types: per_per and new_per_per want person/person, per_loc person/location
    types = ["person", "location", "organization", "misc", "unknown"]
    compat = np.zeros((4, 2, len(types)), dtype=bool)
    compat[0] = True
    compat[[1, 3], 0, 0] = compat[[1, 3], 1, 0] = True
    compat[2, 0, 0] = compat[2, 1, 1] = True
    scores = np.array([
        [0.30, 0.40, 0.50, 0.45],  # tagged person/person: the prior lifts the added relation over per_loc
        [0.30, 0.40, 0.50, 0.20],  # tagged person/person, the added relation far behind: the model's own order
        [0.60, 0.40, 0.50, 0.55],  # tagged person/location: the added relation contradicted, None stays the answer
    ])
    head, tail = np.array([0, 0, 0]), np.array([0, 0, 1])
    added = [False, False, False, True]
    common = {"type_constraint": True, "type_penalty": 0.2, "type_compatibility": compat}
    everywhere = DecisionRule(labels, "None", **common)
    contest = DecisionRule(labels, "None", added_relations=added, **common)
    plain = DecisionRule(labels, "None")
    s = contest.prior_scores(scores, head, tail)
    # trained relations: untouched; the added one: best trained (0.50) + lead with the prior (0.45 - 0.40)
    np.testing.assert_allclose(s[:, :3], scores[:, :3])
    np.testing.assert_allclose(s[:, 3], [0.55, 0.30, 0.50 + (0.35 - 0.50)])
    assert contest.decide(scores, head, tail).predictions == ["new_per_per", "per_loc", "None"]
    # the prior on every relation reorders the trained ones too (row 2: per_per over per_loc)
    assert everywhere.decide(scores, head, tail).predictions == ["new_per_per", "per_per", "None"]
    assert plain.decide(scores).predictions == ["per_loc", "per_loc", "None"]
    # no added relation: the model's own scores
    none_added = DecisionRule(labels, "None", added_relations=[False] * 4, **common)
    np.testing.assert_allclose(none_added.prior_scores(scores, head, tail), scores)
    with pytest.raises(ValueError, match="added_relations has shape"):
        DecisionRule(labels, "None", added_relations=[True], **common)


def test_tune_added_offset_takes_the_offset_closest_to_zero_within_the_drop():
    from rocmre.modeling.decision import DecisionRule, tune_added_offset

    labels = ["None", "seen", "new"]
    # two seen records the new relation steals at offset 0 (by 0.05 and 0.15), one new-relation record, one None
    scores = np.array([[0.1, 0.50, 0.55], [0.1, 0.50, 0.65], [0.1, 0.2, 0.6], [0.9, 0.1, 0.2]])
    gold = ["seen", "seen", "new", "None"]
    rule = DecisionRule(labels, "None")

    def predict(offset: float) -> list[str]:
        rule.relation_offsets = np.array([0.0, 0.0, offset])
        return rule.decide(scores).predictions

    before = predict(-1e6)
    assert before == ["seen", "seen", "seen", "None"]
    # seen micro-F1 before: 2 of 2 right = 1.0; to -0.04 both are stolen (drop 100), from -0.06 to -0.14 one is
    # (1 of 2 predicted relations right, 1 of 2 gold found: F1 0.5, drop 50), from -0.16 none is
    offset, drop = tune_added_offset(predict, gold, before, {"new"}, "None", max_drop=1.0,
                                     grid=[-0.02 * i for i in range(20)])
    assert offset == pytest.approx(-0.16) and drop == pytest.approx(0.0)
    offset, drop = tune_added_offset(predict, gold, before, {"new"}, "None", max_drop=60.0,
                                     grid=[-0.02 * i for i in range(20)])
    assert offset == pytest.approx(-0.06) and drop == pytest.approx(50.0)
    # nothing within the drop: the smallest drop found
    offset, drop = tune_added_offset(predict, gold, before, {"new"}, "None", max_drop=1.0, grid=[0.0, -0.1])
    assert offset == pytest.approx(-0.1) and drop == pytest.approx(50.0)


def test_extra_none_margin_gates_an_added_relation_without_moving_its_rank():
    from rocmre.modeling.decision import DecisionRule

    labels = ["None", "seen", "new"]
    scores = np.array([[0.30, 0.40, 0.45],    # new first but only 0.15 over None: gated, seen answers
                       [0.30, 0.10, 0.45],    # gated, nothing else clears None: None
                       [0.30, 0.40, 0.70]])   # 0.40 over None: answered
    rule = DecisionRule(labels, "None", none_margin=0.0, relation_none_margins=[0.0, 0.0, 0.2])
    d = rule.decide(scores)
    assert d.predictions == ["seen", "None", "new"]
    assert rule.prior_scores(scores, None, None) == pytest.approx(scores)  # the ranking itself is unchanged
    assert d.scores[0, 2] < d.scores[0, 0] and d.scores[2, 2] == pytest.approx(0.70)
    # the None margin counts: with 0.25 of it, the third record's new relation would need 0.7 > 0.3 + 0.25 + 0.2
    assert DecisionRule(labels, "None", none_margin=0.25, relation_none_margins=[0.0, 0.0, 0.2]
                        ).decide(scores).predictions == ["None", "None", "None"]
    assert DecisionRule(labels, "None", relation_none_margins=[0, 0, 0]).relation_none_margins is None
    with pytest.raises(ValueError, match="relation_none_margins"):
        DecisionRule(labels, "None", relation_none_margins=[0.1])


def test_identity_description_projection_needs_matching_widths():
    from torch import nn

    from rocmre.modeling.model import fix_identity

    square = nn.Linear(6, 6)
    fix_identity(square)
    x = torch.randn(3, 6)
    assert torch.allclose(square(x), x) and not any(p.requires_grad for p in square.parameters())
    with pytest.raises(ValueError, match="pair_dim equal to the text encoder's width \\(6\\), got 4"):
        fix_identity(nn.Linear(6, 4))


def test_mean_plus_markers_pooling_starts_at_the_sentence_vector_and_trains(mnre_root, cache_dir, tmp_path):
    """``model.pair_pooling='markers_plus_mean'``: an untrained model's pair vector is the text's mean-pooled states
    (the learned residual starts at zero); training moves the residual, and the switch is saved and reloaded."""
    from rocmre.modeling.fusion import mean_pool
    from rocmre.modeling.model import RelationModel
    from rocmre.training.setup import build_model, load_run_data, make_runtime
    from rocmre.training.trainer import train

    cfg = _config(tmp_path / "mean", cache_dir, checkpoint_every=None)
    cfg.model.pair_pooling = "markers_plus_mean"
    cfg.model.freeze_description_encoder = True
    cfg.model.description_projection = "identity"
    data = load_run_data(cfg, "train", 8)
    model = build_model(cfg, data.labels.labels).eval()
    runtime = make_runtime(model, cfg)
    batch = runtime.collator(runtime.featurize(data.records, with_labels=True))
    with torch.no_grad():
        pair = model.encoder(batch)
        text = model.encoder.text_model(input_ids=batch["input_ids"],
                                        attention_mask=batch["attention_mask"]).last_hidden_state
    torch.testing.assert_close(pair, mean_pool(text, batch["attention_mask"]), atol=1e-4, rtol=1e-4)

    train(cfg, show_progress=False)
    trained = RelationModel.from_pretrained(tmp_path / "mean")
    assert trained.config.pair_pooling == "markers_plus_mean"
    assert trained.encoder.pair[-1].weight.abs().sum() > 0  # the residual moved off zero

    cfg.model.pair_dim = 64  # the residual is added to the sentence vector: widths must match
    with pytest.raises(ValueError, match="pair_pooling"):
        build_model(cfg, data.labels.labels)


def test_random_state_kept_hides_draws_from_the_seeded_streams():
    """Filling an empty cache builds models whose initialisation draws; ``random_state_kept`` keeps those draws
    out of the torch, numpy and Python streams, so a cold-cache run trains exactly as a warm-cache one."""
    import random

    from rocmre.training.trainer import random_state_kept

    def draws() -> tuple:
        return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)]

    torch.manual_seed(5), np.random.seed(5), random.seed(5)
    expected = draws()
    torch.manual_seed(5), np.random.seed(5), random.seed(5)
    with random_state_kept():
        torch.nn.Linear(64, 64), np.random.rand(10), random.random()
    assert draws() == expected
