"""The one parser of pair inputs (rocmre.data.inputs): one tokenisation rule for JSONL training files and
prediction, identical features either way, and the committed bad-input corpora (tests/bad_inputs/) for the Python
API and ``rocmre predict`` input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from rocmre.data import read_jsonl
from rocmre.data.inputs import (
    EntityNotFoundError,
    PairInput,
    PairInputError,
    PairInputTypeError,
    normalise_image,
    pair_from_json,
    pair_to_record,
    tokenize,
)
from rocmre.data.record import DataFormatError
from rocmre.inference.extractor import RelationExtractor

CORPUS = Path(__file__).parent / "bad_inputs"
API_CASES = json.loads((CORPUS / "api.json").read_text(encoding="utf-8"))
JSONL_CASES = json.loads((CORPUS / "jsonl_predict.json").read_text(encoding="utf-8"))
EXCEPTIONS = {"TypeError": TypeError, "ValueError": ValueError, "EntityNotFoundError": EntityNotFoundError}
TWEET = "Go #Bears! Mike Smith (@MSmith) scored at Soldier Field"
TWEET_TOKENS = ["Go", "#", "Bears", "!", "Mike", "Smith", "(", "@MSmith", ")", "scored", "at", "Soldier", "Field"]




# -- one tokenisation rule, identical features -----------------------------------------------------------------------
def test_tokenize_is_the_one_rule() -> None:
    tokens, offsets = tokenize(TWEET)
    assert tokens == TWEET_TOKENS
    assert [TWEET[s:e] for s, e in offsets] == tokens
    assert pair_to_record(PairInput(TWEET, "Mike Smith", "#Bears")).tokens == TWEET_TOKENS


def test_jsonl_text_and_predict_give_identical_features(extractor: RelationExtractor, image_file: Path,
                                                        tmp_path: Path) -> None:
    """Issue 8: a record given as a JSONL line with raw text, and the same pair given to predict(), produce the
    same tokens and the same features (ids, marker positions, types, image)."""
    (tmp_path / "images").mkdir()
    shutil.copy(image_file, tmp_path / "images" / "post.jpg")
    line = {"text": TWEET, "head": {"name": "Mike Smith", "start": 4, "end": 6},
            "tail": {"name": "Soldier Field", "start": 11, "end": 13}, "image": "images/post.jpg",
            "relation": "/per/loc/place_of_residence"}
    (tmp_path / "train.jsonl").write_text(json.dumps(line) + "\n", encoding="utf-8")
    (from_file,) = read_jsonl(tmp_path / "train.jsonl")
    from_api = extractor.to_record(PairInput(TWEET, "Mike Smith", "Soldier Field", tmp_path / "images" / "post.jpg"))
    assert from_file.tokens == from_api.tokens == TWEET_TOKENS
    assert (from_file.head, from_file.tail) == (from_api.head, from_api.tail)
    assert from_file.image_path == from_api.image_path == tmp_path / "images" / "post.jpg"
    f_file, f_api = extractor.runtime.featurize([from_file, from_api], with_labels=False)
    assert f_file == f_api
    assert (f_file.head_index, f_file.tail_index) == (f_api.head_index, f_api.tail_index)
    assert f_file.input_ids == f_api.input_ids and (f_file.head_type, f_file.tail_type) == (f_api.head_type,
                                                                                            f_api.tail_type)
    # and predict() reports the same mentions
    pred = extractor.predict(TWEET, "Mike Smith", "Soldier Field", image=tmp_path / "images" / "post.jpg")
    assert (pred.head["start"], pred.head["end"], pred.tail["start"], pred.tail["end"]) == (4, 6, 11, 13)


def test_jsonl_with_bom_loads(tmp_path: Path) -> None:
    line = {"text": "Barack Obama visited Paris", "head": "Barack Obama", "tail": "Paris", "relation": "None"}
    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + json.dumps(line).encode() + b"\n")
    (record,) = read_jsonl(tmp_path / "bom.jsonl")
    assert record.tokens == ["Barack", "Obama", "visited", "Paris"] and record.head.span == (0, 2)


def test_errors_carry_their_field() -> None:
    with pytest.raises(PairInputTypeError) as info:
        pair_to_record(PairInput("Barack Obama visited Paris", None, "Paris"))
    assert info.value.field == "head" and info.value.reason.startswith("expected an entity name string, a (start")
    with pytest.raises(EntityNotFoundError) as found:
        pair_to_record(PairInput("Barack Obama visited Paris", "Barack Obama", "London"))
    assert isinstance(found.value, PairInputError) and found.value.field == "tail"
    assert found.value.candidates == ["Barack", "Obama", "Paris"]
    with pytest.raises(DataFormatError, match=r"^in.jsonl:4, field 'tail': 'London' does not occur") as located:
        pair_from_json({"text": "Barack Obama visited Paris", "head": "Barack Obama", "tail": "London"},
                       "in.jsonl", 4, None)
    assert (located.value.line, located.value.field) == (4, "tail")


def test_image_forms_normalise(image_file: Path) -> None:
    raw = image_file.read_bytes()
    assert normalise_image(str(image_file)) == image_file
    assert normalise_image(bytearray(raw)) == raw and normalise_image(memoryview(raw)) == raw
    img = normalise_image(np.zeros((5, 7, 3), dtype=np.uint8))
    assert img.size == (7, 5) and img.mode == "RGB"
    assert normalise_image(np.zeros((5, 7, 1), dtype=np.uint8)).mode == "L"
    with pytest.raises(PairInputError, match="image: empty path"):
        normalise_image("")


# -- the committed bad-input corpora ------------------------------------------------------------------------------
def decode(value: Any, image_file: Path) -> Any:
    """JSON test values with tags for what JSON cannot hold (numpy values, tuples, image bytes)."""
    if isinstance(value, list):
        return [decode(v, image_file) for v in value]
    if not isinstance(value, dict):
        return value
    if "$np_int" in value:
        return np.int64(value["$np_int"])
    if "$tuple" in value:
        return tuple(decode(v, image_file) for v in value["$tuple"])
    if "$np_image" in value:
        return np.full(tuple(value["$np_image"]), 128, dtype=value.get("dtype", "uint8"))
    if "$image_bytearray" in value:
        return bytearray(image_file.read_bytes())
    if "$image_path" in value:
        return image_file
    return {k: decode(v, image_file) for k, v in value.items()}


def test_corpus_is_large_enough() -> None:
    assert len(API_CASES) + len(JSONL_CASES) >= 40
    assert len({c["id"] for c in API_CASES}) == len(API_CASES)
    assert len({c["id"] for c in JSONL_CASES}) == len(JSONL_CASES)


@pytest.mark.parametrize("case", API_CASES, ids=[c["id"] for c in API_CASES])
def test_api_bad_input(case: dict[str, Any], extractor: RelationExtractor, image_file: Path) -> None:
    args = decode(case["args"], image_file)
    before = extractor.describe_relations()

    def call() -> Any:
        if case["call"] == "predict":
            return extractor.predict(**args)
        if case["call"] == "predict_batch":
            return list(extractor.predict_batch(**args))
        return extractor.add_relations(**args)

    if case["expect"] == "ok":
        pred = call().to_dict()
        for key in ("head", "tail"):
            for k, v in case.get(key, {}).items():
                assert pred[key][k] == v, (key, k)
        if "has_image" in case:
            assert pred["has_image"] is case["has_image"]
        if "n_top_k" in case:
            assert len(pred["top_k"]) == case["n_top_k"]
        return
    with pytest.raises(EXCEPTIONS[case["expect"]]) as info:
        call()
    assert case["message"] in str(info.value)
    assert "Traceback" not in str(info.value) and " at 0x" not in str(info.value)
    assert extractor.describe_relations() == before  # a refused call changes nothing


def _jsonl_line(case: dict[str, Any]) -> str:
    if "raw" in case:
        return case["raw"]
    if "raw_nested" in case:
        return "[" * case["raw_nested"] + "]" * case["raw_nested"]
    return json.dumps(case["line"])


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory: pytest.TempPathFactory, image_file: Path) -> Path:
    folder = tmp_path_factory.mktemp("jsonl-corpus")
    (folder / "images").mkdir()
    shutil.copy(image_file, folder / "images" / "post.jpg")
    path = folder / "corpus.jsonl"
    path.write_text("".join(_jsonl_line(c) + "\n" for c in JSONL_CASES), encoding="utf-8")
    return path


@pytest.mark.parametrize("case", JSONL_CASES, ids=[c["id"] for c in JSONL_CASES])
def test_jsonl_predict_line(case: dict[str, Any], corpus_file: Path) -> None:
    """Each line on its own, through the parser ``rocmre predict`` uses."""
    from rocmre.data.jsonl import iter_jsonl

    lineno = JSONL_CASES.index(case) + 1
    (_, obj), = [(n, o) for n, o in iter_jsonl(corpus_file, blank_lines=True) if n == lineno]
    if case["expect"] == "ok":
        assert not isinstance(obj, DataFormatError)
        record = pair_to_record(pair_from_json(obj, corpus_file, lineno, corpus_file.parent, "error"))
        for key in ("head", "tail"):
            entity = getattr(record, key)
            for k, v in case.get(key, {}).items():
                assert (list(entity.box) if k == "box" else getattr(entity, k)) == v
        return
    with pytest.raises(DataFormatError) as info:
        if isinstance(obj, DataFormatError):
            raise obj
        pair_from_json(obj, corpus_file, lineno, corpus_file.parent, "error")
    assert (info.value.line, info.value.field) == (lineno, case["field"])
    assert case["message"] in info.value.reason


def test_jsonl_corpus_through_the_cli(tiny_roc_dir: Path, cache_dir: Path, corpus_file: Path,
                                      tmp_path: Path) -> None:
    """The whole corpus as one file: output line i answers input line i, bad lines (blank included) are counted."""
    from rocmre.cli import app

    out = tmp_path / "preds.jsonl"
    result = CliRunner().invoke(app, ["predict", "--model", str(tiny_roc_dir), "--input", str(corpus_file),
                                      "--output", str(out), "--quiet", "--cache-dir", str(cache_dir)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["line"] for r in rows] == list(range(1, len(JSONL_CASES) + 1))
    skips = [c for c in JSONL_CASES if c["expect"] == "skip"]
    assert f"{len(JSONL_CASES) - len(skips)} predicted, {len(skips)} skipped" in result.stderr
    assert "Traceback" not in result.output
    for case, row in zip(JSONL_CASES, rows, strict=True):
        if case["expect"] == "skip":
            assert case["message"] in row["error"] and row.get("field") == case["field"], case["id"]
        else:
            assert "error" not in row and row.get("id") == case["line"].get("id"), case["id"]
            for key in ("head", "tail"):
                for k, v in case.get(key, {}).items():
                    assert row[key][k] == v, (case["id"], key, k)
            assert row["has_image"] is case.get("has_image", False)
