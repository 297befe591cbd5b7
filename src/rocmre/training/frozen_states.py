"""The output of a model's frozen lower text layers, computed once per training record and reused every epoch.

With ``model.frozen_text_layers = N`` and ``model.trainable_markers: false`` nothing below layer N trains, and those
layers run without dropout: their output depends on a record's token ids alone. :class:`FrozenStatesCache` computes
it the first time a record is met (inside the training step's batch, under the step's autocast) and keeps it, so
that later epochs run only the layers above N. A record whose ids changed (``data.name_swap_prob``) is computed for
its batch without replacing the kept states of the record as written, which the next epochs mostly meet again.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rocmre.modeling.features import PairFeatures
from rocmre.modeling.freezing import pad_states, run_lower_layers
from rocmre.modeling.model import RelationModel


class FrozenStatesCache:
    """Per-record hidden states after the embeddings and the first ``model.frozen_prefix_layers`` text layers."""

    def __init__(self, model: RelationModel) -> None:
        if not model.frozen_prefix_layers:
            raise ValueError("the model has no frozen prefix to cache: it needs model.frozen_text_layers >= 1 and "
                             "model.trainable_markers: false")
        self.model = model
        self.n_layers = model.frozen_prefix_layers
        self._states: dict[int, tuple[tuple[int, ...], torch.Tensor]] = {}
        self.computed = 0
        self.reused = 0

    def __len__(self) -> int:
        return len(self._states)

    @torch.no_grad()
    def attach(self, batch: dict[str, torch.Tensor], indices: Sequence[int], features: Sequence[PairFeatures],
               keep: Sequence[bool] | None = None) -> None:
        """Add ``batch["text_prefix_states"]`` (B, L, H) for the records ``indices`` (whose ``features`` made the
        batch), computing the states of records not seen before (or whose token ids changed). Rows whose ``keep``
        is False (an epoch's name-swapped variants) are computed for this batch only: the states kept for their
        record stay those of the record as written."""
        ids = [tuple(f.input_ids) for f in features]
        keep = [True] * len(ids) if keep is None else list(keep)
        missing = [row for row, (i, key) in enumerate(zip(indices, ids, strict=True))
                   if i not in self._states or self._states[i][0] != key]
        fresh: dict[int, torch.Tensor] = {}
        if missing:
            rows = torch.tensor(missing, device=batch["input_ids"].device)
            mask = batch["attention_mask"][rows]
            width = int(mask.sum(1).max())
            hidden = run_lower_layers(self.model.encoder.text_model, batch["input_ids"][rows, :width],
                                      mask[:, :width], self.n_layers)
            for k, row in enumerate(missing):
                fresh[row] = hidden[k, :len(ids[row])].clone()
                if keep[row]:
                    self._states[indices[row]] = (ids[row], fresh[row])
        self.computed += len(missing)
        self.reused += len(ids) - len(missing)
        states, _ = pad_states([fresh[row] if row in fresh else self._states[i][1] for row, i in enumerate(indices)],
                               width=batch["input_ids"].shape[1])
        batch["text_prefix_states"] = states
