"""The configuration split by role: run config (defaults = the recipe), decision settings apart, the loss a module,
and the configs and model folders of an older rocmre still read."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from pydantic import BaseModel
from safetensors.torch import load_file, save_file

from rocmre.modeling.config import MARKER_WORDS, DecisionConfig, ModelConfig
from rocmre.modeling.losses import ClassificationLoss, RetrievalLoss
from rocmre.training.config import RunConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def leaf_fields(model: BaseModel) -> int:
    return sum(leaf_fields(v) if isinstance(v := getattr(model, name), BaseModel) else 1
               for name in type(model).model_fields)


def test_run_config_is_small_and_its_defaults_are_the_recipe():
    cfg = RunConfig()
    assert leaf_fields(cfg) <= 66  # 60, then relation pre-training: data.corpora (4), train_fraction, init_from
    assert cfg.model.frozen_text_layers == 2 and cfg.model.marker_init == MARKER_WORDS
    assert (cfg.train.epochs, cfg.train.ema_decay, cfg.data.name_swap_prob) == (6.0, 0.998, 0.5)
    assert (cfg.train.mixed_precision, cfg.train.inference_precision, cfg.train.description_refresh_steps) == \
        ("auto", "auto", 16)
    assert ModelConfig(frozen_text_layers=0).marker_init is None
    # the shipped ROC config is the defaults plus its data and output folder
    roc = RunConfig.from_yaml(CONFIGS / "mnre_roc.yaml")
    assert roc.model == cfg.model and roc.train == cfg.train


def test_an_older_run_config_is_read_and_removed_switches_are_refused():
    old = {"model": {"temperature": 0.1, "learnable_temperature": True, "cosine_margin": 0.0,
                     "pair_pair_weight": 0.0, "pair_pair_temperature": 0.1, "description_pooling": "mean",
                     "frozen_word_embeddings": True, "trainable_markers": False, "marker_init": list(MARKER_WORDS),
                     "frozen_text_layers": 2, "use_crops": False, "type_constraint": False, "none_margin": 0.0,
                     "labels": [], "negative_label": "None", "vision_dim": None},
           "train": {"logit_adjustment": 0.0, "class_balance": 0.0, "logit_adjustment_scope": "all"}}
    cfg = RunConfig.model_validate(old)
    assert cfg.train.temperature == 0.1 and cfg.model.max_crops == 0 and cfg.model.frozen_text_layers == 2
    plain = RunConfig.model_validate({"model": {"frozen_word_embeddings": False, "trainable_markers": True}})
    assert plain.model.frozen_text_layers == 0  # the old defaults: nothing frozen
    for section, key, value, match in [("model", "cosine_margin", 0.1, "removed"),
                                       ("model", "learnable_temperature", False, "removed"),
                                       ("train", "class_balance", 0.5, "removed"),
                                       ("model", "type_constraint", True, "set_decision"),
                                       ("model", "trainable_markers", True, "follow from frozen_text_layers")]:
        data = {section: {key: value, **({"frozen_text_layers": 2} if key == "trainable_markers" else {})}}
        with pytest.raises(ValueError, match=match):
            RunConfig.model_validate(data)


def test_decision_config_is_checked_and_frozen():
    d = DecisionConfig()
    with pytest.raises(ValueError, match="type_prior_scope must be one of all, added_vs_trained"):
        DecisionConfig(type_prior_scope="added")
    with pytest.raises(ValueError):
        d.none_margin = 0.1  # frozen: changed through set_decision
    assert DecisionConfig.from_legacy({"type_constraint": True, "none_margin": 0.2}) == \
        DecisionConfig(type_prior=True, none_margin=0.2)


def test_losses_by_hand():
    loss = RetrievalLoss(0.05)
    assert loss.log_inverse_temperature.item() == pytest.approx(math.log(20.0))
    scores, labels = torch.tensor([[0.5, 0.1, -0.2], [0.0, 0.3, 0.4]]), torch.tensor([0, 2])
    logits, value = loss(scores, labels)
    assert torch.allclose(logits, scores * 20.0)
    assert value.item() == pytest.approx(torch.nn.functional.cross_entropy(scores * 20.0, labels).item())
    assert loss(scores)[1] is None
    with torch.no_grad():
        loss.log_inverse_temperature.fill_(10.0)  # the inverse temperature is capped at 100
    assert torch.allclose(loss(scores)[0], scores * 100.0)
    logits, value = ClassificationLoss()(scores, labels)
    assert logits is scores and value.item() == pytest.approx(
        torch.nn.functional.cross_entropy(scores, labels).item())


def test_set_decision_is_saved_apart_and_an_older_model_folder_still_loads(tiny_roc_dir: Path, cache_dir: Path,
                                                                          tmp_path: Path):
    from rocmre.inference.extractor import RelationExtractor

    ex = RelationExtractor.from_pretrained(tiny_roc_dir, cache_dir=cache_dir)
    before = ex.decision
    new = ex.set_decision(type_prior=True, none_margin=0.03)
    assert ex.decision is new and new.type_prior and new.none_margin == 0.03 and before.type_prior is False
    assert ex.runtime.decision_rule.none_margin == 0.03
    with pytest.raises(ValueError, match="extra"):
        ex.set_decision(no_such_setting=1)
    ex.save_pretrained(tmp_path / "new")
    saved = json.loads((tmp_path / "new" / "decision_config.json").read_text(encoding="utf-8"))
    assert saved["type_prior"] is True and "none_margin" not in json.loads(
        (tmp_path / "new" / "config.json").read_text(encoding="utf-8"))
    pair = ("Barack Obama met Angela Merkel", "Barack Obama", "Angela Merkel")
    expected = ex.predict(*pair, top_k=5).to_dict()
    # the same model as an older rocmre saved it: decision settings and removed switches (off) in config.json, the
    # temperature at the top level of the weights
    old = tmp_path / "old"
    shutil.copytree(tmp_path / "new", old)
    (old / "decision_config.json").unlink()
    config = json.loads((old / "config.json").read_text(encoding="utf-8"))
    config.update(type_constraint=True, none_margin=0.03, type_penalty=0.2, type_prior_scope="all",
                  prototype_weight=0.1, cosine_margin=0.0, learnable_temperature=True, temperature=0.05,
                  description_max_length=48, use_crops=True, frozen_word_embeddings=False, trainable_markers=True,
                  marker_init=None)  # the tiny model trains its whole encoder (frozen_text_layers 0)
    (old / "config.json").write_text(json.dumps(config), encoding="utf-8")
    weights = load_file(str(old / "model.safetensors"))
    weights["log_inverse_temperature"] = weights.pop("loss.log_inverse_temperature")
    save_file(weights, str(old / "model.safetensors"))
    loaded = RelationExtractor.from_pretrained(old, cache_dir=cache_dir)
    assert loaded.decision == ex.decision
    assert torch.equal(loaded.model.loss.log_inverse_temperature, ex.model.loss.log_inverse_temperature)
    assert loaded.predict(*pair, top_k=5).to_dict() == expected
