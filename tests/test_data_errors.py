"""Bad input: every error names the file, line and field; ``on_error="skip"`` keeps the rest; never ``eval``."""

from __future__ import annotations

import builtins
import json
import shutil
from pathlib import Path

import pytest

from rocmre.backbones.images import ImageLoadError, open_image
from rocmre.data import DataFormatError, read_jsonl, read_mnre, read_more
from rocmre.data.mnre import read_label_map
from rocmre.data.stats import dataset_stats

FIXTURES = Path(__file__).parent / "fixtures"
LABELS = ["None", "/per/per/peer", "/per/org/member_of"]
GOOD = {"token": ["Obama", "meets", "Joe", "Biden", "."], "h": {"name": "Obama", "pos": [0, 1]},
        "t": {"name": "Joe Biden", "pos": [2, 4]}, "img_id": "a.jpg", "relation": "/per/per/peer"}


@pytest.fixture
def no_eval(monkeypatch):
    """Parsing must never evaluate code: ``eval`` fails the test if it is called."""

    def refuse(*args, **kwargs):
        raise AssertionError("eval called while parsing data")

    monkeypatch.setattr(builtins, "eval", refuse)


def rec(**changes) -> str:
    d = json.loads(json.dumps(GOOD))
    for k, v in changes.items():
        if v is None:
            d.pop(k, None)
        else:
            d[k] = v
    return repr(d)


def write_mnre(root: Path, lines: list[str], labels: list[str] | None = LABELS, split: str = "train") -> Path:
    """An RE_data-style folder; returns the text file."""
    txt = root / "txt"
    txt.mkdir(parents=True, exist_ok=True)
    if labels is not None:
        (txt / "ours_rel2id.json").write_text(json.dumps({lab: i for i, lab in enumerate(labels)}))
    f = txt / f"ours_{split}.txt"
    f.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return f


def assert_located(err: DataFormatError, path: Path, line: int | None, field: str | None, *words: str) -> None:
    assert err.path == str(path) and err.line == line and err.field == field
    msg = str(err)
    assert (f"{path}:{line}" if line is not None else str(path)) in msg
    if field is not None:
        assert f"field '{field}'" in msg
    for w in words:
        assert w in msg


def test_good_line_parses(tmp_path):
    f = write_mnre(tmp_path, [rec()])
    ds = read_mnre(tmp_path, "train")
    assert len(ds) == 1 and ds[0].source == f"{f}:1"


def test_malformed_line(tmp_path):
    f = write_mnre(tmp_path, [rec(), "{'token': ['a', 'b'], 'h': "])
    with pytest.raises(DataFormatError) as e:
        read_mnre(tmp_path, "train")
    assert_located(e.value, f, 2, None, "not a Python/JSON literal")


def test_not_a_dict(tmp_path):
    f = write_mnre(tmp_path, ["['token', 'h']"])
    with pytest.raises(DataFormatError) as e:
        read_mnre(tmp_path, "train")
    assert_located(e.value, f, 1, None, "expected a dict, got list")


@pytest.mark.parametrize("code", ["__import__('os').system('echo hi')",
                                  "{'token': __import__('pathlib').Path('SENTINEL').touch()}",
                                  "open('/etc/passwd').read()"])
def test_code_is_never_evaluated(tmp_path, monkeypatch, capfd, no_eval, code):
    monkeypatch.chdir(tmp_path)
    f = write_mnre(tmp_path, [code])
    with pytest.raises(DataFormatError) as e:
        read_mnre(tmp_path, "train")
    assert_located(e.value, f, 1, None, "not a Python/JSON literal")
    assert not (tmp_path / "SENTINEL").exists()
    assert "hi" not in capfd.readouterr().out


@pytest.mark.parametrize("drop,field", [("relation", "relation"), ("token", "token"), ("h", "h"), ("img_id", "img_id")])
def test_missing_field(tmp_path, drop, field):
    f = write_mnre(tmp_path, [rec(), rec(), rec(**{drop: None})])
    with pytest.raises(DataFormatError) as e:
        read_mnre(tmp_path, "train")
    assert_located(e.value, f, 3, field, "missing")


def test_missing_entity_subfields(tmp_path):
    f = write_mnre(tmp_path, [rec(t={"name": "Joe Biden"})])
    with pytest.raises(DataFormatError) as e:
        read_mnre(tmp_path, "train")
    assert_located(e.value, f, 1, "t.pos", "missing")
    f = write_mnre(tmp_path, [rec(h={"pos": [0, 1]})])
    with pytest.raises(DataFormatError) as e:
        read_mnre(tmp_path, "train")
    assert_located(e.value, f, 1, "h.name", "missing")


def test_wrong_types(tmp_path):
    f = write_mnre(tmp_path, [rec(relation=5)])
    with pytest.raises(DataFormatError) as e:
        read_mnre(tmp_path, "train")
    assert_located(e.value, f, 1, "relation", "expected str, got int")
    f = write_mnre(tmp_path, [rec(h={"name": "Obama", "pos": [0.0, 1]})])
    with pytest.raises(DataFormatError) as e:
        read_mnre(tmp_path, "train")
    assert_located(e.value, f, 1, "h.pos", "integers")


@pytest.mark.parametrize("pos", [[3, 9], [-1, 1], [2, 2], [4, 2]])
def test_span_out_of_range(tmp_path, pos):
    f = write_mnre(tmp_path, [rec(), rec(t={"name": "Joe Biden", "pos": pos})])
    with pytest.raises(DataFormatError) as e:
        read_mnre(tmp_path, "train")
    assert_located(e.value, f, 2, "t.pos", "out of range for 5 tokens")


def test_span_not_matching_name(tmp_path):
    f = write_mnre(tmp_path, [rec(h={"name": "Biden", "pos": [0, 1]})])
    with pytest.raises(DataFormatError) as e:
        read_mnre(tmp_path, "train")
    assert_located(e.value, f, 1, "h.pos", "'Obama'", "not the entity name 'Biden'")


def test_unknown_label(tmp_path):
    f = write_mnre(tmp_path, [rec(), rec(relation="/per/per/frenemy")])
    with pytest.raises(DataFormatError) as e:
        read_mnre(tmp_path, "train")
    assert_located(e.value, f, 2, "relation", "'/per/per/frenemy' is not in the label map")


@pytest.mark.parametrize("tokens,words", [([], "empty token list"), (["a", 3], "every token must be a string")])
def test_bad_tokens(tmp_path, tokens, words):
    f = write_mnre(tmp_path, [rec(token=tokens)])
    with pytest.raises(DataFormatError) as e:
        read_mnre(tmp_path, "train")
    assert_located(e.value, f, 1, "token", words)


def test_missing_image_under_error_policy(tmp_path):
    from PIL import Image

    f = write_mnre(tmp_path, [rec(), rec(img_id="b.jpg")])
    (tmp_path / "img_org" / "train").mkdir(parents=True)
    Image.new("RGB", (4, 4), "red").save(tmp_path / "img_org" / "train" / "a.jpg")
    ds = read_mnre(tmp_path, "train")  # default: mark
    assert [r.has_image for r in ds] == [True, False]
    with pytest.raises(DataFormatError) as e:
        read_mnre(tmp_path, "train", missing_image="error")
    assert_located(e.value, f, 2, "img_id", "'b.jpg' not found")
    # under "error", an image that exists but does not decode stops at its line too (under "mark" it loads lazily)
    (tmp_path / "img_org" / "train" / "a.jpg").write_bytes(b"x")
    assert [r.has_image for r in read_mnre(tmp_path, "train")] == [True, False]
    with pytest.raises(DataFormatError) as e:
        read_mnre(tmp_path, "train", missing_image="error")
    assert_located(e.value, f, 1, "img_id", str(tmp_path / "img_org" / "train" / "a.jpg"), "not a recognised image")
    with pytest.raises(ValueError):
        read_mnre(tmp_path, "train", missing_image="substitute")


def test_unreadable_image(tmp_path):
    corrupt = tmp_path / "broken.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 definitely not a JPEG")
    with pytest.raises(ImageLoadError) as e:
        open_image(corrupt)
    assert str(corrupt) in str(e.value) and e.value.source == str(corrupt)
    with pytest.raises(ImageLoadError, match="broken-upload.jpg"):
        open_image(corrupt.read_bytes(), name="broken-upload.jpg")
    with pytest.raises(ImageLoadError, match=str(tmp_path / "absent.jpg")):
        open_image(tmp_path / "absent.jpg")


def test_unreadable_image_under_strict_policy(tmp_path):
    f = write_mnre(tmp_path, [rec(), rec(img_id="bad.jpg"), rec(img_id="good.png")])
    img_dir = tmp_path / "img_org" / "train"
    img_dir.mkdir(parents=True)
    (img_dir / "bad.jpg").write_bytes(b"GIF89a truncated")
    from PIL import Image

    Image.new("RGB", (4, 4), "red").save(img_dir / "good.png")
    st = dataset_stats(tmp_path, ["train"])  # checked cheaply by default: a problem, counted as without image
    s = st.split("train")
    assert (s.with_image, s.without_image, s.unique_images_present, len(s.problems)) == (1, 2, 1, 1)
    assert s.problems[0].source == f"{f}:2" and s.problems[0].message.endswith("(treated as missing)")
    with pytest.raises(DataFormatError) as e:
        dataset_stats(tmp_path, ["train"], strict_images=True)
    assert_located(e.value, f, 2, "img_id", str(img_dir / "bad.jpg"), "cannot load image")
    st = dataset_stats(tmp_path, ["train"], strict_images=True, skip_bad_lines=True)
    s = st.split("train")
    assert s.records == 3 and s.with_image == 1 and s.without_image == 2 and len(s.problems) == 1
    assert s.problems[0].source == f"{f}:2" and str(img_dir / "bad.jpg") in s.problems[0].message


@pytest.mark.parametrize("mapping,label,words", [
    ('{"None": 0,\n "a": 1,\n "b": 3}', "b", "id 3 is out of range"),
    ('{"None": 0,\n "a": 1,\n "b": 1}', "b", "also the id of 'a'"),
    ('{"None": 0,\n "a": "1"}', "a", "must be an integer"),
    ('{"None": 0,\n "a": 1,\n "a": 2}', "a", "given twice"),
])
def test_label_map_gaps_and_repeats(tmp_path, mapping, label, words):
    path = tmp_path / "rel2id.json"
    path.write_text(mapping)
    with pytest.raises(DataFormatError) as e:
        read_label_map(path, "None")
    line = 3 if mapping.count("\n") == 2 else 2
    if words == "given twice":
        line = 2  # the label's first appearance
    assert_located(e.value, path, line, label, words)


def test_label_map_invalid_json_and_negative(tmp_path):
    path = tmp_path / "rel2id.json"
    path.write_text('{"None": 0,\n "a": 1,,\n}')
    with pytest.raises(DataFormatError) as e:
        read_label_map(path, "None")
    assert_located(e.value, path, 2, None, "not valid JSON")
    path.write_text('{"none": 0, "a": 1}')
    assert read_label_map(path, None).negative_label == "none"
    with pytest.raises(DataFormatError) as e:
        read_label_map(path, "None")
    assert_located(e.value, path, None, "negative_label", "'None' is not in the label map")


def test_label_map_error_through_reader(tmp_path):
    write_mnre(tmp_path, [rec()], labels=None)
    bad = tmp_path / "txt" / "ours_rel2id.json"
    bad.write_text('{"None": 0, "/per/per/peer": 2}')
    with pytest.raises(DataFormatError) as e:
        read_mnre(tmp_path, "train")
    assert_located(e.value, bad, 1, "/per/per/peer", "ids must be 0..1")


def test_crop_index_size_disagrees(tmp_path):
    import torch

    f = write_mnre(tmp_path, [rec(), rec()])
    crop_file = tmp_path / "txt" / "mre_train_dict.pth"
    torch.save({0: ["0_crop_0.png"], 1: ["1_crop_1.png"], 2: ["2_crop_2.png"]}, crop_file)
    with pytest.raises(DataFormatError) as e:
        read_mnre(tmp_path, "train")
    assert_located(e.value, crop_file, None, None, "3 entries", f"{f.name} has 2 records", "misalign")
    torch.save({0: ["0_crop_0.png"], 1: ["1_crop_1.png"]}, crop_file)
    assert len(read_mnre(tmp_path, "train")) == 2
    crop_file.write_bytes(b"not a torch file")
    with pytest.raises(DataFormatError) as e:
        read_mnre(tmp_path, "train")
    assert_located(e.value, crop_file, None, None, "cannot read the crop index")


def test_skip_keeps_good_records_and_counts_problems(tmp_path, no_eval):
    lines = [rec(), "{'token': [", rec(relation="/per/per/frenemy"), rec(token=[]),
             rec(h={"name": "Biden", "pos": [0, 1]}), rec(img_id="c.jpg"), "__import__('os').system('echo hi')"]
    f = write_mnre(tmp_path, lines)
    ds = read_mnre(tmp_path, "train", on_error="skip")
    assert [r.source for r in ds] == [f"{f}:1", f"{f}:6"]
    assert sorted(p.source for p in ds.problems) == sorted(f"{f}:{n}" for n in (2, 3, 4, 5, 7))
    assert all(p.message.startswith(p.source) for p in ds.problems)
    by_line = {p.source: p.message for p in ds.problems}
    assert "field 'relation'" in by_line[f"{f}:3"] and "field 'token'" in by_line[f"{f}:4"]
    st = dataset_stats(tmp_path, ["train"], skip_bad_lines=True)
    assert st.split("train").records == 2 and st.num_problems == 5
    with pytest.raises(DataFormatError):
        dataset_stats(tmp_path, ["train"])


def test_crop_index_counts_skipped_lines(tmp_path):
    """A skipped line still takes its slot in the crop index, so later records keep their own crops."""
    import torch

    write_mnre(tmp_path, [rec(), "broken", rec()])
    crops = tmp_path / "img_vg" / "train" / "crops"
    crops.mkdir(parents=True)
    for name in ("0_a.png", "1_b.png", "2_c.png"):
        (crops / name).write_bytes(b"png")
    torch.save({0: ["0_a.png"], 1: ["1_b.png"], 2: ["2_c.png"]}, tmp_path / "txt" / "mre_train_dict.pth")
    ds = read_mnre(tmp_path, "train", on_error="skip")
    assert [[p.name for p in r.crop_paths] for r in ds] == [["0_a.png"], ["2_c.png"]]


# --- MORE and JSONL -------------------------------------------------------------------------------------------------


def write_more(root: Path, lines: list[str]) -> Path:
    shutil.copytree(FIXTURES / "more", root, dirs_exist_ok=True)
    f = root / "txt" / "train.txt"
    f.write_text("\n".join(lines) + "\n")
    return f


MORE_GOOD = {"img_id": "x.jpg", "token": ["Italy", "wins"], "h": {"name": "Italy", "pos": [0, 1]},
             "t": {"name": "flag", "pos": ["0.5", "0.5", "0.2", "0.2"]}, "relation": "none"}


@pytest.mark.parametrize("tail,field,words", [
    ({"name": "flag"}, "t.name", "has no box"),
    ({"name": "flag", "pos": ["0.5", "0.5", "0.2"]}, "t.pos", "expected 4 numbers"),
    ({"name": "flag", "pos": ["0.5", "0.5", "wide", "0.2"]}, "t.pos", "must be numbers"),
    ({"name": "flag", "pos": [0.5, 0.5, 1.5, 0.2]}, "t.pos", "not normalised"),
    ({"name": "flag", "pos": [0.5, 0.5, 0.0, 0.2]}, "t.pos", "positive size"),
    ({"pos": [0.5, 0.5, 0.1, 0.2]}, "t.name", "missing"),
])
def test_more_bad_tail(tmp_path, tail, field, words):
    f = write_more(tmp_path, [repr(MORE_GOOD), repr({**MORE_GOOD, "t": tail})])
    with pytest.raises(DataFormatError) as e:
        read_more(tmp_path, "train")
    assert_located(e.value, f, 2, field, words)
    ds = read_more(tmp_path, "train", on_error="skip")
    assert len(ds) == 1 and len(ds.problems) == 1 and ds.problems[0].source == f"{f}:2"


def test_more_unknown_label_and_missing_image(tmp_path):
    f = write_more(tmp_path, [repr(MORE_GOOD), repr({**MORE_GOOD, "relation": "/per/per/frenemy"})])
    with pytest.raises(DataFormatError) as e:
        read_more(tmp_path, "train")
    assert_located(e.value, f, 2, "relation", "not in the label map")
    f = write_more(tmp_path, [repr(MORE_GOOD)])
    with pytest.raises(DataFormatError) as e:
        read_more(tmp_path, "train", missing_image="error")
    assert_located(e.value, f, 1, "img_id", "'x.jpg' not found")


def test_more_bad_box_in_object_dict(tmp_path):
    import torch

    write_more(tmp_path, [repr({**MORE_GOOD, "t": {"name": "flag"}})])
    ent = tmp_path / "ent_train_dict.pth"
    torch.save({"x.jpg": {"flag": [0.5, 0.5, 2.0, 0.1]}}, ent)
    with pytest.raises(DataFormatError) as e:
        read_more(tmp_path, "train")
    assert_located(e.value, ent, None, "x.jpg.flag", "not normalised")


def test_jsonl_errors(tmp_path):
    f = tmp_path / "d.jsonl"
    good = {"tokens": ["A", "likes", "B"], "head": {"name": "A", "start": 0, "end": 1},
            "tail": {"name": "B", "start": 2, "end": 3}, "relation": "r"}
    cases = [
        ("{'tokens': []}", None, "invalid JSON"),
        ("[1, 2]", None, "expected an object"),
        (json.dumps({**good, "tokens": []}), "tokens", "empty token list"),
        (json.dumps({k: v for k, v in good.items() if k != "tokens"}), "text", "give 'text' (a string) or 'tokens'"),
        (json.dumps({**good, "head": {"name": "A", "box": [0.5, 0.5, 0.1, 0.1]}}), "head", "must be a text span"),
        (json.dumps({**good, "tail": {"name": "B", "start": 1, "end": 3}}), "tail", "covers 'likes B', not 'B'"),
        (json.dumps({**good, "tail": {"name": "B", "start": 2}}), "tail", "'start' is given without 'end'"),
        (json.dumps({**good, "relation": 3}), "relation", "must be a string"),
        (json.dumps({**good, "image": "nope.jpg"}), "image", "image not found"),
    ]
    for text, field, words in cases:
        f.write_text(json.dumps(good) + "\n" + text + "\n")
        with pytest.raises(DataFormatError) as e:
            read_jsonl(f, missing_image="error")
        assert_located(e.value, f, 2, field, words)
    f.write_text("\n".join([json.dumps(good)] + [c[0] for c in cases] + [json.dumps(good)]) + "\n")
    ds = read_jsonl(f, on_error="skip", missing_image="error")
    assert len(ds) == 2 and len(ds.problems) == len(cases)
    with pytest.raises(DataFormatError) as e:
        read_jsonl(f, labels=["None"], on_error="raise")
    assert e.value.line == 2  # the first bad line comes before any label check
