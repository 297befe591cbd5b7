"""Per-split statistics of a dataset: records, images present, label counts and problems found."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rocmre.data import detect_format, resolve_data_path
from rocmre.data.dataset import Problem, RelationDataset
from rocmre.data.jsonl import read_jsonl
from rocmre.data.mnre import find_mnre_text, normalise_split, read_mnre
from rocmre.data.more import MORE_SPLITS, read_more
from rocmre.data.record import DataFormatError
from rocmre.data.relation_corpora import CORPORA, corpus_splits, detect_relation_format, read_relation_corpus

DEFAULT_SPLITS = ("train", "val", "test")
#: the public Wikidata relation corpora (one at a time, or ``relations``: all, as the pre-training splits)
RELATION_FORMATS = (*CORPORA, "relations")
FORMATS = ("auto", "mnre", "more", "jsonl", *RELATION_FORMATS)


@dataclass
class SplitStats:
    """What one split holds. ``missing`` says why a split could not be found (its counts are then 0)."""

    split: str
    source: str = ""
    records: int = 0
    with_image: int = 0
    unique_images: int = 0
    unique_images_present: int = 0
    with_crops: int = 0
    label_counts: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    missing: str | None = None

    @property
    def without_image(self) -> int:
        return self.records - self.with_image

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["without_image"] = self.without_image
        d["num_problems"] = len(self.problems)
        return d


@dataclass
class DatasetStats:
    """Statistics of every requested split of one dataset."""

    path: str
    format: str
    negative_label: str | None
    labels: list[str]
    splits: list[SplitStats]

    @property
    def num_problems(self) -> int:
        return sum(len(s.problems) for s in self.splits)

    def split(self, name: str) -> SplitStats:
        for s in self.splits:
            if s.split == name:
                return s
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "format": self.format, "negative_label": self.negative_label,
                "labels": self.labels, "num_problems": self.num_problems,
                "splits": [s.to_dict() for s in self.splits]}


def _jsonl_file(root: Path, split: str) -> Path:
    """``{split}.jsonl`` in a folder of JSONL files (``val`` also as ``valid`` or ``dev``)."""
    names = [split] + ([n for n in ("val", "valid", "dev") if n != split] if split in ("val", "valid", "dev") else [])
    for name in names:
        if (root / f"{name}.jsonl").is_file():
            return root / f"{name}.jsonl"
    raise FileNotFoundError(f"no {split}.jsonl under {root}")


def _read(root: Path, fmt: str, split: str, kwargs: dict[str, Any]) -> RelationDataset:
    if fmt == "mnre":
        return read_mnre(root, split, **kwargs)
    if fmt == "more":
        return read_more(root, split, **kwargs)
    return read_jsonl(root if root.is_file() else _jsonl_file(root, split), **kwargs)


def _check_images(ds: RelationDataset, *, strict: bool, on_error: str) -> set[Path]:
    """Check that every present image decodes (cheaply; ``strict``: fully, raising :class:`DataFormatError` unless
    ``on_error="skip"``); return the unreadable ones."""
    from rocmre.backbones.images import ImageLoadError, check_image

    bad: set[Path] = set()
    checked: dict[Path, str | None] = {}
    for r in ds.records:
        if r.image_path is None:
            continue
        if r.image_path not in checked:
            try:
                check_image(r.image_path, full=strict)
                checked[r.image_path] = None
            except ImageLoadError as e:
                checked[r.image_path] = str(e)
        reason = checked[r.image_path]
        if reason is None:
            continue
        path, _, line = r.source.rpartition(":")
        err = DataFormatError(reason, path or r.source, int(line) if line.isdigit() else None, "img_id")
        if strict and on_error == "raise":
            raise err
        bad.add(r.image_path)
        ds.problems.append(Problem(r.source, f"{err} (treated as missing)"))
    return bad


def split_stats(ds: RelationDataset, split: str, source: str = "", *, strict_images: bool = False,
                on_error: str = "raise") -> SplitStats:
    """Count one read split. Every present image is checked to decode; an unreadable one counts as absent and is
    a problem (with ``strict_images``: fully decoded, and an error unless ``on_error="skip"``)."""
    bad = _check_images(ds, strict=strict_images, on_error=on_error)
    with_image = [r for r in ds.records if r.image_path is not None and r.image_path not in bad]
    counts = Counter(r.relation for r in ds.records if r.relation is not None)
    labels = list(ds.labels.labels) if ds.labels is not None else []
    ordered = {lab: counts.get(lab, 0) for lab in labels}
    ordered.update({lab: n for lab, n in counts.items() if lab not in ordered})
    return SplitStats(
        split=split, source=source, records=len(ds), with_image=len(with_image),
        unique_images=len({r.image_id for r in ds.records if r.image_id is not None}),
        unique_images_present=len({r.image_path for r in with_image}),
        with_crops=sum(bool(r.crop_paths) for r in ds.records),
        label_counts=ordered, problems=list(ds.problems))


def _source_of(root: Path, fmt: str, split: str) -> str:
    try:
        if fmt == "mnre":
            return str(find_mnre_text(root, split))
        if fmt == "more":
            return str(root / "txt" / f"{MORE_SPLITS[split]}.txt")
        return str(root if root.is_file() else _jsonl_file(root, split))
    except (FileNotFoundError, KeyError):
        return ""


def dataset_stats(path: str | Path | None, splits: list[str] | tuple[str, ...] = DEFAULT_SPLITS, *,
                  fmt: str = "auto", negative_label: str | None = None, skip_bad_lines: bool = False,
                  strict_images: bool = False, data_dir: str | Path | None = None) -> DatasetStats:
    """Read and summarise each split of the dataset at ``path`` (looked up in the data folder too).
    Bad lines raise unless ``skip_bad_lines``; unreadable images count as absent (``strict_images``: an error). An
    absent split is reported as ``missing``; all absent raises :class:`FileNotFoundError`."""
    root = resolve_data_path(path, data_dir)
    if not root.exists():
        raise FileNotFoundError(f"{root} does not exist. Point rocmre at a local copy with a path, --data-dir "
                                "or the ROCMRE_DATA variable (or run `rocmre data download mnre --to DIR`).")
    if fmt not in FORMATS:
        raise ValueError(f"unknown data format {fmt!r}; expected one of {', '.join(FORMATS)}")
    fmt = (detect_relation_format(root) or detect_format(root)) if fmt == "auto" else fmt
    if fmt in RELATION_FORMATS:
        return relation_stats(root, fmt, splits, skip_bad_lines=skip_bad_lines)
    if fmt != "jsonl" and root.is_file():
        raise ValueError(f"{root} is a file; the {fmt} format expects a dataset folder")
    on_error = "skip" if skip_bad_lines else "raise"
    kwargs: dict[str, Any] = {"on_error": on_error}
    if negative_label is not None:
        kwargs["negative_label"] = negative_label
    if fmt == "jsonl" and root.is_file():
        splits = [root.stem]
    out: list[SplitStats] = []
    labels: list[str] = []
    negative: str | None = negative_label
    for split in splits:
        name = split if fmt == "jsonl" else normalise_split(split)
        source = _source_of(root, fmt, name)
        try:
            ds = _read(root, fmt, name, kwargs)
        except FileNotFoundError as e:
            out.append(SplitStats(split=name, source=source, missing=str(e)))
            continue
        out.append(split_stats(ds, name, source, strict_images=strict_images, on_error=on_error))
        if ds.labels is not None:
            labels.extend(lab for lab in ds.labels.labels if lab not in labels)
            negative = ds.labels.negative_label
    if out and all(s.missing for s in out):
        raise FileNotFoundError("; ".join(s.missing or "" for s in out))
    return DatasetStats(str(root), fmt, negative, labels, out)


def relation_stats(root: Path, fmt: str, splits: list[str] | tuple[str, ...] = DEFAULT_SPLITS, *,
                   skip_bad_lines: bool = False) -> DatasetStats:
    """Statistics of a relation corpus (its files are its splits; the default splits mean all of them) or of
    ``relations``, all corpora as the pre-training splits ``train`` and ``val`` (see
    :func:`rocmre.data.relation_corpora.load_relation_corpora`)."""
    from rocmre.data.relation_corpora import load_relation_corpora

    on_error = "skip" if skip_bad_lines else "raise"
    if fmt == "relations":
        datasets = load_relation_corpora(root, on_error=on_error)
        names = list(datasets) if tuple(splits) == DEFAULT_SPLITS else list(splits)
        unknown = [s for s in names if s not in datasets]
        if unknown:
            raise ValueError(f"unknown relations split(s) {unknown}; expected train and/or val")
    else:
        names = corpus_splits(fmt) if tuple(splits) == DEFAULT_SPLITS else list(splits)
        datasets = read_relation_corpus(root, fmt, names, on_error=on_error)
    out = [split_stats(datasets[s], s, datasets[s].source, on_error=on_error) for s in names]
    labels: list[str] = []
    for s in names:
        labels.extend(lab for lab in (datasets[s].labels.labels if datasets[s].labels else []) if lab not in labels)
    return DatasetStats(str(root), fmt, "None", labels, out)


def format_stats(stats: DatasetStats, max_problems: int = 20) -> str:
    """A plain-text report: a split table, a label-count table and the problems found."""
    present = [s for s in stats.splits if not s.missing]
    lines = [f"dataset {stats.path} (format {stats.format}, {len(stats.labels)} labels, "
             f"negative label {stats.negative_label!r})", ""]
    header = ["split", "records", "with image", "without image", "images (present/unique)", "with crops", "problems"]
    rows = [[s.split, f"{s.records:,}", f"{s.with_image:,}", f"{s.without_image:,}",
             f"{s.unique_images_present:,}/{s.unique_images:,}", f"{s.with_crops:,}", f"{len(s.problems):,}"]
            for s in present]
    if len(present) > 1:
        rows.append(["total", *(f"{sum(getattr(s, k) for s in present):,}"
                                for k in ("records", "with_image", "without_image")),
                     f"{sum(s.unique_images_present for s in present):,}/{sum(s.unique_images for s in present):,}",
                     f"{sum(s.with_crops for s in present):,}", f"{sum(len(s.problems) for s in present):,}"])
    lines += _table(header, rows)
    for s in stats.splits:
        lines.append(f"{s.split}: not found ({s.missing})" if s.missing else f"{s.split}: {s.source}")
    if present:
        all_labels = list(dict.fromkeys([lab for s in present for lab in s.label_counts]))
        totals = {lab: sum(s.label_counts.get(lab, 0) for s in present) for lab in all_labels}
        all_labels.sort(key=lambda lab: -totals[lab])
        lines += ["", "label counts:"]
        lines += _table(["relation", *(s.split for s in present)],
                        [[lab, *(f"{s.label_counts.get(lab, 0):,}" for s in present)] for lab in all_labels])
    problems = [(s.split, p) for s in present for p in s.problems]
    if problems:
        lines += ["", f"problems ({len(problems)}: bad lines skipped, unreadable images treated as missing):"]
        for split, p in problems[:max_problems]:
            msg = p.message if p.message.startswith(p.source) else f"{p.source}: {p.message}"
            lines.append(f"  [{split}] {msg}")
        if len(problems) > max_problems:
            lines.append(f"  ... and {len(problems) - max_problems} more (use --json for all)")
    return "\n".join(lines)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def fmt(row: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))

    return [fmt(header), "  ".join("-" * w for w in widths), *(fmt(r) for r in rows)]
