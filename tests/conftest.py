"""Shared fixtures: the real MNRE data and tiny models trained for a few steps on a slice of it."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

DATA_ROOT = Path(os.environ.get("ROCMRE_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
MNRE_ROOT = DATA_ROOT / "mnre" / "RE_data"
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str) -> ModuleType:
    """A script of ``benchmarks/`` imported as the module ``<name>_benchmark`` (its pure functions are tested)."""
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("ROCMRE_DATA", str(DATA_ROOT))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(scope="session")
def mnre_root() -> Path:
    if not (MNRE_ROOT / "txt" / "ours_train.txt").is_file():
        pytest.skip(f"MNRE not found under {DATA_ROOT} (set ROCMRE_DATA)")
    return MNRE_ROOT


@pytest.fixture(scope="session")
def data_root(mnre_root: Path) -> Path:
    """The folder holding ``mnre/`` ($ROCMRE_DATA); the tests skip when MNRE is absent."""
    return DATA_ROOT


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder for the whole test session (image features, entity types)."""
    return tmp_path_factory.mktemp("rocmre-cache")


def tiny_run_config(model_type: str, output_dir: Path, cache_dir: Path, **model_overrides):
    """A few steps on 24 records, with the plain loop (no frozen prefix, fp32, no name swapping or weight averaging,
    every speed switch off): the tests switch the recipe's settings on where they test them."""
    from rocmre.training.config import RunConfig

    return RunConfig.model_validate({
        "seed": 7,
        "output_dir": str(output_dir),
        "cache_dir": str(cache_dir),
        "data": {"path": str(MNRE_ROOT), "negative_label": "None", "max_train_records": 24,
                 "max_eval_records": 24, "name_swap_prob": 0.0},
        "model": {"model_type": model_type, "fusion_layers": 1, "max_length": 64, "max_crops": 1,
                  "descriptions": "mnre", "frozen_text_layers": 0, **model_overrides},
        "train": {"epochs": 3, "batch_size": 8, "eval_batch_size": 24, "warmup_ratio": 0.0,
                  "descriptions_per_relation": 1, "learning_rate": 2e-4, "head_learning_rate": 2e-3,
                  "mixed_precision": "no", "inference_precision": "fp32", "group_by_length": False,
                  "description_refresh_steps": 1, "fused_optimizer": False, "fast_dropout": False,
                  "ema_decay": None},
    })


@pytest.fixture(scope="session")
def tiny_roc_dir(mnre_root: Path, cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ROC model trained 3 epochs (9 steps) on 24 MNRE records: for API, CLI and service tests (not quality)."""
    from rocmre.training.trainer import train

    out = tmp_path_factory.mktemp("tiny-roc")
    train(tiny_run_config("roc", out, cache_dir), show_progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_cls_dir(mnre_root: Path, cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rocmre.training.trainer import train

    out = tmp_path_factory.mktemp("tiny-cls")
    train(tiny_run_config("classifier", out, cache_dir), show_progress=False)
    return out


@pytest.fixture(scope="module")
def extractor(tiny_roc_dir: Path, cache_dir: Path):
    """The tiny ROC model behind the Python API (one per test module: tests may add relations to it)."""
    from rocmre.inference.extractor import RelationExtractor

    return RelationExtractor.from_pretrained(tiny_roc_dir, cache_dir=cache_dir)


@pytest.fixture(scope="module")
def image_file(mnre_root: Path) -> Path:
    """A real MNRE image."""
    return next(iter(sorted((mnre_root / "img_org" / "test").glob("*.jpg"))))
