"""Relation pre-training (issue 38): the ``relations`` data format trained by the same Trainer, balancing,
low-resource splits, and ``model.init_from`` starting ROC or the classifier from a pre-trained model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rocmre.data.dataset import LabelSet, RelationDataset
from rocmre.data.record import Entity, RelationRecord
from rocmre.data.relation_corpora import cap_per_relation, one_label_per_pair
from rocmre.training.config import RunConfig
from rocmre.training.setup import load_run_data, relation_set, stratified_sample

FIXTURES = Path(__file__).parent / "fixtures" / "relations"


def record(words: str, relation: str, head: tuple[int, int] = (0, 1), tail: tuple[int, int] = (2, 3)) -> RelationRecord:
    tokens = words.split()
    return RelationRecord(tokens, Entity(" ".join(tokens[slice(*head)]), *head),
                          Entity(" ".join(tokens[slice(*tail)]), *tail), relation)


def test_a_pair_with_several_relations_keeps_its_rarest():
    records = [record("Ann met Bob", "P26"), record("Ann met Bob", "P17"), record("Cid saw Dan", "P17"),
               record("Eve saw Fay", "P17"), record("Ann met Bob", "P26", tail=(1, 2))]
    kept = one_label_per_pair(records)
    assert [(" ".join(r.tokens), r.relation, r.tail.span) for r in kept] == [
        ("Ann met Bob", "P26", (2, 3)), ("Cid saw Dan", "P17", (2, 3)), ("Eve saw Fay", "P17", (2, 3)),
        ("Ann met Bob", "P26", (1, 2))]


def test_cap_per_relation_is_seeded_and_keeps_order():
    records = [record(f"A{i} x B{i}", "P17" if i % 4 else "P26") for i in range(20)]
    capped = cap_per_relation(records, 3, seed=1)
    assert sum(r.relation == "P17" for r in capped) == 3 and sum(r.relation == "P26" for r in capped) == 3
    assert capped == cap_per_relation(records, 3, seed=1)
    assert [records.index(r) for r in capped] == sorted(records.index(r) for r in capped)


def test_stratified_sample_keeps_every_relation():
    records = [record(f"A{i} x B{i}", rel) for i, rel in enumerate(["a"] * 30 + ["b"] * 9 + ["c"])]
    data = RelationDataset(records, LabelSet(["None", "a", "b", "c"], "None"))
    kept = stratified_sample(data, 0.1, seed=3)
    assert [records[i].relation for i in kept].count("a") == 3
    assert {records[i].relation for i in kept} == {"a", "b", "c"}
    assert kept == sorted(kept) and kept == stratified_sample(data, 0.1, seed=3)


def pretrain_config(out: Path, cache_dir: Path, **data) -> RunConfig:
    from conftest import tiny_run_config

    cfg = tiny_run_config("roc", out, cache_dir, descriptions="wikidata")
    return cfg.model_copy(update={"data": cfg.data.model_copy(update={
        "path": str(FIXTURES), "format": "relations", "max_train_records": None,
        "corpora": cfg.data.corpora.model_copy(update={"val_fraction": 0.5, "max_per_relation": 50}), **data})})


def test_relations_format_reads_the_corpora_and_describes_them_from_wikidata(cache_dir: Path, tmp_path: Path):
    cfg = pretrain_config(tmp_path, cache_dir)
    train, val = load_run_data(cfg, "train"), load_run_data(cfg, "val")
    assert len(train) and len(val) and train.labels.labels == val.labels.labels
    assert "P26" in train.labels.labels
    described = relation_set(cfg, train.labels.labels)
    assert described.texts("P26") == [described.texts("P26")[0]] and described.texts("P26")[0].startswith("spouse")
    held = cfg.model_copy(update={"data": cfg.data.model_copy(update={"exclude_relations": ["/per/per/couple"]})})
    assert "P26" not in load_run_data(held, "train").labels.labels  # an MNRE relation stands for its counterpart
    with pytest.raises(ValueError, match="'train' and 'val'"):
        load_run_data(cfg, "test")


@pytest.fixture(scope="module")
def pretrained_dir(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rocmre.training.trainer import train

    out = tmp_path_factory.mktemp("pretrained")
    train(pretrain_config(out, cache_dir), show_progress=False)
    return out


@pytest.mark.parametrize("model_type", ["roc", "classifier"])
def test_mnre_training_starts_from_the_pretrained_weights(pretrained_dir: Path, mnre_root: Path, cache_dir: Path,
                                                          tmp_path: Path, model_type: str):
    from conftest import tiny_run_config

    from rocmre.training.setup import build_model

    saved = load_file(str(pretrained_dir / "model.safetensors"))
    cfg = tiny_run_config(model_type, tmp_path, cache_dir, init_from=str(pretrained_dir))
    model = build_model(cfg, ["None", "/per/per/couple", "/per/loc/place_of_birth"])
    own = model.state_dict()
    encoder = [k for k in saved if k.startswith("encoder.text_model.")]
    assert encoder and all(torch.equal(own[k], saved[k]) for k in encoder)
    fresh = [k for k in own if k not in saved or own[k].shape != saved[k].shape]
    assert (model_type == "classifier") == bool(fresh)  # the classifier's head over MNRE labels starts fresh


def test_init_from_refuses_another_architecture(pretrained_dir: Path, mnre_root: Path, cache_dir: Path,
                                                tmp_path: Path):
    from conftest import tiny_run_config

    from rocmre.training.setup import build_model

    cfg = tiny_run_config("roc", tmp_path, cache_dir, init_from=str(pretrained_dir), fusion_layers=2)
    with pytest.raises(ValueError, match="fusion_layers=1"):
        build_model(cfg, ["None", "/per/per/couple"])
    missing = tiny_run_config("roc", tmp_path, cache_dir, init_from=str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="not a rocmre model folder"):
        build_model(missing, ["None", "/per/per/couple"])


def test_shipped_pretraining_configs_are_valid():
    configs = Path(__file__).resolve().parents[1] / "configs"
    pretrain = RunConfig.from_yaml(configs / "relations_pretrain.yaml")
    assert pretrain.data.format == "relations" and pretrain.model.descriptions == "wikidata"
    assert pretrain.model.model_copy(update={"descriptions": "mnre"}) == RunConfig().model  # the same architecture
    fine_tune = RunConfig.from_yaml(configs / "mnre_roc_pretrained.yaml")
    assert fine_tune.model.init_from == pretrain.output_dir
    assert fine_tune.train == RunConfig.from_yaml(configs / "mnre_roc.yaml").train
