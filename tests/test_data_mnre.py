"""Every MNRE record parses, in both MNRE-2 layouts and in MNRE-1, with the counts the data README gives."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from rocmre.data import DataFormatError, RelationDataset, detect_format, load_split, read_mnre
from rocmre.data.record import entity_tokens_match

SPLITS = ("train", "val", "test")
RECORDS = {"train": 12247, "val": 1624, "test": 1614}
UNIQUE_IMAGES = {"train": 7356, "val": 931, "test": 914}
WITH_IMAGE = {"train": 49, "val": 7, "test": 51}
UNIQUE_IMAGES_PRESENT = {"train": 32, "val": 2, "test": 16}
#: label -> (train, val, test), from /work/shared/data/mnre/README.md; listed in ``ours_rel2id.json`` id order.
LABEL_COUNTS = {
    "None": (7744, 1000, 974),
    "/per/per/parent": (14, 3, 4),
    "/per/per/siblings": (14, 2, 1),
    "/per/per/couple": (115, 19, 19),
    "/per/per/neighbor": (8, 2, 2),
    "/per/per/peer": (960, 120, 156),
    "/per/per/charges": (24, 2, 1),
    "/per/per/alumi": (8, 1, 0),
    "/per/per/alternate_names": (146, 19, 21),
    "/per/org/member_of": (872, 121, 110),
    "/per/loc/place_of_residence": (231, 28, 29),
    "/per/loc/place_of_birth": (69, 4, 7),
    "/org/org/alternate_names": (78, 13, 8),
    "/org/org/subsidiary": (152, 25, 16),
    "/org/loc/locate_at": (316, 48, 46),
    "/loc/loc/contain": (629, 82, 99),
    "/per/misc/present_in": (427, 61, 74),
    "/per/misc/awarded": (57, 8, 4),
    "/per/misc/race": (6, 1, 0),
    "/per/misc/religion": (6, 1, 1),
    "/per/misc/nationality": (98, 17, 10),
    "/misc/misc/part_of": (81, 15, 14),
    "/misc/loc/held_on": (192, 32, 18),
}
V1_RECORDS = {"train": 7824, "val": 975, "test": 1282}
V1_NONE = {"train": 4751, "val": 580, "test": 749}
V1_UNIQUE_IMAGES = {"train": 3996, "val": 499, "test": 675}


@pytest.fixture(scope="module")
def re_data(data_root: Path) -> dict[str, RelationDataset]:
    return {s: read_mnre(data_root / "mnre" / "RE_data", s) for s in SPLITS}


@pytest.fixture(scope="module")
def official(data_root: Path) -> dict[str, RelationDataset]:
    root = data_root / "mnre" / "official"
    if not (root / "mnre_txt" / "mnre_val .txt").is_file():
        pytest.skip("the official MNRE layout is not available")
    return {s: read_mnre(root, s) for s in SPLITS}


@pytest.fixture(scope="module")
def version1(data_root: Path) -> dict[str, RelationDataset]:
    root = data_root / "mnre" / "version1"
    if not (root / "ours_train.txt").is_file():
        pytest.skip("MNRE-1 is not available")
    return {s: read_mnre(root, s) for s in SPLITS}


def _key(r) -> tuple:
    return (tuple(r.tokens), r.head, r.tail, r.relation, r.image_id)


@pytest.mark.parametrize("split", SPLITS)
def test_re_data_counts(re_data, split):
    ds = re_data[split]
    assert len(ds) == RECORDS[split]
    assert not ds.problems
    assert ds.split == split and ds.labels.negative_label == "None"
    assert len({r.image_id for r in ds}) == UNIQUE_IMAGES[split]
    i = SPLITS.index(split)
    assert ds.label_counts() == Counter({lab: c[i] for lab, c in LABEL_COUNTS.items() if c[i]})


def test_all_records_and_labels(re_data):
    assert sum(len(ds) for ds in re_data.values()) == 15485
    assert len({r.image_id for ds in re_data.values() for r in ds}) == 9201
    # the label set follows ours_rel2id.json's ids, None = 0, and every label occurs
    assert re_data["train"].labels.labels == list(LABEL_COUNTS)
    assert set().union(*(ds.label_counts() for ds in re_data.values())) == set(LABEL_COUNTS)


def test_no_image_shared_between_splits(re_data):
    images = {s: {r.image_id for r in ds} for s, ds in re_data.items()}
    assert not images["train"] & images["val"]
    assert not images["train"] & images["test"]
    assert not images["val"] & images["test"]


def test_entities_are_token_spans(re_data):
    for ds in re_data.values():
        for r in ds:
            for e in (r.head, r.tail):
                assert not e.is_object and e.box is None
                assert 0 <= e.start < e.end <= len(r.tokens)
                assert entity_tokens_match(r.tokens[e.start:e.end], e.name)


@pytest.mark.parametrize("split", SPLITS)
def test_images_present(re_data, data_root, split):
    ds = re_data[split]
    assert ds.num_with_image == WITH_IMAGE[split]
    present = [r for r in ds if r.has_image]
    assert len({r.image_path for r in present}) == UNIQUE_IMAGES_PRESENT[split]
    img_dir = data_root / "mnre" / "RE_data" / "img_org" / split
    for r in present:
        assert r.image_path == img_dir / r.image_id and r.image_path.is_file()
    for r in ds:
        if not r.has_image:
            assert r.image_path is None and r.image_id  # marked as missing, never substituted


@pytest.mark.parametrize("split", SPLITS)
def test_crops_attached(re_data, data_root, split):
    import torch

    txt = data_root / "mnre" / "RE_data" / "txt"
    index = torch.load(txt / f"mre_{split}_dict.pth", map_location="cpu", weights_only=True)
    crop_dir = data_root / "mnre" / "RE_data" / "img_vg" / split / "crops"
    ds = re_data[split]
    assert len(index) == len(ds)
    for i in range(5):  # the first five records of each split have all their crops
        assert [p.name for p in ds[i].crop_paths] == list(index[i]) and ds[i].crop_paths
        assert all(p.parent == crop_dir and p.is_file() for p in ds[i].crop_paths)
    with_crops = [i for i, r in enumerate(ds) if r.crop_paths]
    assert with_crops[:5] == [0, 1, 2, 3, 4] and max(with_crops) < 10


@pytest.mark.parametrize("split", SPLITS)
def test_official_layout_gives_identical_records(re_data, official, split):
    a, b = re_data[split], official[split]
    assert len(b) == RECORDS[split]
    assert [_key(r) for r in a] == [_key(r) for r in b]
    assert set(b.labels.labels) == set(a.labels.labels) and b.labels.negative_label == "None"
    assert b.labels.labels[0] == "None"
    if split == "val":
        assert Path(b[0].source.rpartition(":")[0]).name == "mnre_val .txt"


@pytest.mark.parametrize("split", SPLITS)
def test_mnre1(version1, split):
    ds = version1[split]
    assert len(ds) == V1_RECORDS[split]
    assert not ds.problems
    assert ds.labels.negative_label == "none" and len(ds.labels) == 31
    assert ds.label_counts()["none"] == V1_NONE[split]
    assert len({r.image_id for r in ds}) == V1_UNIQUE_IMAGES[split]
    assert all(r.image_id.endswith(".jpg") for r in ds)  # bare numeric ids become "<n>.jpg"
    assert ds.num_with_image == 0


def test_mnre1_label_set_spans_splits(version1):
    labels = {s: ds.labels.labels for s, ds in version1.items()}
    assert labels["train"] == labels["val"] == labels["test"]
    used = set().union(*(ds.label_counts() for ds in version1.values()))
    assert used == set(labels["train"])


def test_load_split_relative_to_rocmre_data(data_root, monkeypatch):
    monkeypatch.setenv("ROCMRE_DATA", str(data_root))
    assert detect_format(data_root / "mnre" / "RE_data") == "mnre"
    ds = load_split("mnre/RE_data", "dev")
    assert len(ds) == RECORDS["val"] and ds.split == "val"
    assert len(load_split(str(data_root), "test")) == RECORDS["test"]


def test_explicit_image_dir_and_negative_label(data_root):
    root = data_root / "mnre" / "RE_data"
    ds = read_mnre(root, "test", image_dir=root / "img_org" / "val")  # wrong split's folder: no image matches
    assert ds.num_with_image == 0
    with pytest.raises(DataFormatError, match="negative label 'none'"):
        read_mnre(root, "test", negative_label="none")
