"""The multimodal entity-pair encoder: text tokens and image tokens fused by transformer layers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rocmre.modeling.config import ModelConfig
from rocmre.modeling.freezing import run_upper_layers
from rocmre.modeling.lean_encoder import LeanBertForward, lean_forward_supported
from rocmre.modeling.packed_linear import PackedLinears

# kinds of image token
POOLED, REGION, CROP, OBJECT, NO_IMAGE = range(5)


class ImageTokenizer(nn.Module):
    """Turns frozen vision features into text-width tokens: pooled image, grid regions, crops and an image-object
    tail's box; a record without its image gets one learned "no image" token."""

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
        # the slot of the pooled vector carries the "no image" token when the image is missing
        no_image = (self.no_image + self.kind.weight[NO_IMAGE])[None, None]
        if has_image.any():
            pooled = self.project(batch["image_pooled"]).unsqueeze(1) + self.kind.weight[POOLED]
            pooled = torch.where(has_image[:, None, None], pooled, no_image)
        else:  # (most MNRE batches: nothing to project)
            pooled = no_image.expand(bsz, 1, -1)
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


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, H) mean of the states where ``mask`` (B, N) is set (a sentence-transformers sentence vector)."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


class MultimodalPairEncoder(nn.Module):
    """Text encoder + image tokens, fused by N transformer layers; pair vector from the head and tail markers (and,
    with ``pair_pooling='markers_plus_mean'``, the text's mean-pooled states)."""

    def __init__(self, config: ModelConfig, text_model: nn.Module, vision_dim: int, num_regions: int) -> None:
        super().__init__()
        self.config = config
        self.text_model = text_model
        # eval-mode forward without Hugging Face's per-layer overhead (same numbers; modeling/lean_encoder.py)
        self._lean_text = LeanBertForward(text_model) if lean_forward_supported(text_model) else None
        self._packed_fusion = PackedLinears()  # the last fusion layer's bf16 inference products
        hidden = int(text_model.config.hidden_size)
        self.hidden = hidden
        self.image_tokens = (ImageTokenizer(vision_dim, num_regions, hidden, config.dropout)
                             if config.use_image else None)
        if config.fusion_layers > 0:
            heads = max(1, hidden // 64)
            layer = nn.TransformerEncoderLayer(hidden, heads, 4 * hidden, config.dropout, activation="gelu",
                                               batch_first=True, norm_first=True)
            self.fusion = nn.TransformerEncoder(layer, config.fusion_layers, enable_nested_tensor=False)
            self.fusion_norm = nn.LayerNorm(hidden)
        else:
            self.fusion = None
        if config.pair_pooling == "markers_plus_mean":
            if config.pair_dim != hidden:
                raise ValueError(f"model.pair_pooling='markers_plus_mean' needs model.pair_dim equal to the text "
                                 f"encoder's width ({hidden}), not {config.pair_dim}")
            # a residual over the sentence's mean-pooled states: the last layer starts at zero, so an untrained
            # model's pair vector is the pretrained sentence vector (where the frozen description tower lives)
            residual = nn.Linear(hidden, config.pair_dim)
            nn.init.zeros_(residual.weight)
            nn.init.zeros_(residual.bias)
            self.pair = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(2 * hidden, hidden), nn.GELU(), residual)
        else:
            self.pair = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(2 * hidden, config.pair_dim), nn.GELU())

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, pair_dim) entity-pair vectors."""
        if "text_prefix_states" in batch:  # the frozen lower layers' output, cached by the trainer
            text = run_upper_layers(self.text_model, batch["text_prefix_states"], batch["attention_mask"],
                                    self.config.frozen_text_layers)
        elif (self._lean_text is not None and not self.training and not torch.is_grad_enabled()
              and lean_forward_supported(self.text_model)):
            text = self._lean_text(batch["input_ids"], batch["attention_mask"])
        else:
            text = self.text_model(input_ids=batch["input_ids"],
                                   attention_mask=batch["attention_mask"]).last_hidden_state
        seq, mask = text, batch["attention_mask"].bool()
        object_slot = None
        if self.image_tokens is not None:
            img, img_mask = self.image_tokens(batch)
            seq = torch.cat([text, img], dim=1)
            mask = torch.cat([mask, img_mask], dim=1)
            if "object_features" in batch:
                object_slot = seq.shape[1] - 1
        rows = torch.arange(seq.shape[0], device=seq.device)
        positions = [batch["head_index"], batch["tail_index"]]
        if object_slot is not None:
            positions.append(torch.full_like(rows, object_slot))
        positions_t = torch.stack(positions, dim=1)  # (B, P): the only tokens whose fused states are read
        if self.fusion is not None:
            out = self.fusion_norm(self._fuse(seq, mask, positions_t))
        else:
            out = seq[rows[:, None], positions_t]
        head, tail = out[:, 0], out[:, 1]
        if object_slot is not None:
            tail = torch.where(batch["object_mask"][:, None], (tail + out[:, 2]) / 2, tail)
        pair = self.pair(torch.cat([head, tail], dim=-1))
        if self.config.pair_pooling == "markers_plus_mean":
            pair = pair + mean_pool(text, batch["attention_mask"]).to(pair.dtype)
        return pair

    def train(self, mode: bool = True) -> MultimodalPairEncoder:
        if mode:  # weights are about to change
            self._packed_fusion.clear()
            if self._lean_text is not None:
                self._lean_text.clear()
        return super().train(mode)

    def _fuse(self, seq: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """The fusion layers' output at ``positions`` (B, P, H). Every layer but the last runs over all tokens;
        the last computes keys and values for all tokens but queries, attention output and feed-forward only at
        ``positions`` (the same result as the full layer there, for a fraction of its cost)."""
        *lower, last = self.fusion.layers
        for layer in lower:
            seq = layer(seq, src_key_padding_mask=~mask)
        return layer_at_positions(last, seq, mask, positions, packed=self._packed_fusion)


def layer_at_positions(layer: nn.TransformerEncoderLayer, seq: torch.Tensor, mask: torch.Tensor,
                       positions: torch.Tensor, packed: PackedLinears | None = None) -> torch.Tensor:
    """A pre-norm ``nn.TransformerEncoderLayer`` evaluated only at ``positions`` (B, P) of ``seq`` (B, L, H);
    ``mask`` (B, L) is True at real tokens. Uses the layer's own parameters and dropout modules; with ``packed``,
    its bf16 inference products go through packed weights (the same numbers, modeling/packed_linear.py)."""
    if not layer.norm_first:
        raise ValueError("layer_at_positions implements pre-norm layers (norm_first=True)")
    attn = layer.self_attn
    bsz, _, hidden = seq.shape
    heads = attn.num_heads
    rows = torch.arange(bsz, device=seq.device)[:, None]
    normed = layer.norm1(seq)
    w_q, w_k, w_v = attn.in_proj_weight.chunk(3)
    b_q, b_k, b_v = attn.in_proj_bias.chunk(3) if attn.in_proj_bias is not None else (None, None, None)

    def split(x: torch.Tensor) -> torch.Tensor:  # (B, N, H) -> (B, heads, N, H / heads)
        return x.view(bsz, x.shape[1], heads, hidden // heads).transpose(1, 2)

    def linear(name: str, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
               source: torch.Tensor | None = None) -> torch.Tensor:
        if packed is None or layer.training:
            return F.linear(x, weight, bias)
        return packed.linear((id(layer), name), x, weight, bias, source)

    proj = attn.in_proj_weight
    query = split(linear("q", normed[rows, positions], w_q, b_q, proj))
    key, value = split(linear("k", normed, w_k, b_k, proj)), split(linear("v", normed, w_v, b_v, proj))
    attended = F.scaled_dot_product_attention(query, key, value, attn_mask=mask[:, None, None, :],
                                              dropout_p=attn.dropout if layer.training else 0.0)
    attended = linear("out", attended.transpose(1, 2).reshape(bsz, positions.shape[1], hidden),
                      attn.out_proj.weight, attn.out_proj.bias)
    out = seq[rows, positions] + layer.dropout1(attended)
    inner = layer.dropout(layer.activation(linear("linear1", layer.norm2(out), layer.linear1.weight,
                                                  layer.linear1.bias)))
    feed = linear("linear2", inner, layer.linear2.weight, layer.linear2.bias)
    return out + layer.dropout2(feed)
