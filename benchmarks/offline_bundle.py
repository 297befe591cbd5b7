"""Pack what a training run needs into one folder for a machine with no model hub and no package index.

    python benchmarks/offline_bundle.py --out .devcarry [--fp16] [--backbone minilm-l6,mpnet-base]
                                        [--int8]
    python benchmarks/offline_bundle.py --unpack .devcarry      # on the target, before training

The folder holds: the MNRE text and images (``data/``), the entity-type and image-feature caches filled for
every MNRE record (``cache/``; the tagger and the vision encoder then never run there), and one folder per text
backbone (``minilm-l6/``, ``mpnet-base/``). With ``--fp16`` the weights are stored in half precision to halve the
size, and are loaded back as float32. With ``--int8`` every matrix is stored as int8 with one fp16 scale per row
(absmax; vectors stay fp16), a quarter of the fp32 size, so that mpnet-base (438 MB; 105 MiB so; the whole bundle
gzipped, 102 MiB) can travel to a machine that takes 64 MiB a transfer, in two pieces of a tarball
(benchmarks/gpu_mpnet_h200.sh);
``--unpack`` writes the dequantized float32 ``model.safetensors`` there. Training then starts from
the dequantized weights, not the exact pretrained ones (how close they are: :func:`int8_fidelity`, printed when
packing). On the target: ``ROCMRE_DATA=<out>/data ROCMRE_CACHE=<out>/cache`` and
``--set model.text_backbone=<out>/<backbone>``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


INT8_FILE = "model.int8.safetensors"


def quantize_int8(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each floating-point matrix -> ``name.q8`` (int8) and ``name.scale`` (fp16, one per row, absmax / 127);
    other floating-point tensors -> fp16; integer tensors unchanged."""
    out: dict[str, torch.Tensor] = {}
    for name, w in weights.items():
        if w.is_floating_point() and w.dim() == 2:
            w = w.float()
            scale = (w.abs().amax(dim=1, keepdim=True) / 127.0).clamp_min(1e-12).half()
            out[f"{name}.q8"] = torch.round(w / scale.float()).clamp_(-127, 127).to(torch.int8).contiguous()
            out[f"{name}.scale"] = scale.contiguous()
        else:
            out[name] = w.half().contiguous() if w.is_floating_point() else w.contiguous()
    return out


def dequantize_int8(packed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of :func:`quantize_int8`, in float32 (up to the rounding)."""
    out: dict[str, torch.Tensor] = {}
    for name, t in packed.items():
        if name.endswith(".scale"):
            continue
        if name.endswith(".q8"):
            base = name[: -len(".q8")]
            out[base] = t.float() * packed[f"{base}.scale"].float()
        else:
            out[name] = t.float() if t.is_floating_point() else t
    return out


def unpack(bundle: Path) -> list[Path]:
    """Write the float32 ``model.safetensors`` beside every ``model.int8.safetensors`` in ``bundle``'s backbone
    folders (and remove the int8 file); returns the folders written."""
    from safetensors.torch import load_file, save_file

    written = []
    for folder in sorted(p for p in bundle.iterdir() if p.is_dir() and (p / "config.json").is_file()):
        packed = folder / INT8_FILE
        if not packed.is_file():
            if not (folder / "model.safetensors").is_file():
                raise FileNotFoundError(f"{folder}: neither model.safetensors nor {INT8_FILE}")
            continue
        save_file(dequantize_int8(load_file(str(packed))), str(folder / "model.safetensors"), metadata={"format": "pt"})
        packed.unlink()
        written.append(folder)
        print(f"{folder}: int8 weights dequantized to model.safetensors")
    return written


def int8_fidelity(model_path: Path, weights: dict[str, torch.Tensor], sentences: list[str]) -> dict[str, float]:
    """How close the encoder loaded from the dequantized weights (as ``--unpack`` writes them) is to the original:
    cosine of mean-pooled sentence vectors (mean and minimum over ``sentences``) and the largest error of any
    matrix relative to its largest weight."""
    import tempfile

    from safetensors.torch import save_file
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    original = AutoModel.from_pretrained(model_path, dtype=torch.float32).eval()
    with tempfile.TemporaryDirectory() as tmp:
        for f in model_path.iterdir():
            if f.is_file() and f.suffix in {".json", ".txt", ".model"}:
                shutil.copy2(f, Path(tmp) / f.name)
        save_file(dequantize_int8(quantize_int8(weights)), str(Path(tmp) / "model.safetensors"),
                  metadata={"format": "pt"})
        restored = AutoModel.from_pretrained(tmp, dtype=torch.float32).eval()
    batch = tok(sentences, padding=True, truncation=True, max_length=128, return_tensors="pt")
    mask = batch["attention_mask"].unsqueeze(-1).float()
    with torch.no_grad():
        a, b = ((m(**batch).last_hidden_state * mask).sum(1) / mask.sum(1) for m in (original, restored))
    cos = torch.nn.functional.cosine_similarity(a, b)
    restored_state = restored.state_dict()
    err = max(float((w - restored_state[k]).abs().max() / w.abs().max().clamp_min(1e-12))
              for k, w in original.state_dict().items() if w.is_floating_point() and w.dim() == 2)
    return {"sentences": len(sentences), "cosine_mean": round(float(cos.mean()), 6),
            "cosine_min": round(float(cos.min()), 6), "max_relative_weight_error": round(err, 6)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="the bundle folder to write")
    parser.add_argument("--data", default=None, help="MNRE root (default: $ROCMRE_DATA/mnre/RE_data)")
    parser.add_argument("--backbone", default="minilm-l6", help="comma-separated text backbones to pack")
    parser.add_argument("--fp16", action="store_true", help="weights in half precision")
    parser.add_argument("--int8", action="store_true", help="matrices in int8 with a scale per row")
    parser.add_argument("--no-crops", action="store_true", help="leave the visual-grounding crops out")
    parser.add_argument("--unpack", default=None, metavar="BUNDLE", help="dequantize a bundle's int8 weights")
    args = parser.parse_args()
    if args.unpack:
        unpack(Path(args.unpack))
        return
    if not args.out:
        parser.error("--out is required (or --unpack BUNDLE)")

    from safetensors.torch import load_file, save_file

    from rocmre.backbones.text import resolve_text_model_path
    from rocmre.data import load_split
    from rocmre.modeling.features import PairFeaturizer, TypeCache, add_marker_tokens
    from rocmre.modeling.prompting import PromptOptions
    from rocmre.modeling.runtime import ImageFeatures

    out = Path(args.out)
    src = Path(args.data) if args.data else None
    splits = {s: load_split(src or "mnre/RE_data", s) for s in ("train", "val", "test")}
    root = Path(splits["train"].records[0].source.rsplit(":", 1)[0]).parent.parent  # .../RE_data
    dst = out / "data" / "mnre" / "RE_data"
    shutil.copytree(root / "txt", dst / "txt", dirs_exist_ok=True)
    shutil.copytree(root / "img_org", dst / "img_org", dirs_exist_ok=True)
    if not args.no_crops:
        shutil.copytree(root / "img_vg", dst / "img_vg", dirs_exist_ok=True)

    cache = out / "cache"
    from transformers import AutoTokenizer

    model_path = Path(resolve_text_model_path("minilm-l6"))
    tok = AutoTokenizer.from_pretrained(model_path)
    add_marker_tokens(tok)
    featurizer = PairFeaturizer(tok, max_length=128, prompt=PromptOptions(), type_cache=TypeCache("spacy", cache))
    images = ImageFeatures("efficientnet-lite0", cache)
    for name, data in splits.items():
        featurizer.entity_types(data.records, show_progress=True)
        for r in data.records:
            for p in ([r.image_path] if r.image_path else []) + ([] if args.no_crops else r.crop_paths[:3]):
                images.features(p)
        print(f"{name}: {len(data)} records typed, {data.num_with_image} with image")
    # the name-replaced test set of benchmarks/mnre.py: its new texts are typed here too
    from rocmre.data.name_swap import name_swapped_test

    swapped, _ = name_swapped_test(splits["train"], splits["val"], splits["test"], cache_dir=cache)
    featurizer.entity_types(swapped.records, show_progress=True)
    # name-swap augmentation during training passes the original records' types, so nothing else needs tagging
    if args.fp16:
        for f in (cache / "image-features").rglob("*.safetensors"):
            save_file({k: v.half() for k, v in load_file(str(f)).items()}, str(f))

    sentences = [r.text for r in splits["val"].records[:64]]
    for backbone in (b.strip() for b in args.backbone.split(",") if b.strip()):
        source = Path(resolve_text_model_path(backbone))
        target = out / backbone.replace("/", "_")
        target.mkdir(parents=True, exist_ok=True)
        for f in source.iterdir():
            if f.is_file() and f.suffix in {".json", ".txt", ".model"}:
                shutil.copy2(f, target / f.name)
        weights = load_file(str(source / "model.safetensors"))
        if args.int8:
            save_file(quantize_int8(weights), str(target / INT8_FILE), metadata={"format": "pt"})
            print(f"{backbone}: int8 fidelity {int8_fidelity(source, weights, sentences)}")
        else:
            dtype = torch.float16 if args.fp16 else torch.float32
            save_file({k: v.to(dtype) if v.is_floating_point() else v for k, v in weights.items()},
                      str(target / "model.safetensors"), metadata={"format": "pt"})
    print(f"bundle in {out}")


if __name__ == "__main__":
    main()
