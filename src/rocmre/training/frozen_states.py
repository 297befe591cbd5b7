"""The output of a model's frozen lower text layers, computed once per training record and reused every epoch.
:meth:`FrozenStatesCache.prepare` computes what an epoch needs in length-sorted inference batches;
:meth:`FrozenStatesCache.attach` puts the states into each step's batch. Name-swapped records get states for that
epoch only."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from torch import nn

from rocmre.modeling.features import PairFeatures
from rocmre.modeling.freezing import pad_states, run_lower_layers
from rocmre.modeling.lean_encoder import LeanBertForward, lean_forward_supported
from rocmre.modeling.model import RelationModel
from rocmre.modeling.runtime import Bf16MatrixWeights

StatesEntry = tuple[tuple[int, ...], torch.Tensor]  # (token ids, (L, H) states)


class FrozenStatesCache:
    """Per-record hidden states after the embeddings and the first ``model.frozen_prefix_layers`` text layers."""

    def __init__(self, model: RelationModel) -> None:
        if not model.frozen_prefix_layers:
            raise ValueError("the model has no frozen prefix to cache: it needs model.frozen_text_layers >= 1")
        self.model = model
        self.n_layers = model.frozen_prefix_layers
        self._states: dict[int, StatesEntry] = {}  # records as written, kept for the whole run
        self._epoch: dict[int, StatesEntry] = {}  # this epoch's changed records (name-swapped variants)
        text = model.encoder.text_model
        self._lean = LeanBertForward(text) if lean_forward_supported(text) else None
        self._low_weights = Bf16MatrixWeights(nn.ModuleList(text.encoder.layer[:self.n_layers]))
        self.computed = 0
        self.reused = 0

    def __len__(self) -> int:
        return len(self._states)

    def _lookup(self, index: int, ids: tuple[int, ...]) -> torch.Tensor | None:
        for kept in (self._epoch, self._states):
            entry = kept.get(index)
            if entry is not None and entry[0] == ids:
                return entry[1]
        return None

    def _compute(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The lower layers' output: the lean forward where the encoder supports it (``prepare`` and ``attach``
        alike, so a record's states do not depend on which of them computed it), else the encoder's own layers."""
        text = self.model.encoder.text_model
        if not (self._lean is not None and lean_forward_supported(text)):
            return run_lower_layers(text, input_ids, attention_mask, self.n_layers)
        bf16 = torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
        with self._low_weights.swapped() if bf16 and input_ids.device.type == "cpu" else contextlib.nullcontext():
            return self._lean(input_ids, attention_mask, n_layers=self.n_layers)

    @torch.no_grad()
    def prepare(self, indices: Sequence[int], features: Sequence[PairFeatures], keep: Sequence[bool],
                batch_size: int = 64) -> int:
        """Before an epoch: compute the states of the records ``indices`` (into ``features``, the epoch's) that are
        not kept yet, in length-sorted batches; ``keep[i]`` False marks an epoch-only variant (forgotten at the next
        ``prepare``). Call it under the training step's autocast. Returns how many were computed."""
        self._epoch = {}
        todo = [i for i in indices if self._lookup(i, tuple(features[i].input_ids)) is None]
        todo.sort(key=lambda i: len(features[i].input_ids))
        pad = self.model.tokenizer.pad_token_id or 0
        device = next(self.model.parameters()).device
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            rows = [features[i].input_ids for i in chunk]
            width = max(map(len, rows))
            ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=device)
            mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=device)
            hidden = self._compute(ids, mask)
            for k, (i, r) in enumerate(zip(chunk, rows, strict=True)):
                (self._states if keep[i] else self._epoch)[i] = (tuple(r), hidden[k, :len(r)].clone())
        self.computed += len(todo)
        return len(todo)

    @torch.no_grad()
    def attach(self, batch: dict[str, torch.Tensor], indices: Sequence[int], features: Sequence[PairFeatures],
               keep: Sequence[bool] | None = None) -> None:
        """Add ``batch["text_prefix_states"]`` (B, L, H) for the records ``indices`` (whose ``features`` made the
        batch), computing the states of records not seen before (or whose token ids changed). Rows whose ``keep``
        is False (an epoch's name-swapped variants) are computed for this batch only: the states kept for their
        record stay those of the record as written."""
        ids = [tuple(f.input_ids) for f in features]
        keep = [True] * len(ids) if keep is None else list(keep)
        found = [self._lookup(i, key) for i, key in zip(indices, ids, strict=True)]
        missing = [row for row, state in enumerate(found) if state is None]
        if missing:
            rows = torch.tensor(missing, device=batch["input_ids"].device)
            mask = batch["attention_mask"][rows]
            width = int(mask.sum(1).max())
            hidden = self._compute(batch["input_ids"][rows, :width], mask[:, :width])
            for k, row in enumerate(missing):
                found[row] = hidden[k, :len(ids[row])].clone()
                if keep[row]:
                    self._states[indices[row]] = (ids[row], found[row])
        self.computed += len(missing)
        self.reused += len(ids) - len(missing)
        states, _ = pad_states(found, width=batch["input_ids"].shape[1])
        batch["text_prefix_states"] = states
