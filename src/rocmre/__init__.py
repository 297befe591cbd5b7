"""rocmre: multimodal relation extraction by retrieval over relation descriptions (ROC)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Prediction", "RelationDescriptions", "RelationExtractor", "RelationModel", "__version__"]

if TYPE_CHECKING:
    from rocmre.descriptions.store import RelationDescriptions
    from rocmre.inference.extractor import Prediction, RelationExtractor
    from rocmre.modeling.model import RelationModel

_LAZY = {
    "RelationExtractor": "rocmre.inference.extractor",
    "Prediction": "rocmre.inference.extractor",
    "RelationDescriptions": "rocmre.descriptions.store",
    "RelationModel": "rocmre.modeling.model",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'rocmre' has no attribute {name!r}")
