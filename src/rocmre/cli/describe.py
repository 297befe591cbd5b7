"""``rocmre describe``: generate relation descriptions with an LLM and write a descriptions file."""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import typer

from rocmre.descriptions.generate import Example

_NEGATIVE = {"mnre": "None", "more": "none"}
_TRAIN_FILES = ("mnre/RE_data/txt/ours_train.txt", "RE_data/txt/ours_train.txt")


def find_train_file(data_dir: str | Path | None) -> Path | None:
    """The MNRE training file under ``data_dir`` (or ``$ROCMRE_DATA``), or ``None``."""
    root = data_dir or os.environ.get("ROCMRE_DATA")
    if not root:
        return None
    for rel in _TRAIN_FILES:
        f = Path(root) / rel
        if f.is_file():
            return f
    return None


_SPLIT_FILE = re.compile(r"(?:ours|mnre)_(train|val|valid|dev|test) ?\.txt")


def read_examples(path: str | Path, labels: Sequence[str], per_label: int = 20,
                  seed: int = 0) -> dict[str, list[Example]]:
    """Up to ``per_label`` (sentence, head, tail) examples per label from an MNRE split file (fixed-seed shuffle)."""
    from rocmre.data.mnre import read_mnre

    path = Path(path)
    match = _SPLIT_FILE.fullmatch(path.name)
    if match is None:
        raise ValueError(f"{path}: not an MNRE split file (expected ours_{{train,val,test}}.txt or "
                         "mnre_{train,val,test}.txt)")
    dataset = read_mnre(path.parent, match.group(1))
    if dataset.records and Path(dataset.records[0].source.rpartition(":")[0]) != path:
        raise ValueError(f"{path}: another split file in the same folder is read first "
                         f"({dataset.records[0].source.rpartition(':')[0]}); move one of them")
    wanted = set(labels)
    found: dict[str, list[Example]] = {}
    for record in dataset:
        if record.relation in wanted:
            found.setdefault(record.relation, []).append((record.text, record.head.name, record.tail.name))
    rng = random.Random(seed)
    out = {}
    for rel, exs in found.items():
        rng.shuffle(exs)
        out[rel] = exs[:per_label]
    return out


def read_labels(path: str | Path) -> list[str]:
    """Labels from a file: a JSON list, or one label per line (``#`` comments and blanks skipped)."""
    text = Path(path).read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        data = json.loads(text)
        if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
            raise typer.BadParameter(f"{path}: expected a JSON list of label strings")
        return data
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def describe(
    dataset: str = typer.Option(None, "--dataset", help="Built-in label set: mnre or more."),
    labels_file: Path = typer.Option(None, "--labels", help="Labels file: one per line, or a JSON list."),
    negative_label: str = typer.Option(None, "--negative-label", help="Negative label (default: dataset's)."),
    backend: str = typer.Option("local", "--backend", help="openai or local."),
    model: str = typer.Option(None, "--model", help="Model name (openai) or HF id/folder (local)."),
    base_url: str = typer.Option(None, "--base-url", help="OpenAI-compatible endpoint (or OPENAI_BASE_URL)."),
    api_key: str = typer.Option(None, "--api-key", help="API key (or OPENAI_API_KEY)."),
    n: int = typer.Option(5, "--n", min=1, help="Descriptions per relation."),
    examples: int = typer.Option(3, "--examples", min=0, help="Training examples shown per prompt."),
    data_dir: Path = typer.Option(None, "--data-dir", help="Folder with MNRE data (or ROCMRE_DATA)."),
    seed: int = typer.Option(0, "--seed", help="Seed for sampling and example choice."),
    temperature: float = typer.Option(0.0, "--temperature", min=0.0, help="0 = greedy."),
    max_attempts: int = typer.Option(None, "--max-attempts", min=1, help="Calls per relation (default 4n)."),
    max_new_tokens: int = typer.Option(48, "--max-new-tokens", min=1),
    retries: int = typer.Option(4, "--retries", min=0, help="Retries of a failed endpoint call."),
    threads: int = typer.Option(None, "--threads", min=1, help="CPU threads for the local model."),
    out: Path = typer.Option(None, "--out", help="Output descriptions file."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the prompts, call no model."),
    cache_dir: Path = typer.Option(None, "--cache-dir", help="Cache folder (default ROCMRE_CACHE or "
                                                              "~/.cache/rocmre)."),
) -> None:
    """Generate natural-language descriptions for relation labels with an LLM."""
    from tqdm import tqdm

    from rocmre.descriptions.backends import LLMError, make_backend
    from rocmre.descriptions.generate import GenerationConfig, format_prompt, generate_descriptions
    from rocmre.descriptions.store import load_builtin

    if (dataset is None) == (labels_file is None):
        raise typer.BadParameter("give exactly one of --dataset or --labels")
    if dataset is not None:
        if dataset not in _NEGATIVE:
            raise typer.BadParameter(f"unknown dataset {dataset!r}; expected mnre or more")
        labels = load_builtin(dataset).labels
        neg = negative_label or _NEGATIVE[dataset]
        name = f"{dataset}-llm"
    else:
        labels = read_labels(labels_file)
        neg = negative_label if negative_label is not None else next(
            (lab for lab in labels if lab.lower() in ("none", "no_relation", "na")), None)
        name = labels_file.stem
    if not labels:
        raise typer.BadParameter("no labels to describe")
    if backend not in ("openai", "local"):
        raise typer.BadParameter(f"unknown backend {backend!r}; expected openai or local")

    pool: Mapping[str, Sequence[Example]] = {}
    train = find_train_file(data_dir)
    if examples > 0 and train is not None:
        try:
            pool = read_examples(train, [lab for lab in labels if lab != neg], seed=seed)
        except (ValueError, OSError) as e:  # DataFormatError is a ValueError naming the file and line
            typer.echo(f"error: cannot read training examples: {e}", err=True)
            raise typer.Exit(2) from None
        typer.echo(f"examples from {train} for {len(pool)} of {len(labels)} relations", err=True)
    elif examples > 0:
        typer.echo("no training data found (--data-dir / ROCMRE_DATA): prompts carry no examples", err=True)

    cfg = GenerationConfig(n=n, k_examples=examples, max_attempts=max_attempts, temperature=temperature,
                           seed=seed, max_new_tokens=max_new_tokens)
    common = dict(config=cfg, examples=pool, negative_label=neg, tail_object=dataset == "more", name=name,
                  cache_dir=cache_dir)
    if dry_run:
        res = generate_descriptions(labels, None, dry_run=True, **common)
        for label, prompts in res.prompts.items():
            typer.echo(f"===== {label}")
            typer.echo(format_prompt(prompts[0]))
        return
    if out is None:
        raise typer.BadParameter("--out is required unless --dry-run")
    try:
        be = make_backend(backend, model=model, base_url=base_url, api_key=api_key, max_retries=retries,
                          model_cache_dir=cache_dir, threads=threads)
        res = generate_descriptions(labels, be, progress=lambda it: tqdm(it, desc="relations", unit="rel"), **common)
    except LLMError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    got = res.descriptions
    for label in labels:
        k = len(got.relations[label].descriptions) if label in got else 0
        if k < n:
            typer.echo(f"shortfall: {label}: {k}/{n} valid descriptions after {res.attempts.get(label)} calls",
                       err=True)
    missing = [lab for lab in labels if lab not in got]
    if neg is not None and neg in missing:
        typer.echo(f"error: no valid description for the negative label {neg!r}; nothing written", err=True)
        raise typer.Exit(1)
    got.save(out)
    total = sum(len(e.descriptions) for e in got.relations.values())
    typer.echo(f"wrote {out}: {total} descriptions for {len(got)} of {len(labels)} relations "
               f"({res.model_calls} model calls, {res.cache_hits} cache hits)")
    if missing:
        typer.echo(f"warning: relations with no description (left out): {missing}", err=True)


def register(app: typer.Typer) -> None:
    """Add ``describe`` to a typer app."""
    app.command("describe")(describe)
