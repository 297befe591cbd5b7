"""Structural prompts: entity types and relative position written into the input around the mentions.

``Barack Obama met Angela Merkel`` with head ``Barack Obama`` and tail ``Angela Merkel`` becomes::

    the head comes first , 1 word apart . <h> [ person ] barack obama </h> met <t> [ person ] angela merkel </t>

Markers are special tokens added to the tokenizer (learned embeddings). Truncation keeps every marker and
the type words, then the entity words, then the words nearest the entities: a marker is never cut off.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rocmre.data.record import Entity

HEAD_START, HEAD_END, TAIL_START, TAIL_END = "<h>", "</h>", "<t>", "</t>"
MARKERS = (HEAD_START, HEAD_END, TAIL_START, TAIL_END)

#: (upper bound of the word gap, its name); gaps are counted between the two mentions.
DISTANCE_BUCKETS: tuple[tuple[int, str], ...] = ((0, "adjacent"), (3, "near"), (8, "a few words apart"),
                                                 (10**9, "far apart"))


def distance_bucket(gap: int) -> str:
    for bound, name in DISTANCE_BUCKETS:
        if gap <= bound:
            return name
    return DISTANCE_BUCKETS[-1][1]


def position_phrase(head: Entity, tail: Entity) -> str:
    """Which mention comes first and how far apart they are, in words."""
    if tail.is_object:
        return "the tail is an object in the image ."
    hs, he = head.span
    ts, te = tail.span
    if hs < te and ts < he:
        inner = "the tail is inside the head" if hs <= ts and te <= he else (
            "the head is inside the tail" if ts <= hs and he <= te else "the head and tail overlap")
        return f"{inner} ."
    first, gap = ("head", ts - he) if hs < ts else ("tail", hs - te)
    return f"the {first} comes first , {distance_bucket(gap)} ."


@dataclass(frozen=True)
class PromptOptions:
    use_types: bool = True
    use_positions: bool = True


@dataclass
class MarkedWord:
    text: str
    priority: int  # 0: never dropped (markers, type words, prefix); 1: entity words; 2: context


def build_marked_words(tokens: Sequence[str], head: Entity, tail: Entity, head_type: str, tail_type: str,
                       options: PromptOptions) -> list[MarkedWord]:
    """The prompt as words with a keep-priority each (see module docstring)."""
    out: list[MarkedWord] = []
    if options.use_positions:
        out += [MarkedWord(w, 0) for w in position_phrase(head, tail).split()]

    def opening(marker: str, etype: str) -> list[MarkedWord]:
        words = [MarkedWord(marker, 0)]
        if options.use_types:
            words += [MarkedWord("[", 0), MarkedWord(etype, 0), MarkedWord("]", 0)]
        return words

    # Events at word boundaries: the longer span opens first and closes last, so nesting stays well formed.
    spans = [(head.span, HEAD_START, HEAD_END, head_type)]
    if not tail.is_object:
        spans.append((tail.span, TAIL_START, TAIL_END, tail_type))
    for i in range(len(tokens) + 1):
        closing = [s for s in spans if s[0][1] == i]
        closing.sort(key=lambda s: s[0][1] - s[0][0])  # inner (shorter) closes first
        out += [MarkedWord(s[2], 0) for s in closing]
        if i == len(tokens):
            break
        opening_here = [s for s in spans if s[0][0] == i]
        opening_here.sort(key=lambda s: -(s[0][1] - s[0][0]))  # outer (longer) opens first
        for s in opening_here:
            out += opening(s[1], s[3])
        inside = any(s[0][0] <= i < s[0][1] for s in spans)
        out.append(MarkedWord(tokens[i], 1 if inside else 2))
    if tail.is_object:
        out += [MarkedWord(w, 0) for w in ("in", "the", "image", ":")]
        out += opening(TAIL_START, tail_type)
        out += [MarkedWord(w, 1) for w in tail.name.split()]
        out.append(MarkedWord(TAIL_END, 0))
    return out


def select_words(words: list[MarkedWord], lengths: Sequence[int], budget: int) -> list[int]:
    """Indices of words to keep (in order) within ``budget`` sub-words: priority-0 words, entity words, then context
    words by distance to the nearest marker."""
    if sum(lengths) <= budget:
        return list(range(len(words)))
    anchors = [i for i, w in enumerate(words) if w.text in MARKERS]
    keep: set[int] = set()
    used = 0

    def distance(i: int) -> int:
        return min(abs(i - a) for a in anchors) if anchors else i

    order = sorted(range(len(words)), key=lambda i: (words[i].priority, distance(i), i))
    for i in order:
        if words[i].priority == 0 or used + lengths[i] <= budget:
            keep.add(i)
            used += lengths[i]
    if used > budget:
        raise ValueError(f"the markers and type prompts alone need {used} sub-word tokens, more than the budget "
                         f"{budget}: raise max_length")
    return sorted(keep)
