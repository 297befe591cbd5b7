"""Training losses, given to the model (as sentence-transformers does): the model scores, its loss turns the scores
into logits and, with labels, into the training loss."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

#: the key of the learned temperature in a model saved before the loss was a module of its own
LEGACY_TEMPERATURE_KEY = "log_inverse_temperature"


class RetrievalLoss(nn.Module):
    """ROC's contrastive retrieval loss (InfoNCE over the relations): cross-entropy of each pair's cosine to every
    relation over a learned temperature, which starts at ``temperature`` (its inverse is capped at 100)."""

    def __init__(self, temperature: float = 0.05) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"the temperature must be positive, not {temperature}")
        self.log_inverse_temperature = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))

    def forward(self, scores: torch.Tensor, labels: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(logits: ``scores`` over the temperature, the loss when ``labels`` are given)."""
        logits = scores * self.log_inverse_temperature.exp().clamp(max=100.0)
        return logits, F.cross_entropy(logits, labels) if labels is not None else None


class ClassificationLoss(nn.Module):
    """The classifier's cross-entropy over its logits (the scores themselves)."""

    def forward(self, scores: torch.Tensor, labels: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        return scores, F.cross_entropy(scores, labels) if labels is not None else None


def default_loss(model_type: str, temperature: float = 0.05) -> nn.Module:
    """The loss of a model type: :class:`RetrievalLoss` for ROC, :class:`ClassificationLoss` for the classifier."""
    return RetrievalLoss(temperature) if model_type == "roc" else ClassificationLoss()
