"""The multimodal entity-pair encoder: text tokens and image tokens fused by transformer layers."""

from __future__ import annotations

import torch
from torch import nn

from rocmre.modeling.config import ModelConfig

ACTIVATIONS = {"gelu": nn.GELU, "tanh": nn.Tanh, "relu": nn.ReLU}

# kinds of image token
POOLED, REGION, CROP, OBJECT, NO_IMAGE = range(5)


class ImageTokenizer(nn.Module):
    """Turns frozen vision features into tokens of the text width.

    Tokens: the pooled image vector, one token per grid region, one per visual-grounding crop, and one for an
    image-object tail (its crop's vector plus an embedding of its box). A record without its image gets a single
    learned "no image" token instead.
    """

    def __init__(self, vision_dim: int, num_regions: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.project = nn.Sequential(nn.Linear(vision_dim, hidden), nn.LayerNorm(hidden))
        self.kind = nn.Embedding(5, hidden)
        self.region_position = nn.Embedding(max(num_regions, 1), hidden)
        self.box = nn.Sequential(nn.Linear(4, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.no_image = nn.Parameter(torch.zeros(hidden))
        nn.init.normal_(self.no_image, std=0.02)
        self.dropout = nn.Dropout(dropout)

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (tokens (B, N, H), mask (B, N): True where a token is real)."""
        has_image = batch["has_image"]  # (B,)
        regions = batch["image_regions"]  # (B, R, Dv)
        bsz, n_regions, _ = regions.shape
        dev = regions.device
        pooled = self.project(batch["image_pooled"]).unsqueeze(1) + self.kind.weight[POOLED]
        # the slot of the pooled vector carries the "no image" token when the image is missing
        pooled = torch.where(has_image[:, None, None], pooled, (self.no_image + self.kind.weight[NO_IMAGE])[None, None])
        parts = [pooled]
        masks = [torch.ones(bsz, 1, dtype=torch.bool, device=dev)]
        if n_regions:
            pos = self.region_position(torch.arange(n_regions, device=dev))
            parts.append(self.project(regions) + pos + self.kind.weight[REGION])
            masks.append(has_image[:, None].expand(bsz, n_regions))
        crops = batch["crop_features"]  # (B, K, Dv)
        if crops.shape[1]:
            parts.append(self.project(crops) + self.kind.weight[CROP])
            masks.append(batch["crop_mask"])
        if "object_features" in batch:
            obj = self.project(batch["object_features"]) * batch["object_has_image"][:, None, None]
            obj = obj + self.box(batch["object_box"]).unsqueeze(1) + self.kind.weight[OBJECT]
            parts.append(obj)
            masks.append(batch["object_mask"][:, None])
        return self.dropout(torch.cat(parts, dim=1)), torch.cat(masks, dim=1)


class MultimodalPairEncoder(nn.Module):
    """Text encoder + image tokens, fused by N transformer layers; pair vector from the head and tail markers."""

    def __init__(self, config: ModelConfig, text_model: nn.Module, vision_dim: int, num_regions: int) -> None:
        super().__init__()
        self.config = config
        self.text_model = text_model
        hidden = int(text_model.config.hidden_size)
        self.hidden = hidden
        self.image_tokens = (ImageTokenizer(vision_dim, num_regions, hidden, config.dropout)
                             if config.use_image else None)
        if config.fusion_layers > 0:
            heads = config.fusion_heads or max(1, hidden // 64)
            layer = nn.TransformerEncoderLayer(hidden, heads, 4 * hidden, config.dropout, activation="gelu",
                                               batch_first=True, norm_first=True)
            self.fusion = nn.TransformerEncoder(layer, config.fusion_layers, enable_nested_tensor=False)
            self.fusion_norm = nn.LayerNorm(hidden)
        else:
            self.fusion = None
        self.pair = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(2 * hidden, config.pair_dim),
                                  ACTIVATIONS[config.pair_activation]())

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, pair_dim) entity-pair vectors."""
        text = self.text_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        seq, mask = text, batch["attention_mask"].bool()
        object_slot = None
        if self.image_tokens is not None:
            img, img_mask = self.image_tokens(batch)
            seq = torch.cat([text, img], dim=1)
            mask = torch.cat([mask, img_mask], dim=1)
            if "object_features" in batch:
                object_slot = seq.shape[1] - 1
        if self.fusion is not None:
            seq = self.fusion_norm(self.fusion(seq, src_key_padding_mask=~mask))
        rows = torch.arange(seq.shape[0], device=seq.device)
        head = seq[rows, batch["head_index"]]
        tail = seq[rows, batch["tail_index"]]
        if object_slot is not None:
            is_obj = batch["object_mask"][:, None]
            tail = torch.where(is_obj, (tail + seq[:, object_slot]) / 2, tail)
        return self.pair(torch.cat([head, tail], dim=-1))
