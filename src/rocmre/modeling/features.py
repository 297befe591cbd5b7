"""From records to model inputs: types, prompts, sub-word ids and marker positions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from rocmre.data.entity_types import TypeCache
from rocmre.data.record import Box, RelationRecord
from rocmre.modeling.prompting import HEAD_START, MARKERS, TAIL_START, PromptOptions, build_marked_words, select_words


@dataclass
class PairFeatures:
    """One record, ready to batch."""

    input_ids: list[int]
    head_index: int
    tail_index: int
    head_type: str
    tail_type: str
    image: Path | None = None
    crops: list[Path] = field(default_factory=list)
    object_box: Box | None = None
    label: int | None = None


class PairFeaturizer:
    """Writes types and positions into each record's text and tokenises it, keeping every marker."""

    def __init__(self, tokenizer, *, max_length: int, prompt: PromptOptions, type_cache: TypeCache,
                 max_crops: int = 3) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.prompt = prompt
        self.type_cache = type_cache
        self.max_crops = max_crops
        missing = [m for m in MARKERS if m not in tokenizer.get_vocab()]
        if missing:
            raise ValueError(f"tokenizer lacks the entity markers {missing}: call add_marker_tokens first")
        self.head_id = tokenizer.convert_tokens_to_ids(HEAD_START)
        self.tail_id = tokenizer.convert_tokens_to_ids(TAIL_START)
        self.prefix_ids, self.suffix_ids = special_token_frame(tokenizer)

    def entity_types(self, records: Sequence[RelationRecord], show_progress: bool = False) -> list[tuple[str, str]]:
        """(head type, tail type) per record: given types win, the rest come from the tagger."""
        need = [i for i, r in enumerate(records) if r.head.type is None or r.tail.type is None]
        items = []
        for i in need:
            r = records[i]
            spans = [r.head.span] + ([] if r.tail.is_object else [r.tail.span])
            items.append((r.tokens, spans))
        tagged = dict(zip(need, self.type_cache.types(items, show_progress), strict=True)) if need else {}
        out = []
        for i, r in enumerate(records):
            t = tagged.get(i)
            head_type = r.head.type or (t[0] if t else "unknown")
            tail_type = r.tail.type or ("object" if r.tail.is_object else (t[1] if t else "unknown"))
            out.append((head_type, tail_type))
        return out

    def __call__(self, records: Sequence[RelationRecord], label_index: dict[str, int] | None = None,
                 show_progress: bool = False) -> list[PairFeatures]:
        types = self.entity_types(records, show_progress)
        word_lists = [build_marked_words(r.tokens, r.head, r.tail, ht, tt, self.prompt)
                      for r, (ht, tt) in zip(records, types, strict=True)]
        out: list[PairFeatures] = []
        budget = self.max_length - len(self.prefix_ids) - len(self.suffix_ids)
        chunk = 512
        for start in tqdm(range(0, len(records), chunk), desc="tokenising", disable=not show_progress):
            words_chunk = word_lists[start:start + chunk]
            enc = self.tokenizer([[w.text for w in ws] for ws in words_chunk], is_split_into_words=True,
                                 add_special_tokens=False)
            for j, ws in enumerate(words_chunk):
                record = records[start + j]
                ids = enc["input_ids"][j]
                word_ids = enc.word_ids(j)
                per_word: list[list[int]] = [[] for _ in ws]
                for tok, w in zip(ids, word_ids, strict=True):
                    if w is not None:
                        per_word[w].append(tok)
                keep = select_words(ws, [len(p) for p in per_word], budget)
                body = [t for i in keep for t in per_word[i]]
                input_ids = self.prefix_ids + body + self.suffix_ids
                label = None
                if label_index is not None and record.relation is not None:
                    if record.relation not in label_index:
                        raise KeyError(f"{record.source}: relation {record.relation!r} is not in the model's labels")
                    label = label_index[record.relation]
                crops = record.crop_paths[: self.max_crops]
                out.append(PairFeatures(input_ids, input_ids.index(self.head_id), input_ids.index(self.tail_id),
                                        types[start + j][0], types[start + j][1], record.image_path, list(crops),
                                        record.tail.box if record.tail.is_object else None, label))
        return out


def special_token_frame(tokenizer) -> tuple[list[int], list[int]]:
    """The ids a tokenizer puts before and after a single sequence (e.g. [CLS] ... [SEP])."""
    inner = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    for i in range(len(full) - len(inner) + 1):
        if full[i:i + len(inner)] == inner:
            return full[:i], full[i + len(inner):]
    raise ValueError("cannot find where the tokenizer places its special tokens")


def add_marker_tokens(tokenizer) -> int:
    """Add the entity markers as special tokens; returns how many were new."""
    return tokenizer.add_tokens(list(MARKERS), special_tokens=True)
