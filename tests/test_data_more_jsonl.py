"""MORE (object tails with boxes, both record forms) and rocmre's JSONL format (round trip, text, box tails)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from rocmre.data import DataFormatError, Entity, RelationRecord, detect_format, load_split, read_jsonl, read_more
from rocmre.data.inputs import record_from_json
from rocmre.data.jsonl import record_to_json
from rocmre.data.more import write_label_map

FIXTURES = Path(__file__).parent / "fixtures"
A = "04008917-9552-57d5-91cc-299073f2f005.jpg"
B = "1b6d3c3e-2f0a-5a51-9d7e-3f1c2b6a0e11.jpg"
C = "7e2f5d10-0c4b-5e8e-8a57-91d6e4c2b9a3.jpg"
D = "c0ffee00-0000-5000-8000-000000000000.jpg"
MORE_LABELS = ["none", "/per/misc/present_in", "/per/loc/place_of_residence", "/org/loc/locate_at",
               "/per/org/member_of"]
#: {split: {img_id: {object: (cx, cy, w, h)}}}, as MOREformer's ent_{split}_dict.pth.
OBJECTS = {
    "train": {A: {"player 1": [0.5, 0.5, 0.4, 0.6]}, D: {"ball": [0.2, 0.8, 0.1, 0.1]}},
    "valid": {B: {"man in suit": [0.3, 0.5, 0.4, 0.9], "flag": [0.8, 0.2, 0.2, 0.3]}},
    "test": {C: {"store front": [0.3, 0.4, 0.5, 0.6], "logo": [0.5, 0.1, 0.2, 0.1]}},
}
#: Which MNRE test image stands in for which MORE image (D is deliberately missing).
IMAGE_SOURCES = {("train", A): "twitter_19_31_14_34.jpg", ("valid", B): "twitter_19_31_3_11.jpg",
                 ("test", C): "twitter_19_31_0_62.jpg"}


def _mnre_images() -> Path:
    return Path(os.environ.get("ROCMRE_DATA", "/work/shared/data")) / "mnre" / "RE_data" / "img_org" / "test"


@pytest.fixture(scope="module")
def more_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The MORE fixture: text and rel2id from tests/fixtures/more, object dicts and images built here."""
    import torch

    root = tmp_path_factory.mktemp("more")
    shutil.copytree(FIXTURES / "more", root, dirs_exist_ok=True)
    for split, objects in OBJECTS.items():
        torch.save(objects, root / f"ent_{split}_dict.pth")
        (root / "img_org" / split).mkdir(parents=True)
    for (split, img_id), source in IMAGE_SOURCES.items():
        if (_mnre_images() / source).is_file():
            shutil.copyfile(_mnre_images() / source, root / "img_org" / split / img_id)
    return root


def _have_images(root: Path) -> bool:
    return (root / "img_org" / "train" / A).is_file()


def test_more_detected_and_labels(more_root):
    assert detect_format(more_root) == "more"
    ds = load_split(more_root, "train")
    assert ds.name == "more" and ds.split == "train"
    assert ds.labels.labels == MORE_LABELS and ds.labels.negative_label == "none"
    assert json.loads((more_root / "rel2id.json").read_text()) == {lab: i for i, lab in enumerate(MORE_LABELS)}
    assert len((more_root / "rel2id.json").read_text().strip().splitlines()) == 1


def test_more_tails_are_objects_with_boxes(more_root):
    ds = read_more(more_root, "train")
    assert len(ds) == 3 and not ds.problems
    pre, released, _ = ds
    # pre-release form: head name given as tokens, box strings in t['pos']
    assert pre.head == Entity("World Cup", 5, 7)
    assert pre.tail.is_object and pre.tail.name == "barbara bonansea" and pre.tail.type == "object"
    assert pre.tail.box == pytest.approx((0.439167, 0.130326, 0.075, 0.185464))
    assert all(isinstance(v, float) for v in pre.tail.box)
    assert pre.relation == "/per/misc/present_in"
    # released form: the box comes from ent_train_dict.pth
    assert released.head == Entity("Italy", 0, 1)
    assert released.tail.box == (0.5, 0.5, 0.4, 0.6)
    with pytest.raises(ValueError, match="no token span"):
        _ = released.tail.span
    assert [r.relation for r in ds] == ["/per/misc/present_in", "/per/loc/place_of_residence", "none"]


def test_more_dict_box_wins_over_t_pos(more_root):
    ds = read_more(more_root, "test")
    assert ds[0].tail.box == (0.3, 0.4, 0.5, 0.6)
    assert ds[1].tail.box == (0.5, 0.1, 0.2, 0.1)


def test_more_val_reads_valid(more_root):
    for name in ("val", "valid", "dev"):
        ds = read_more(more_root, name)
        assert ds.split == "val" and len(ds) == 2
        assert Path(ds[0].source.rpartition(":")[0]).name == "valid.txt"
    with pytest.raises(ValueError, match="unknown split"):
        read_more(more_root, "holdout")


def test_more_image_presence(more_root):
    if not _have_images(more_root):
        pytest.skip("MNRE test images (used as stand-ins) are not available")
    train = read_more(more_root, "train")
    assert [r.has_image for r in train] == [True, True, False]
    assert train[0].image_path == more_root / "img_org" / "train" / A
    assert train[2].image_id == D and train[2].image_path is None
    assert read_more(more_root, "val").num_with_image == 2
    assert read_more(more_root, "test").num_with_image == 2


def test_more_box_crops_the_image(more_root):
    if not _have_images(more_root):
        pytest.skip("MNRE test images (used as stand-ins) are not available")
    from rocmre.backbones.images import crop_box, open_image

    r = read_more(more_root, "train")[1]
    image = open_image(r.image_path)
    crop = crop_box(image, r.tail.box)
    w, h = image.size
    assert abs(crop.size[0] - 0.4 * w) <= 2 and abs(crop.size[1] - 0.6 * h) <= 2


def test_more_without_object_dict_uses_t_pos(more_root, tmp_path):
    shutil.copytree(more_root / "txt", tmp_path / "txt")
    write_label_map(MORE_LABELS, tmp_path / "rel2id.json")
    (tmp_path / "txt" / "train.txt").write_text(
        (more_root / "txt" / "train.txt").read_text().splitlines()[0] + "\n")
    ds = read_more(tmp_path, "train")
    assert len(ds) == 1 and ds[0].tail.box == pytest.approx((0.439167, 0.130326, 0.075, 0.185464))
    assert ds[0].has_image is False


def test_more_stats(more_root):
    from rocmre.data.stats import dataset_stats

    st = dataset_stats(more_root)
    assert st.format == "more" and st.negative_label == "none"
    assert [s.records for s in st.splits] == [3, 2, 2]
    assert st.split("train").label_counts["none"] == 1
    if _have_images(more_root):
        assert [s.with_image for s in st.splits] == [2, 2, 2]


# --- JSONL ---------------------------------------------------------------------------------------------------------


def _fields(r: RelationRecord) -> tuple:
    return (r.tokens, r.head, r.tail, r.relation, r.image_path)


def test_jsonl_fixture():
    ds = read_jsonl(FIXTURES / "jsonl" / "sample.jsonl")
    assert len(ds) == 4 and not ds.problems
    first, from_text, boxed, unlabelled = ds
    assert first.head == Entity("Obama", 0, 1, "person") and first.tail.type == "location"
    assert first.image_id == "images/1.jpg" and not first.has_image  # the fixture ships no image
    assert from_text.tokens == ["Merkel", "meets", "Obama", "in", "Berlin"]
    assert from_text.tail == Entity("Obama", 2, 3)
    assert boxed.tail.is_object and boxed.tail.box == (0.25, 0.5, 0.2, 0.4) and boxed.tail.type == "object"
    assert unlabelled.relation is None and unlabelled.head.span == (1, 3)
    assert ds.labels.negative_label == "None"
    assert ds.labels.labels == ["None", "/per/loc/place_of_residence", "/per/misc/present_in"]
    assert first.source.endswith("sample.jsonl:1") and boxed.source.endswith("sample.jsonl:4")  # blank line 3


def test_jsonl_image_relative_to_file(tmp_path):
    shutil.copyfile(FIXTURES / "jsonl" / "sample.jsonl", tmp_path / "data.jsonl")
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "1.jpg").write_bytes(b"not decoded at read time")
    ds = read_jsonl(tmp_path / "data.jsonl")
    assert ds[0].image_path == tmp_path / "images" / "1.jpg" and ds.num_with_image == 1
    assert load_split(tmp_path / "data.jsonl").split == "data"


def test_jsonl_round_trip(more_root):
    records = list(read_jsonl(FIXTURES / "jsonl" / "sample.jsonl")) + list(read_more(more_root, "train"))
    for r in records:
        obj = json.loads(json.dumps(record_to_json(r)))
        back = record_from_json(obj, "mem.jsonl", 7, None)
        assert _fields(back) == _fields(r)
        assert back.source == "mem.jsonl:7"


def test_jsonl_round_trip_of_mnre(tmp_path):
    root = Path(os.environ.get("ROCMRE_DATA", "/work/shared/data")) / "mnre" / "RE_data"
    if not (root / "txt" / "ours_test.txt").is_file():
        pytest.skip("MNRE not available")
    from rocmre.data import read_mnre

    ds = read_mnre(root, "test")
    out = tmp_path / "test.jsonl"
    out.write_text("".join(json.dumps(record_to_json(r)) + "\n" for r in ds))
    back = read_jsonl(out, labels=ds.labels.labels, negative_label="None")
    assert [_fields(r) for r in back] == [_fields(r) for r in ds]
    assert back.num_with_image == ds.num_with_image == 51


def test_jsonl_text_instead_of_tokens():
    r = record_from_json({"text": "  Tim   Cook leads Apple ", "head": {"name": "Tim Cook", "start": 0, "end": 2},
                          "tail": {"name": "Apple", "start": 3, "end": 4}}, "x.jsonl", 1, None)
    assert r.tokens == ["Tim", "Cook", "leads", "Apple"] and r.relation is None
    # token offsets of a raw text count the tokens of the one rule (words and single punctuation marks)
    r = record_from_json({"text": "Go #Bears, said Tim Cook", "head": {"name": "Tim Cook", "start": 5, "end": 7},
                          "tail": {"name": "Bears", "start": 2, "end": 3}}, "x.jsonl", 1, None)
    assert r.tokens == ["Go", "#", "Bears", ",", "said", "Tim", "Cook"]


def test_jsonl_box_tail():
    obj = {"tokens": ["Messi", "scores"], "head": {"name": "Messi", "start": 0, "end": 1},
           "tail": {"name": "ball", "box": ["0.5", 0.5, 0.1, 0.1], "type": "object"}, "image": "missing.jpg"}
    r = record_from_json(obj, "x.jsonl", 1, None)
    assert r.tail == Entity("ball", box=(0.5, 0.5, 0.1, 0.1), type="object")
    assert r.image_id == "missing.jpg" and r.image_path is None  # a listed but missing image is marked
    assert record_to_json(r)["tail"] == {"name": "ball", "box": [0.5, 0.5, 0.1, 0.1], "type": "object"}
    with pytest.raises(DataFormatError, match=r"x.jsonl:1, field 'tail.type': 'thing' is not one of"):
        record_from_json({**obj, "tail": {**obj["tail"], "type": "thing"}}, "x.jsonl", 1, None)
    with pytest.raises(DataFormatError, match=r"x.jsonl:1, field 'tail': an image-object tail \(box\) needs an image"):
        record_from_json({k: v for k, v in obj.items() if k != "image"}, "x.jsonl", 1, None)
