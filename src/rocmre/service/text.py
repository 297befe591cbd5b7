"""Unicode at the service's boundary: model input in one normal form (NFC), names compared to the text under it,
the user's own characters kept in the answer, and relation names that only look like the negative label refused.

A text typed as NFD (``e`` + U+0301) and the same text as NFC (``é``) tokenise differently (the combining mark
becomes a token of its own), so they would score differently, and a name in one form would not be found in a text
in the other. Everything a request gives the model (text, tokens, entity names, descriptions, examples) is
normalised to NFC here; character offsets are moved to the NFC text; the names in the answer are the user's.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from rocmre.inference.extractor import PairInput
from rocmre.service.limits import Refusal
from rocmre.service.schemas import EntityRef, PredictRequest, RelationExample

FORM = "NFC"


def nfc(text: str) -> str:
    return text if unicodedata.is_normalized(FORM, text) else unicodedata.normalize(FORM, text)


def label_key(name: str) -> str:
    """What a relation name is compared by against the negative label: compatibility-folded (NFKC: fullwidth
    ``Ｎｏｎｅ`` is ``None``), invisible format characters (zero-width spaces and joiners, bidi marks: category Cf)
    and surrounding whitespace dropped, case-folded."""
    folded = unicodedata.normalize("NFKC", name)
    return "".join(c for c in folded if unicodedata.category(c) != "Cf").strip().casefold()


def nfc_offset(text: str, offset: int, role: str, key: str) -> int:
    """Where character ``offset`` of ``text`` falls in NFC(``text``); 422 when it splits characters NFC joins."""
    if not 0 <= offset <= len(text):
        return offset  # (out of range: the library says so with the text's length)
    before, after = nfc(text[:offset]), nfc(text[offset:])
    if before + after != nfc(text):
        raise Refusal(422, f"{role}.{key}: character {offset} falls between a character and the combining mark "
                           "that Unicode normalisation (NFC) joins it with; mark the whole character",
                      reason="invalid_pair")
    return len(before)


def nfc_entity(spec: str | EntityRef, text: str | list[str], role: str) -> tuple[Any, str | None]:
    """An entity of a request as the library's spec for the NFC text, and the name the user wrote for it: the name
    as given, or the text its offsets cover (None for a token span of a string text, or a box)."""
    if isinstance(spec, str):
        return nfc(spec), spec
    out = spec.to_spec()
    shown = spec.name
    if spec.name is not None:
        out["name"] = nfc(spec.name)
    if spec.char_start is not None and spec.char_end is not None and isinstance(text, str):
        if shown is None and spec.char_end <= len(text):
            shown = text[spec.char_start:spec.char_end]
        out["char_start"] = nfc_offset(text, spec.char_start, role, "char_start")
        out["char_end"] = nfc_offset(text, spec.char_end, role, "char_end")
    elif shown is None and spec.start is not None and spec.end is not None and isinstance(text, list):
        shown = " ".join(text[spec.start:spec.end])
    return out, shown


def nfc_text(text: str | list[str]) -> str | list[str]:
    return nfc(text) if isinstance(text, str) else [nfc(t) for t in text]


def to_pair(req: PredictRequest | RelationExample,
            image: bytes | None = None) -> tuple[PairInput, dict[str, str | None]]:
    """A validated request (and its checked image bytes) as the library's input, in NFC; and the names the user
    wrote for head and tail (see :func:`shown_names`)."""
    head, head_shown = nfc_entity(req.head, req.text, "head")
    tail, tail_shown = nfc_entity(req.tail, req.text, "tail")
    pair = PairInput(nfc_text(req.text), head, tail, image, req.head_type, req.tail_type)
    return pair, {"head": head_shown, "tail": tail_shown}


def to_example(example: RelationExample) -> dict[str, Any]:
    """A labelled example of POST /relations as ``add_relations`` takes it, in NFC."""
    pair, _ = to_pair(example)
    return {"text": pair.text, "head": pair.head, "tail": pair.tail} | {
        k: v for k, v in (("head_type", pair.head_type), ("tail_type", pair.tail_type)) if v is not None}


def shown_names(answer: dict[str, Any], shown: dict[str, str | None]) -> dict[str, Any]:
    """The answer with each entity's name as the user wrote it, where the model's name is its NFC form."""
    for role, name in shown.items():
        entity = answer.get(role)
        if name is not None and isinstance(entity, dict) and entity.get("name") == nfc(name):
            entity["name"] = name
    return answer
