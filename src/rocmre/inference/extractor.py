"""One-line prediction on raw input: ``RelationExtractor.from_pretrained(DIR).predict(text, head, tail, image)``."""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from rocmre.data.inputs import (
    TOKEN_PATTERN,
    EntityInput,
    EntityNotFoundError,
    ImageInput,
    PairInput,
    TextInput,
    as_pair,
    pair_to_record,
    positive_int,
    resolve_entity,
    tokenize,
)
from rocmre.data.record import Entity, RelationRecord
from rocmre.descriptions.store import (
    RELATION_NUMBERS,
    Description,
    RelationDescriptions,
    RelationEntry,
    check_template,
    checked_number,
    example_to_pair,
    fill_template,
    is_template,
)
from rocmre.modeling.config import DecisionConfig
from rocmre.modeling.decision import (
    ABSENT_OFFSET,
    NONE_MARGIN_GRID,
    OFFSET_GRID,
    SecondStageScorer,
    tune_added_offset,
)
from rocmre.modeling.features import PairFeatures
from rocmre.modeling.model import RelationModel
from rocmre.modeling.runtime import ModelRuntime, ModelScores

__all__ = [
    "TOKEN_PATTERN", "EntityInput", "EntityNotFoundError", "ImageInput", "PairInput", "Prediction",
    "RelationCandidate", "RelationExtractor", "TextInput", "resolve_entity", "tokenize",
]


@dataclass
class RelationCandidate:
    relation: str
    score: float
    description: str | None = None


@dataclass
class Prediction:
    """The retrieved relation, its score, the description that matched, and the top-k alternatives."""

    relation: str
    score: float
    description: str | None
    top_k: list[RelationCandidate]
    head: dict[str, Any]
    tail: dict[str, Any]
    has_image: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RelationExtractor:
    """A trained model with everything needed to run it on new sentences and images."""

    def __init__(self, model: RelationModel, cache_dir: str | Path | None = None, *,
                 second_stage: SecondStageScorer | None = None, rerank_top_k: int = 5,
                 precision: str = "fp32") -> None:
        """``second_stage`` plugs a re-ranker into the decision path (see :mod:`rocmre.modeling.decision`).
        ``precision="bf16"`` scores under bfloat16 autocast (faster where the CPU supports it; changes scores
        slightly, so it is opt-in)."""
        self.model = model.eval()
        self.source_dir: Path | None = None  # the model folder it was loaded from (see save_pretrained)
        # new prediction inputs are typed in memory only: the entity-type cache file is never rewritten per call
        self.runtime = ModelRuntime(model, Path(cache_dir) if cache_dir else None, second_stage=second_stage,
                                    rerank_top_k=rerank_top_k, precision=precision, persist_types=False)
        model.example_runtime = self.runtime  # relation examples are featurised like prediction inputs

    @classmethod
    def from_pretrained(cls, directory: str | Path, descriptions: str | Path | RelationDescriptions | None = None,
                        device: str = "cpu", cache_dir: str | Path | None = None,
                        precision: str | None = None, type_prior: bool | None = None,
                        type_prior_scope: str | None = None) -> RelationExtractor:
        """Load a model folder; ``descriptions`` replaces its relation set, ``type_prior``/``type_prior_scope`` its
        decision settings. ``precision``: ``fp32``, ``bf16`` or ``auto``; by default the one it was validated under."""
        from rocmre.backbones.hardware import resolve_precision

        if precision is None:
            precision = _validated_precision(Path(directory))
        if precision not in ("fp32", "bf16", "auto"):
            raise ValueError(f"precision must be 'fp32', 'bf16' or 'auto', not {precision!r}")
        if descriptions is not None and not isinstance(descriptions, RelationDescriptions):
            descriptions = RelationDescriptions.load(descriptions)
        extractor = cls(RelationModel.from_pretrained(directory, descriptions, device), cache_dir,
                        precision=resolve_precision(precision))
        extractor.source_dir = Path(directory)
        extractor.set_decision(type_prior=type_prior, type_prior_scope=type_prior_scope)
        return extractor

    @property
    def decision(self) -> DecisionConfig:
        """How the model's scores become answers (:class:`~rocmre.modeling.config.DecisionConfig`: the type prior,
        the None margin, the prototype weight), saved with the model as ``decision_config.json``; read-only, change
        it with :meth:`set_decision`."""
        return self.model.decision

    def set_decision(self, **changes: Any) -> DecisionConfig:
        """Change decision settings (``None`` keeps one) and return the new ones, e.g.
        ``set_decision(type_prior=True)``; re-tune the None margin after switching the type prior on. Bad values raise
        ``ValueError``/``TypeError``."""
        return self.model.set_decision(**{k: v for k, v in changes.items() if v is not None})

    def save_pretrained(self, directory: str | Path) -> None:
        """The model folder (with the current relation set); the training record of the folder it was loaded
        from (``metrics.json``, ``run_config.yaml``) is carried over, so ``rocmre evaluate`` keeps its config."""
        import shutil

        from rocmre.training.model_card import write_model_card

        directory = Path(directory)
        self.model.save_pretrained(directory)
        source = self.source_dir
        for name in ("metrics.json", "run_config.yaml"):
            if source is not None and (source / name).is_file() and source.resolve() != directory.resolve():
                shutil.copy2(source / name, directory / name)
        write_model_card(directory)

    # -- relations ----------------------------------------------------------------------------
    @property
    def relations(self) -> list[str]:
        return self.model.relation_labels

    def describe_relations(self) -> dict[str, list[str]]:
        """Each relation's descriptions (ROC) or an empty list (classifier)."""
        d = self.model.descriptions
        return {r: (d.texts(r) if r in d else []) for r in self.relations}

    def relation_examples(self) -> dict[str, list[dict[str, Any]]]:
        """Each relation's labelled examples (empty for most; see :meth:`add_relations`)."""
        d = self.model.descriptions
        return {r: ([dict(e) for e in d.relations[r].examples] if r in d else []) for r in self.relations}

    def add_relations(self, relations: Mapping[str, Sequence[str] | Mapping[str, Any]],
                      provenance: Mapping[str, Any] | None = None) -> list[str]:
        """Add relations (or descriptions and examples to existing ones) without retraining; returns the new names.
        ``{name: [descriptions...]}`` or ``{name: {"descriptions", "examples", "head_types", "tail_types",
        "score_offset", "none_margin"}}``; descriptions may be ``{head}``/``{tail}`` templates, examples are pairs in
        the input format of :meth:`predict_batch` (see docs/new-relations.md). A bad entry raises
        ``ValueError``/``TypeError`` naming the relation and index, and nothing changes."""
        current = self.model.descriptions
        parsed = _parse_relations(relations, self.model.config.negative_label, current.labels)
        updated = RelationDescriptions(name=current.name, negative_label=current.negative_label)
        updated.relations = {k: RelationEntry(list(v.descriptions), list(v.head_types), list(v.tail_types),
                                              [dict(e) for e in v.examples], v.score_offset, v.none_margin)
                             for k, v in current.relations.items()}
        added = []
        for name, (texts, head_types, tail_types, examples, numbers) in parsed.items():
            prov = dict(provenance or {"method": "hand", "added_at_inference": True})
            updated.add(name, [Description(t, dict(prov)) for t in texts], head_types=head_types,
                        tail_types=tail_types, examples=examples)
            for key, value in numbers.items():
                updated.set_number(key, name, value)
            if name not in current:
                added.append(name)
        self.model.set_descriptions(updated)
        if any(examples for *_, examples, _ in parsed.values()):
            try:  # prototypes now: the first prediction is not slowed down, and a failure changes nothing
                self.model.prototype_vectors()
            except Exception:
                self.model.set_descriptions(current)
                raise
        return added

    def tune_score_offset(self, records: Sequence[RelationRecord], relations: Iterable[str],
                          max_seen_drop: float = 1.0, kind: str = "score_offset",
                          grid: Sequence[float] | None = None, batch_size: int = 64,
                          show_progress: bool = False) -> tuple[float, float]:
        """Choose and set the ``score_offset`` (or, with ``kind="none_margin"``, the extra None margin) of ``relations``
        closest to zero that costs the other relations at most ``max_seen_drop`` micro-F1 points on labelled
        ``records``. Returns ``(value, drop)``; see :func:`rocmre.modeling.decision.tune_added_offset`."""
        if kind not in RELATION_NUMBERS:
            raise ValueError(f"kind must be one of {RELATION_NUMBERS}, not {kind!r}")
        rels = list(relations)
        unknown = [r for r in rels if r not in self.relations]
        if unknown or not rels:
            raise KeyError(f"unknown relations {unknown}; known: {self.relations}" if unknown
                           else "give at least one relation to tune an offset for")
        if self.model.config.negative_label in rels:
            raise ValueError(f"the negative label {self.model.config.negative_label!r} is decided by the None "
                             f"margin: it takes no {kind}")
        records = list(records)
        gold, scored = self._score_labelled(records, "tune_score_offset", batch_size, show_progress)
        rule = self.runtime.decision_rule
        cols = [rule.labels.index(r) for r in rels]
        store = self.model.descriptions
        stored = {key: np.asarray(store.numbers(key, rule.labels), dtype=np.float64) for key in RELATION_NUMBERS}

        def answers(key: str, value: float) -> list[str]:
            """The answers with ``value`` as the ``key`` of every relation in ``relations``."""
            numbers = dict(stored)
            numbers[key] = stored[key].copy()
            numbers[key][cols] = value
            rule.relation_offsets, rule.relation_none_margins = numbers["score_offset"], numbers["none_margin"]
            return rule.decide(scored.scores, scored.head_types, scored.tail_types, scored.best_description,
                               records).predictions

        before = answers("score_offset", ABSENT_OFFSET)  # as if the relations were not there
        default_grid = OFFSET_GRID if kind == "score_offset" else NONE_MARGIN_GRID
        value, drop = tune_added_offset(lambda v: answers(kind, v), gold, before, set(rels),
                                        self.model.config.negative_label, max_seen_drop,
                                        grid if grid is not None else default_grid)
        for r in rels:  # the decision rule is built from the descriptions at each call: nothing else to refresh
            store.set_number(kind, r, value)
        return value, drop

    def tune_none_margin(self, records: Sequence[RelationRecord], batch_size: int = 64,
                         show_progress: bool = False) -> tuple[float, float]:
        """Tune the None margin again on labelled validation ``records`` with the current decision rule and set it
        (after switching the type prior on, or adding relations). Returns ``(margin, micro-F1)``."""
        records = list(records)
        if not records:
            raise ValueError("tune_none_margin needs labelled records (each with its relation)")
        gold, scored = self._score_labelled(records, "tune_none_margin", batch_size, show_progress)
        margin, f1 = self.runtime.decision_rule.tune_none_margin(
            scored.scores, gold, scored.head_types, scored.tail_types, best_description=scored.best_description,
            records=records)
        self.set_decision(none_margin=margin)
        return margin, f1

    def _score_labelled(self, records: list[RelationRecord], caller: str, batch_size: int,
                        show_progress: bool) -> tuple[list[str], ModelScores]:
        """(gold relations, the model's scores) of labelled ``records``; an unlabelled one is refused, named by
        ``caller``."""
        gold = [r.relation for r in records]
        if any(g is None for g in gold):
            raise ValueError(f"{caller} needs labelled records (each with its relation)")
        feats = self.runtime.featurize(records, with_labels=False, show_progress=show_progress)
        return gold, self.runtime.score(feats, batch_size, show_progress)

    def remove_relations(self, names: Iterable[str]) -> None:
        """Remove relations from retrieval (the negative label cannot be removed)."""
        names = list(names)
        if self.model.config.negative_label in names:
            raise ValueError(f"the negative label {self.model.config.negative_label!r} cannot be removed")
        unknown = [n for n in names if n not in self.relations]
        if unknown:
            raise KeyError(f"unknown relations {unknown}; known: {self.relations}")
        keep = [r for r in self.relations if r not in names]
        self.model.set_descriptions(self.model.descriptions.subset(keep))

    # -- prediction ---------------------------------------------------------------------------
    def predict(self, text: TextInput, head: EntityInput, tail: EntityInput, image: ImageInput = None,
                top_k: int = 3, head_type: str | None = None, tail_type: str | None = None) -> Prediction:
        """The relation from ``head`` to ``tail`` in ``text`` (a string or token list) and ``image``.
        Entities and images take the forms of :mod:`rocmre.data.inputs`; ``top_k`` alternatives are listed. Bad input
        raises ``ValueError``/``TypeError`` naming the argument."""
        return next(self.predict_batch([PairInput(text, head, tail, image, head_type, tail_type)], top_k=top_k))

    def predict_batch(self, items: Iterable[PairInput | Mapping[str, Any]], batch_size: int = 32, top_k: int = 3,
                      show_progress: bool = False, total: int | None = None) -> Iterator[Prediction]:
        """Predictions for many inputs, in order, batched internally and streamed."""
        top_k = positive_int(top_k, "top_k")
        batch_size = positive_int(batch_size, "batch_size")
        return self._stream(items, batch_size, top_k, show_progress, total)

    def _stream(self, items: Iterable[PairInput | Mapping[str, Any]], batch_size: int, top_k: int,
                show_progress: bool, total: int | None) -> Iterator[Prediction]:
        buffer: list[PairInput] = []
        bar = tqdm(total=total, desc="predicting", disable=not show_progress, unit="pair")
        try:
            for item in items:
                buffer.append(as_pair(item))
                if len(buffer) >= batch_size:
                    yield from self._predict_chunk(buffer, top_k)
                    bar.update(len(buffer))
                    buffer = []
            if buffer:
                yield from self._predict_chunk(buffer, top_k)
                bar.update(len(buffer))
        finally:
            bar.close()

    def to_record(self, item: PairInput | Mapping[str, Any]) -> RelationRecord:
        """Resolve an input's text, entities, types and image into a record (raises on bad input; see
        :func:`rocmre.data.inputs.pair_to_record`)."""
        return pair_to_record(item)

    def featurize(self, items: Sequence[PairInput], records: Sequence[RelationRecord] | None = None
                  ) -> tuple[list[RelationRecord], list[PairFeatures]]:
        """The records (``records``: already resolved by :meth:`to_record`) and model features of ``items`` (raises
        on bad input), ready for :meth:`predict_features`."""
        records = [self.to_record(it) for it in items] if records is None else list(records)
        feats = self.runtime.featurize(records, with_labels=False)
        for f, it in zip(feats, items, strict=True):
            f.image = it.image if it.image is None or isinstance(it.image, bytes | Image.Image) else Path(it.image)
        return records, feats

    def _predict_chunk(self, items: list[PairInput], top_k: int) -> list[Prediction]:
        return self.predict_features(*self.featurize(items), top_k)

    def predict_features(self, records: Sequence[RelationRecord], feats: Sequence[PairFeatures], top_k: int
                         ) -> list[Prediction]:
        """Predictions for pairs already featurised by :meth:`featurize`, all in one forward pass."""
        decisions = self.runtime.decide(feats, batch_size=len(feats), records=records)  # the one decision path
        store = self.model.descriptions
        by_name = self.model.config.description_mode != "label_names"
        out = []
        for i, (rec, f) in enumerate(zip(records, feats, strict=True)):
            cands = []
            for c in decisions.top_k(i, top_k):
                text = None
                if c.description_index is not None and by_name and c.label in store:
                    texts = store.texts(c.label)
                    text = texts[c.description_index] if c.description_index < len(texts) else None
                    if text is not None and is_template(text):  # the template as it was scored: filled
                        text = fill_template(text, rec.head.name, rec.tail.name)
                cands.append(RelationCandidate(c.label, c.score, text))
            best = cands[0]
            out.append(Prediction(best.relation, best.score, best.description, cands,
                                  _entity_info(rec.head, f.head_type),
                                  _entity_info(rec.tail, f.tail_type), f.image is not None))
        return out


def _validated_precision(directory: Path) -> str:
    """The inference precision a model folder's run config validated it under (``fp32`` when unknown)."""
    import yaml

    run_file = directory / "run_config.yaml"
    if not run_file.is_file():
        return "fp32"
    try:
        cfg = yaml.safe_load(run_file.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return "fp32"
    value = (cfg.get("train") or {}).get("inference_precision", "fp32") if isinstance(cfg, dict) else "fp32"
    return value if value in ("fp32", "bf16", "auto") else "fp32"


def _entity_info(e: Entity, etype: str) -> dict[str, Any]:
    info: dict[str, Any] = {"name": e.name, "type": etype}
    if e.is_object:
        info["box"] = list(e.box or ())
    else:
        info["start"], info["end"] = e.span
    return info


def _parse_relations(relations: Any, negative_label: str, existing: Collection[str] = ()
                     ) -> dict[str, tuple[list[str], list[str], list[str], list[dict[str, Any]], dict[str, float]]]:
    """``{name: (descriptions, head_types, tail_types, examples, {score_offset, none_margin: as given})}`` from
    :meth:`RelationExtractor.add_relations`' argument, every description template, example and offset checked."""
    if not isinstance(relations, Mapping):
        raise TypeError(f"relations must be a dict of name -> descriptions, got {type(relations).__name__}")
    out: dict[str, tuple[list[str], list[str], list[str], list[dict[str, Any]], dict[str, float]]] = {}
    for name, spec in relations.items():
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"relation names must be non-empty strings, got {name!r}")
        if name == negative_label:
            raise ValueError(f"{name!r} is the negative label: it is decided by the None margin and cannot be given "
                             "descriptions")
        examples: Any = ()
        numbers: dict[str, float] = {}
        if isinstance(spec, Mapping):
            unknown = sorted(str(k) for k in spec if k not in RELATION_KEYS)
            if unknown:
                raise ValueError(f"relation {name!r}: unknown key(s) {unknown}; accepted: {', '.join(RELATION_KEYS)}")
            texts, head_types, tail_types = spec.get("descriptions", []), spec.get("head_types", ()), \
                spec.get("tail_types", ())
            examples = spec.get("examples", ()) or ()
            for key in RELATION_NUMBERS:
                if spec.get(key) is not None:
                    numbers[key] = checked_number(spec[key], f"relation {name!r}: {key}")
        else:
            texts, head_types, tail_types = spec, (), ()
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, Sequence) or (not texts and not (examples and name in existing)):
            raise ValueError(f"relation {name!r}: give at least one description (a non-empty string)")
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"relation {name!r}: descriptions must be strings, got {type(t).__name__}")
            if not t.strip():
                raise ValueError(f"relation {name!r}: empty description")
            try:
                check_template(t)
            except ValueError as e:
                raise ValueError(f"relation {name!r}, description {i}: {e}") from None
        for key, types in (("head_types", head_types), ("tail_types", tail_types)):
            if isinstance(types, str) or not isinstance(types, Sequence):
                raise TypeError(f"relation {name!r}: {key} must be a list of entity types")
        if isinstance(examples, str | Mapping) or not isinstance(examples, Sequence):
            raise TypeError(f"relation {name!r}: examples must be a list of pairs (dicts with text, head, tail)")
        out[name] = (list(texts), list(head_types), list(tail_types),
                     [_checked_example(ex, name, i) for i, ex in enumerate(examples)], numbers)
    return out


#: the keys of a relation given as a dict to :meth:`RelationExtractor.add_relations`
RELATION_KEYS = ("descriptions", "head_types", "tail_types", "examples", *RELATION_NUMBERS)


def _checked_example(example: Any, relation: str, i: int) -> dict[str, Any]:
    """An example as the JSON object stored with the model, resolved once to check it (the one input parser)."""
    where = f"relation {relation!r}, example {i}"
    if isinstance(example, PairInput):
        example = {k: v for k, v in (("text", example.text), ("head", example.head), ("tail", example.tail),
                                     ("image", example.image), ("head_type", example.head_type),
                                     ("tail_type", example.tail_type)) if v is not None}
    if not isinstance(example, Mapping):
        raise TypeError(f"{where}: expected a dict with text (or tokens), head and tail, got "
                        f"{type(example).__name__}")
    example = dict(example)
    image = example.get("image")
    if image is not None:
        if not isinstance(image, str | os.PathLike) or not str(image).strip():
            raise TypeError(f"{where}: image: examples are saved with the model, so an example's image must be a "
                            f"file path, got {type(image).__name__}")
        if not Path(image).is_file():
            raise ValueError(f"{where}: image: file not found: {image}")
        example["image"] = str(Path(image).resolve())
    try:
        example = json.loads(json.dumps(example))  # tuples become lists; only JSON values can be saved
    except (TypeError, ValueError) as e:
        raise TypeError(f"{where}: examples are saved as JSON: {e}") from None
    try:
        pair_to_record(example_to_pair(example))
    except TypeError as e:
        raise TypeError(f"{where}: {e}") from None
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    return example
