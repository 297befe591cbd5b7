"""Pack what a training run needs into one folder for a machine with no model hub and no package index.

    python benchmarks/offline_bundle.py --out .devcarry [--fp16]

The folder holds: the MNRE text and images (``data/``), the entity-type and image-feature caches filled for
every MNRE record (``cache/``; the tagger and the vision encoder then never run there), and the text backbone
(``minilm-l6/``; with ``--fp16`` its weights are stored in half precision to halve the size, and are loaded back
as float32). On the target: ``ROCMRE_DATA=<out>/data ROCMRE_CACHE=<out>/cache`` and
``--set model.text_backbone=<out>/minilm-l6``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--data", default=None, help="MNRE root (default: $ROCMRE_DATA/mnre/RE_data)")
    parser.add_argument("--fp16", action="store_true")
    parser.add_argument("--no-crops", action="store_true", help="leave the visual-grounding crops out")
    args = parser.parse_args()

    import torch
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

    target = out / "minilm-l6"
    target.mkdir(parents=True, exist_ok=True)
    for f in model_path.iterdir():
        if f.is_file() and f.name != "model.safetensors":
            shutil.copy2(f, target / f.name)
    weights = load_file(str(model_path / "model.safetensors"))
    dtype = torch.float16 if args.fp16 else torch.float32
    save_file({k: v.to(dtype) if v.is_floating_point() else v for k, v in weights.items()},
              str(target / "model.safetensors"), metadata={"format": "pt"})
    print(f"bundle in {out}")


if __name__ == "__main__":
    main()
