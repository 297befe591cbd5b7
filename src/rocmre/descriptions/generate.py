"""Generate relation descriptions with an LLM: few-shot prompt, normalise, filter, de-duplicate, cache on disk.
Calls repeat until ``n`` valid, distinct sentences are kept or ``max_attempts`` is spent; a shortfall is reported."""

from __future__ import annotations

import hashlib
import json
import os
import re
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from rocmre.descriptions.backends import ChatBackend, Messages
from rocmre.descriptions.store import Description, RelationDescriptions, RelationEntry
from rocmre.paths import default_cache_dir

PROMPT_VERSION = "roc-desc-v1"

#: A training example of a relation: (sentence, head mention, tail mention).
Example = tuple[str, str, str]

#: Label path abbreviations -> entity types of :data:`rocmre.data.entity_types.ENTITY_TYPES`.
PATH_TYPES: dict[str, str] = {"per": "person", "org": "organization", "loc": "location", "misc": "miscellaneous"}

#: Words that count as naming an entity of a type (for the "speaks of head and tail" filter).
TYPE_WORDS: dict[str, tuple[str, ...]] = {
    "person": ("person", "people", "persons", "individual", "man", "woman", "someone"),
    "organization": ("organization", "organisation", "organizations", "company", "team", "group", "band",
                     "club", "party", "institution"),
    "location": ("location", "locations", "place", "places", "city", "country", "region", "area"),
    "miscellaneous": ("miscellaneous", "event", "work", "thing", "item", "product", "award", "nationality",
                      "religion", "group"),
    "object": ("object", "objects", "image", "picture", "photo"),
    "unknown": ("entity", "entities", "mention", "mentions", "thing", "things"),
}

#: Words that, right after "head"/"tail", claim a type (used to reject sentences contradicting the label).
_TYPE_CLAIMS: dict[str, str] = {"person": "person", "people": "person", "organization": "organization",
                                "organisation": "organization", "location": "location",
                                "miscellaneous": "miscellaneous", "object": "object"}

_NAME_FIXES = {"alumi": "alumni"}


# -- labels and prompts -----------------------------------------------------------------------------------
def label_types(label: str, *, tail_object: bool = False) -> tuple[list[str], list[str]]:
    """Head and tail types implied by a path label (``/per/org/member_of`` -> person, organization).
    ``tail_object`` (MORE) adds ``"object"`` to the tail types. Labels without a path give ``[]`` (any type)."""
    parts = label.strip("/").split("/")
    if len(parts) != 3 or parts[0] not in PATH_TYPES or parts[1] not in PATH_TYPES:
        return [], (["object"] if tail_object else [])
    head, tail = [PATH_TYPES[parts[0]]], [PATH_TYPES[parts[1]]]
    if tail_object:
        tail = ["object", *tail]
    return head, tail


def relation_name(label: str) -> str:
    """The human-readable relation name of a label (``/per/loc/place_of_birth`` -> ``place of birth``)."""
    last = label.strip("/").split("/")[-1]
    last = _NAME_FIXES.get(last, last)
    return last.replace("_", " ").strip()


@dataclass(frozen=True)
class _Shot:
    name: str
    head: str
    tail: str
    example: Example
    answer: str


# Hand-written demonstrations, on relations that are in neither MNRE nor MORE.
_SHOTS: tuple[_Shot, ...] = (
    _Shot("founder of", "person", "organization",
          ("Happy birthday to the man who started Acme Corp back in 1975", "the man", "Acme Corp"),
          "The head person founded or started the tail organization."),
    _Shot("borders", "location", "location",
          ("Road trip from Ruritania across the border into Freedonia", "Ruritania", "Freedonia"),
          "The head location shares a border with the tail location."),
    _Shot("author of", "person", "miscellaneous",
          ("Just finished The Long Night by Jane Roe , what an ending", "Jane Roe", "The Long Night"),
          "The head person wrote or created the tail work."),
    _Shot("owner of", "person", "organization",
          ("John Doe buys the Riverside Rovers for 2 billion", "John Doe", "Riverside Rovers"),
          "The head person owns or has bought the tail organization."),
    _Shot("coach of", "person", "person",
          ("Great session today with coach Sam Poe and Alex Moe", "Sam Poe", "Alex Moe"),
          "The head person trains or coaches the tail person."),
)

SYSTEM_PROMPT = (
    "You define relation types. Given a relation between a head entity and a tail entity, write one short "
    "English sentence that explains the relation using the words \"the head\" and \"the tail\". "
    "Do not use names of real people or places."
)


def _type_phrase(types: Sequence[str]) -> str:
    main = [t for t in types if t != "object"]
    word = main[0] if main else "entity"
    return f"{word} (an object in the image)" if "object" in types else word


def _user_message(name: str, head_types: Sequence[str], tail_types: Sequence[str], examples: Sequence[Example]) -> str:
    text = f"Relation: head {_type_phrase(head_types)} --[{name}]--> tail {_type_phrase(tail_types)}\n"
    for sent, h, t in examples:
        text += f"Example: {' '.join(sent.split())} (head: {h}; tail: {t})\n"
    return text + "Definition:"


def build_messages(label: str, head_types: Sequence[str], tail_types: Sequence[str],
                   examples: Sequence[Example] = (), *, negative: bool = False, attempt: int = 0) -> Messages:
    """The chat prompt for one call: system, rotated few-shot turns, then the relation asked about.
    Demonstrations carry an example each when ``examples`` is non-empty, so the format stays consistent."""
    name = "no relation (merely mentioned together)" if negative else relation_name(label)
    k = len(examples)
    shots = _SHOTS[attempt % len(_SHOTS):] + _SHOTS[: attempt % len(_SHOTS)]
    msgs: Messages = [{"role": "system", "content": SYSTEM_PROMPT}]
    for s in shots:
        msgs.append({"role": "user", "content": _user_message(s.name, [s.head], [s.tail], [s.example][:k])})
        msgs.append({"role": "assistant", "content": s.answer})
    msgs.append({"role": "user", "content": _user_message(name, head_types, tail_types, examples)})
    return msgs


# -- normalising and filtering -------------------------------------------------------------------------------
_PREFIX = re.compile(r"^\s*(?:[-*•]+|\(?\d+[.):]|definition\s*:|description\s*:|answer\s*:)\s*", re.I)
_SENT_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'])")


def normalise(text: str) -> str:
    """One clean sentence: strip list markers, labels, quotes, extra whitespace; keep the first sentence."""
    s = " ".join(text.split())
    for _ in range(3):
        s = _PREFIX.sub("", s).strip().strip("\"'“”‘’`").strip()
    s = _SENT_END.split(s, maxsplit=1)[0].strip().strip("\"'“”‘’`").strip()
    if s and s[0].islower():
        s = s[0].upper() + s[1:]
    if s and s[-1] not in ".!?":
        s += "."
    return s


def dedup_key(text: str) -> str:
    """Case- and punctuation-insensitive key for de-duplication."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


#: Demonstration answers: a completion that just echoes one is rejected.
_SHOT_KEYS: frozenset[str] = frozenset(dedup_key(s.answer) for s in _SHOTS)


def candidates(response: str) -> list[str]:
    """Normalised candidate sentences in a completion (one per non-empty line)."""
    out = []
    for line in response.splitlines():
        s = normalise(line)
        if s:
            out.append(s)
    return out


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def leaks_label(text: str, label: str) -> bool:
    """Whether ``text`` shows the raw label, a slash part of it, a type abbreviation or an underscore name."""
    low = text.lower()
    lab = label.lower().strip()
    if "/" in lab and lab.strip("/") in low:
        return True
    parts = [p for p in lab.strip("/").split("/") if p]
    if len(parts) < 2:
        return False
    words = set(_words(low))
    for p in parts:
        if f"/{p}" in low or f"{p}/" in low:
            return True
        if p in PATH_TYPES and p in words:
            return True
        if "_" in p and p in low:
            return True
    return False


_REPEAT = re.compile(r"\b(\w+(?: \w+)?) (?:or|and) (?:an? |the )?\1\b", re.I)


def _degenerate(words: Sequence[str], text: str) -> bool:
    trigrams = [tuple(words[i:i + 3]) for i in range(len(words) - 2)]
    return len(trigrams) != len(set(trigrams)) or bool(_REPEAT.search(text))


def _count_type_words(words: Sequence[str], types: Iterable[str]) -> int:
    vocab = {w for t in types for w in TYPE_WORDS.get(t, ())}
    return sum(1 for w in words if w in vocab)


def check_description(text: str, label: str, head_types: Sequence[str], tail_types: Sequence[str], *,
                      min_words: int = 5, max_words: int = 40, banned: Iterable[str] = ()) -> str | None:
    """Why ``text`` is rejected, or ``None`` when it is a valid description (length, both roles mentioned, no label
    leakage, no contradicting type, no repetition, none of the ``banned`` strings)."""
    words = _words(text)
    if len(words) < min_words:
        return "too short"
    if len(words) > max_words:
        return "too long"
    if leaks_label(text, label):
        return "label leakage"
    low = text.lower()
    for b in banned:
        if b and len(b) > 2 and re.search(rf"\b{re.escape(b.lower())}\b", low):
            return f"mentions example entity {b!r}"
    has_roles = "head" in words and "tail" in words
    if not has_roles:
        h_types = list(head_types) or ["unknown"]
        t_types = list(tail_types) or ["unknown"]
        if set(h_types) & set(t_types):
            has_roles = _count_type_words(words, set(h_types) | set(t_types)) >= 2 or any(
                w in words for w in ("both", "two", "each", "another", "other", "people", "entities"))
        else:
            has_roles = _count_type_words(words, h_types) >= 1 and _count_type_words(words, t_types) >= 1
    if not has_roles:
        return "does not speak of both head and tail"
    for role, types in (("head", head_types), ("tail", tail_types)):
        if not types:
            continue
        for m in re.finditer(rf"\b{role} (\w+)", low):
            claimed = _TYPE_CLAIMS.get(m.group(1))
            if claimed and claimed not in types:
                return f"{role} type {claimed!r} contradicts the label"
    if _degenerate(words, low):
        return "repetitive"
    return None


# -- cache ------------------------------------------------------------------------------------------------
class CompletionCache:
    """Completions stored as one JSON file each under ``<root>/descriptions/``."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.dir = (Path(root) if root is not None else default_cache_dir()) / "descriptions"
        self.hits = 0

    @staticmethod
    def key(backend: str, model: str, prompt_version: str, label: str, prompt_hash: str) -> str:
        raw = json.dumps([backend, model, prompt_version, label, prompt_hash])
        return hashlib.sha256(raw.encode("utf-8")).hexdigest()

    def get(self, key: str) -> str | None:
        f = self.dir / f"{key}.json"
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        self.hits += 1
        return str(data["response"])

    def put(self, key: str, record: Mapping[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".{key}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(dict(record), ensure_ascii=False, indent=1), encoding="utf-8")
        tmp.replace(self.dir / f"{key}.json")


def prompt_hash(messages: Messages, **params: Any) -> str:
    """sha256 of the messages and the sampling parameters."""
    raw = json.dumps({"messages": messages, **params}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


# -- generation ---------------------------------------------------------------------------------------------
@dataclass
class GenerationConfig:
    """Settings of :func:`generate_descriptions`."""

    n: int = 5
    k_examples: int = 3
    max_attempts: int | None = None  # default 4 * n per relation
    min_words: int = 5
    max_words: int = 40
    temperature: float = 0.0
    seed: int = 0
    max_new_tokens: int = 48
    prompt_version: str = PROMPT_VERSION


@dataclass
class GenerationResult:
    """Descriptions kept, plus what it took: prompts (dry run), rejections and shortfalls per relation."""

    descriptions: RelationDescriptions
    prompts: dict[str, list[Messages]] = field(default_factory=dict)
    rejected: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    shortfall: dict[str, int] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)
    model_calls: int = 0
    cache_hits: int = 0


def _attempt_seed(seed: int, label: str, attempt: int) -> int:
    return (seed * 1_000_003 + zlib.crc32(label.encode("utf-8")) + attempt * 7919) % (2**31 - 1)


def _examples_for(pool: Sequence[Example], k: int, attempt: int) -> list[Example]:
    if k <= 0 or not pool:
        return []
    start = (attempt * k) % len(pool)
    picked = [pool[(start + i) % len(pool)] for i in range(min(k, len(pool)))]
    return picked


def generate_descriptions(
    labels: Sequence[str],
    backend: ChatBackend | None,
    *,
    config: GenerationConfig | None = None,
    examples: Mapping[str, Sequence[Example]] | None = None,
    negative_label: str | None = None,
    tail_object: bool = False,
    types: Mapping[str, tuple[Sequence[str], Sequence[str]]] | None = None,
    name: str = "",
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    dry_run: bool = False,
    today: str | None = None,
    progress: Callable[[Iterable[str]], Iterable[str]] | None = None,
) -> GenerationResult:
    """Generate ``config.n`` descriptions for every label; ``dry_run`` only builds prompts (``backend`` may be
    ``None``), ``tail_object`` adds ``"object"`` to tail types (MORE)."""
    cfg = config or GenerationConfig()
    max_attempts = cfg.max_attempts if cfg.max_attempts is not None else 4 * cfg.n
    cache = CompletionCache(cache_dir) if use_cache else None
    out = RelationDescriptions(name=name, negative_label=negative_label)
    result = GenerationResult(out)
    if not dry_run and backend is None:
        raise ValueError("a backend is needed unless dry_run=True")
    backend_name = backend.name if backend is not None else "none"
    model_name = getattr(backend, "display_name", None) or (backend.model if backend is not None else "none")
    calls_before = backend.calls if backend is not None else 0
    stamp = today or date.today().isoformat()
    for label in progress(labels) if progress else labels:
        head_types, tail_types = (list(x) for x in types[label]) if types and label in types else \
            label_types(label, tail_object=tail_object)
        negative = negative_label is not None and label == negative_label
        pool = list((examples or {}).get(label, ()))
        if dry_run:
            msgs = build_messages(label, head_types, tail_types, _examples_for(pool, cfg.k_examples, 0),
                                  negative=negative)
            result.prompts[label] = [msgs]
            continue
        assert backend is not None
        kept: list[str] = []
        seen: set[str] = set()
        rejected: list[tuple[str, str]] = []
        attempt = 0
        while len(kept) < cfg.n and attempt < max_attempts:
            ex = _examples_for(pool, cfg.k_examples, attempt)
            msgs = build_messages(label, head_types, tail_types, ex, negative=negative, attempt=attempt)
            seed = _attempt_seed(cfg.seed, label, attempt) if cfg.temperature > 0 else None
            params = {"max_new_tokens": cfg.max_new_tokens, "temperature": cfg.temperature, "seed": seed}
            key = CompletionCache.key(backend.name, backend.model, cfg.prompt_version, label,
                                      prompt_hash(msgs, **params))
            response = cache.get(key) if cache else None
            if response is None:
                response = backend.chat(msgs, **params)
                if cache:
                    cache.put(key, {"backend": backend.name, "model": backend.model,
                                    "prompt_version": cfg.prompt_version, "label": label, "params": params,
                                    "messages": msgs, "response": response})
            attempt += 1
            banned = [x for _, h, t in ex for x in (h, t)]
            for cand in candidates(response):
                why = check_description(cand, label, head_types, tail_types, min_words=cfg.min_words,
                                        max_words=cfg.max_words, banned=banned)
                if why is None and dedup_key(cand) in _SHOT_KEYS:
                    why = "copies a demonstration"
                if why is None and dedup_key(cand) in seen:
                    why = "duplicate"
                if why is not None:
                    rejected.append((cand, why))
                    continue
                seen.add(dedup_key(cand))
                kept.append(cand)
                if len(kept) >= cfg.n:
                    break
        result.attempts[label] = attempt
        result.rejected[label] = rejected
        if len(kept) < cfg.n:
            result.shortfall[label] = cfg.n - len(kept)
        if kept:
            prov = {"method": "llm", "backend": backend_name, "model": model_name,
                    "prompt_version": cfg.prompt_version, "date": stamp, "edited": False}
            if cfg.temperature > 0:
                prov.update(temperature=cfg.temperature, seed=cfg.seed)
            out.relations[label] = _entry(kept, head_types, tail_types, prov)
    result.model_calls = (backend.calls - calls_before) if backend is not None else 0
    result.cache_hits = cache.hits if cache else 0
    return result


def _entry(texts: Sequence[str], head_types: Sequence[str], tail_types: Sequence[str],
           prov: Mapping[str, Any]) -> RelationEntry:
    return RelationEntry([Description(t, dict(prov)) for t in texts], list(head_types), list(tail_types))


def format_prompt(messages: Messages) -> str:
    """A readable rendering of a chat prompt (for dry runs)."""
    return "\n".join(f"[{m['role']}] {m['content']}" for m in messages)
