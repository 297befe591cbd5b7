"""The bad-input corpus of data files and images (tests/bad_inputs/data_files.json), plus the model card, the
README's own example with a missing image, and unreadable images in prediction."""

from __future__ import annotations

import io
import json
import logging
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from rocmre.backbones.images import ImageLoadError, check_image, open_image
from rocmre.data import DataFormatError, load_split, read_mnre, read_more
from rocmre.data.stats import dataset_stats

CORPUS = Path(__file__).parent / "bad_inputs" / "data_files.json"
CASES: list[dict[str, Any]] = json.loads(CORPUS.read_text(encoding="utf-8"))["cases"]
ERRORS = {"DataFormatError": DataFormatError, "ImageLoadError": ImageLoadError, "ValueError": ValueError,
          "FileNotFoundError": FileNotFoundError}
LABELS = {"None": 0, "/per/per/peer": 1}
MORE_LABELS = {"none": 0, "/loc/loc/contain": 1}


def _png_with_header_size(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header claims ``width`` x ``height`` (a decompression bomb, found from the header alone)."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    ihdr = data[12:29]  # type (4 bytes) + 13 data bytes
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    return bytes(data)


def _noise_jpeg(width: int, height: int) -> bytes:
    import numpy as np

    pixels = (np.random.default_rng(0).random((height, width, 3)) * 255).astype("uint8")
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buf, "PNG")
    return buf.getvalue()


def make_image(kind: str, folder: Path) -> Path:
    """Write the image ``kind`` as ``folder/<kind>.jpg`` (nothing for ``missing``, a folder for ``directory``)."""
    path = folder / f"{kind}.jpg"
    folder.mkdir(parents=True, exist_ok=True)
    contents = {
        "good_png": lambda: _png(8, 8),
        "good_jpeg": lambda: _noise_jpeg(64, 48),
        "truncated_jpeg": lambda: _noise_jpeg(256, 256)[:6000],
        "zero_bytes": lambda: b"",
        "text": lambda: b"this is not an image\n",
        "png_20000x1": lambda: _png(20000, 1),
        "png_60000x1": lambda: _png(60000, 1),
        "png_header_10000x10000": lambda: _png_with_header_size(10000, 10000),
    }
    if kind == "directory":
        path.mkdir()
    elif kind != "missing":
        path.write_bytes(contents[kind]())
    return path


def _mnre_line(img_id: str, relation: str = "None") -> str:
    return repr({"token": ["Obama", "meets", "Biden"], "h": {"name": "Obama", "pos": [0, 1]},
                 "t": {"name": "Biden", "pos": [2, 3]}, "img_id": img_id, "relation": relation})


def _write_mnre(root: Path, lines: list[str], split: str = "train", label_map: str | None = None) -> Path:
    txt = root / "txt"
    txt.mkdir(parents=True, exist_ok=True)
    (txt / "ours_rel2id.json").write_text(label_map if label_map is not None else json.dumps(LABELS),
                                          encoding="utf-8")
    f = txt / f"ours_{split}.txt"
    f.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return f


def _stats_folder(root: Path, kind: str) -> Path:
    """Three records: a good image, the ``kind`` image, an image that does not exist."""
    images = root / "img_org" / "train"
    make_image("good_png", images)
    bad = make_image(kind, images)
    return _write_mnre(root, [_mnre_line("good_png.jpg"), _mnre_line(bad.name), _mnre_line("absent.jpg")])


def _run(case: dict[str, Any], tmp_path: Path) -> Any:
    """Run one case; returns what the expectations are checked against."""
    target = case["target"]
    if target in ("mnre", "more", "jsonl"):
        if target == "mnre":
            _write_mnre(tmp_path, case["lines"], case.get("split", "train"), case.get("label_map"))
            ds = read_mnre(tmp_path, case.get("split", "train"), on_error=case.get("on_error", "raise"))
        elif target == "more":
            (tmp_path / "txt").mkdir()
            (tmp_path / "txt" / "train.txt").write_text("".join(x + "\n" for x in case["lines"]), encoding="utf-8")
            (tmp_path / "rel2id.json").write_text(json.dumps(MORE_LABELS), encoding="utf-8")
            ds = read_more(tmp_path, "train", on_error=case.get("on_error", "raise"))
        else:
            f = tmp_path / "data.jsonl"
            f.write_text("".join(x + "\n" for x in case["lines"]), encoding="utf-8")
            return load_split(f, "train", on_error=case.get("on_error", "raise"),
                              require_records=case.get("require_records", False))
        if case.get("require_records"):
            ds.require_nonempty()
        return ds
    if target in ("open_image", "check_image"):
        path = make_image(case["image"], tmp_path)
        source = path.read_bytes() if case.get("as") == "bytes" else path
        if target == "open_image":
            return open_image(source).size
        return check_image(source)
    if target == "stats":
        _stats_folder(tmp_path, case["image"])
        return dataset_stats(tmp_path, ["train"], strict_images=case.get("strict", False)).split("train")
    if target == "read_error_policy":
        _stats_folder(tmp_path, case["image"])
        ds = read_mnre(tmp_path, "train", missing_image="error", image_dir=tmp_path / "img_org" / "train",
                       on_error=case.get("on_error", "raise"))
        return ds
    if target == "collate":
        from rocmre.modeling.batching import PairCollator
        from rocmre.modeling.features import PairFeatures
        from rocmre.modeling.runtime import ImageFeatures

        path = make_image(case["image"], tmp_path / "images")
        source = path.read_bytes() if case.get("as") == "bytes" else path
        features = ImageFeatures("efficientnet-lite0", tmp_path / "cache", case.get("policy", "mark"))
        collate = PairCollator(0, features, 1280, 49, use_image=True)
        item = PairFeatures([101, 7, 8, 102], 1, 2, "person", "person", image=source)
        batch = collate([item])
        return {"has_image": bool(batch["has_image"][0]), "unreadable": len(features.unreadable),
                "regions": tuple(batch["image_regions"].shape)}
    raise AssertionError(f"unknown target {target!r}")


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_bad_data_file(case: dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    expect = case["expect"]
    if "error" in expect:
        with pytest.raises(ERRORS[expect["error"]]) as info:
            _run(case, tmp_path)
        err = info.value
        assert type(err) is ERRORS[expect["error"]], repr(err)
        assert expect["match"] in str(err), str(err)
        if "line" in expect:
            assert err.line == expect["line"], str(err)
        if "file" in expect:
            assert err.path == str(tmp_path / expect["file"]), str(err)
            assert str(err).startswith(str(tmp_path / expect["file"]))
        return
    with caplog.at_level(logging.WARNING):
        got = _run(case, tmp_path)
    if "size" in expect:
        assert list(got) == expect["size"]
    if case["target"] in ("mnre", "more", "jsonl", "read_error_policy"):
        assert (len(got), len(got.problems)) == (expect["records"], expect["problems"])
        if "labels" in expect:
            assert len(got.labels) == expect["labels"]
    if case["target"] == "stats":
        assert (got.with_image, got.without_image, len(got.problems)) == \
            (expect["with_image"], expect["without_image"], expect["problems"])
        if "match" in expect:
            assert expect["match"] in got.problems[0].message
        if "line" in expect:
            assert got.problems[0].source.endswith(f":{expect['line']}")
    if case["target"] == "collate":
        assert (got["has_image"], got["unreadable"]) == (expect["has_image"], expect["unreadable"])
        assert got["regions"] == (1, 0, 1280)  # a batch without any usable image carries no region tokens
        warnings = [r for r in caplog.records if "treated as missing" in r.getMessage()]
        assert len(warnings) == 1


def test_corpus_size() -> None:
    assert len(CASES) >= 12 and len({c["id"] for c in CASES}) == len(CASES)


# --- data layer: empty splits ---------------------------------------------------------------------------------------


def test_load_split_require_records(tmp_path: Path) -> None:
    f = _write_mnre(tmp_path, [])
    assert len(load_split(tmp_path, "train")) == 0  # reading alone is fine (e.g. an empty test split)
    with pytest.raises(DataFormatError) as e:
        load_split(tmp_path, "train", require_records=True)
    assert str(e.value) == f"{f}: the train split has no records: the file holds no records (nothing to train or " \
                           "evaluate on)"
    _write_mnre(tmp_path, [_mnre_line("a.jpg")])
    assert len(load_split(tmp_path, "train", require_records=True)) == 1


# --- model card -----------------------------------------------------------------------------------------------------


def test_model_card_has_no_absolute_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml

    from rocmre.training.model_card import portable_path, write_model_card

    data_dir = tmp_path / "machine" / "data"
    (data_dir / "mnre" / "RE_data").mkdir(parents=True)
    monkeypatch.setenv("ROCMRE_DATA", str(data_dir))
    model = tmp_path / "machine" / "runs" / "my_model"
    model.mkdir(parents=True)
    (model / "config.json").write_text(json.dumps({
        "model_type": "roc", "text_backbone": "minilm-l6", "vision_backbone": "efficientnet-lite0", "use_image": True,
        "fusion_layers": 1, "entity_tagger": "spacy", "use_types": True, "use_positions": True,
        "labels": ["None", "/per/per/peer"], "negative_label": "None"}))
    (model / "run_config.yaml").write_text(yaml.safe_dump({
        "seed": 1, "data": {"path": str(data_dir / "mnre" / "RE_data"), "train_split": "train", "val_split": "val"}}))
    card = write_model_card(model).read_text(encoding="utf-8")
    assert str(tmp_path) not in card and "/machine/" not in card
    assert "trained on `mnre/RE_data`" in card and "from_pretrained('my_model')" in card
    assert "rocmre evaluate --model my_model --split test" in card
    assert portable_path("/elsewhere/corpora/more/MORE") == "more/MORE"
    assert portable_path("mnre/RE_data") == "mnre/RE_data"
    assert portable_path(model / "descriptions.json", model) == "descriptions.json"


# --- prediction with unreadable images (a trained model) --------------------------------------------------------------


def test_readme_example_with_missing_image(tiny_roc_dir: Path, cache_dir: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The README's ``image="photo.jpg"`` (which does not exist) predicts from the text, with one warning; so do
    other unreadable images, and the prediction equals the one without an image."""
    from rocmre import RelationExtractor

    monkeypatch.chdir(tmp_path)
    m = RelationExtractor.from_pretrained(tiny_roc_dir, cache_dir=cache_dir)
    args = ("Rafael Nadal gets engaged to Mery Perello",)
    kwargs = {"head": "Rafael Nadal", "tail": "Mery Perello", "top_k": 3}
    plain = m.predict(*args, image=None, **kwargs)
    with caplog.at_level(logging.WARNING):
        p = m.predict(*args, image="photo.jpg", **kwargs)
    assert [w.getMessage() for w in caplog.records if w.levelno >= logging.WARNING] == [
        "unreadable image treated as missing: cannot load image photo.jpg: no such file"]
    assert p.relation == plain.relation and p.score == pytest.approx(plain.score, abs=1e-5)
    for kind in ("zero_bytes", "truncated_jpeg", "directory", "text"):
        path = make_image(kind, tmp_path / "imgs")
        assert m.predict(*args, image=path, **kwargs).score == pytest.approx(plain.score, abs=1e-5)
    for raw in (b"", b"not an image", _noise_jpeg(64, 64)[:500]):
        assert m.predict(*args, image=raw, **kwargs).score == pytest.approx(plain.score, abs=1e-5)
