"""A split of records, with its label set and the problems met while reading it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rocmre.data.record import DataFormatError, RelationRecord


@dataclass
class LabelSet:
    """Ordered relation labels with an explicitly named negative (no-relation) label."""

    labels: list[str]
    negative_label: str

    def __post_init__(self) -> None:
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("duplicate labels in label set")
        if self.negative_label not in self.labels:
            raise ValueError(f"negative label {self.negative_label!r} is not among the labels {self.labels}")

    def __len__(self) -> int:
        return len(self.labels)

    def __contains__(self, label: object) -> bool:
        return label in self.labels


@dataclass
class Problem:
    """A bad input that was skipped (never silently): where it was and why."""

    source: str
    message: str


@dataclass
class RelationDataset(Sequence[RelationRecord]):
    """The records of one split, in file order; ``source`` is the file they were read from (when known)."""

    records: list[RelationRecord]
    labels: LabelSet | None = None
    name: str = ""
    split: str = ""
    problems: list[Problem] = field(default_factory=list)
    source: str = ""

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return RelationDataset(self.records[i], self.labels, self.name, self.split, list(self.problems),
                                   self.source)
        return self.records[i]

    def __iter__(self) -> Iterator[RelationRecord]:
        return iter(self.records)

    @property
    def num_with_image(self) -> int:
        return sum(r.has_image for r in self.records)

    def label_counts(self) -> Counter[str]:
        return Counter(r.relation for r in self.records if r.relation is not None)

    def filter(self, keep) -> RelationDataset:
        """Records for which ``keep(record)`` is true (each record carries its own image reference)."""
        return RelationDataset([r for r in self.records if keep(r)], self.labels, self.name, self.split,
                               list(self.problems), self.source)

    def require_nonempty(self, split: str | None = None, source: str | Path | None = None) -> RelationDataset:
        """Return ``self``, or raise :class:`DataFormatError` saying which split of which file has no records.
        ``split`` and ``source`` default to the dataset's own; the message counts the bad lines that were skipped."""
        if self.records:
            return self
        split = split or self.split
        where = str(source or self.source or "")
        if not where and self.problems:
            where = self.problems[0].source.rpartition(":")[0] or self.problems[0].source
        what = f"the {split} split" if split else "the data file"
        if self.problems:
            n = len(self.problems)
            detail = f": {n} bad line{'s' if n != 1 else ''} skipped (first: {self.problems[0].message})"
        else:
            detail = ": the file holds no records (nothing to train or evaluate on)"
        raise DataFormatError(f"{what} has no records{detail}", where or self.name or None)

    def check_labels(self, on_error: str = "raise") -> None:
        """Raise if a record's relation is not in the label set; with ``on_error="skip"`` drop such records
        and record each as a :class:`Problem` instead."""
        if self.labels is None:
            return
        kept: list[RelationRecord] = []
        for r in self.records:
            if r.relation is not None and r.relation not in self.labels:
                path, _, line = r.source.rpartition(":")
                err = DataFormatError(
                    f"relation {r.relation!r} is not in the label map ({len(self.labels)} labels)",
                    path or r.source, int(line) if line.isdigit() else None, "relation")
                if on_error == "raise":
                    raise err
                self.problems.append(Problem(r.source, str(err)))
            else:
                kept.append(r)
        self.records = kept
