"""The eval-mode lean BERT forward (modeling/lean_encoder.py) equals the Hugging Face forward, follows weight
changes, and is used only where it applies."""

from __future__ import annotations

import pytest
import torch

from rocmre.modeling.lean_encoder import LeanBertForward, lean_forward_supported


def _tiny_bert(attn: str = "sdpa", **overrides):
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32,
                     attn_implementation=attn, **overrides)
    return BertModel(cfg).eval()


def _padded_batch() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.tensor([[2, 7, 9, 11, 13, 3], [2, 5, 6, 3, 0, 0], [2, 40, 3, 0, 0, 0]])
    return ids, (ids != 0).long()


@pytest.mark.parametrize("bf16", [False, True])
def test_lean_forward_equals_the_hugging_face_forward(bf16):
    bert = _tiny_bert()
    ids, mask = _padded_batch()
    lean = LeanBertForward(bert)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        want = bert(input_ids=ids, attention_mask=mask).last_hidden_state
        got = lean(ids, mask)
    assert got.dtype == want.dtype
    real = mask.bool()  # padded positions are never read downstream; real tokens must agree
    tol = 2e-2 if bf16 else 1e-5
    torch.testing.assert_close(got[real].float(), want[real].float(), atol=tol, rtol=tol)


def test_lean_forward_follows_weight_changes_and_swapped_tensors():
    bert = _tiny_bert()
    ids, mask = _padded_batch()
    lean = LeanBertForward(bert)
    query = bert.encoder.layer[1].attention.self.query
    with torch.no_grad():
        before = lean(ids, mask)
        query.weight.mul_(4.0)  # in place: the version counter moves
        changed = lean(ids, mask)
        want = bert(input_ids=ids, attention_mask=mask).last_hidden_state
    assert not torch.allclose(before, changed)
    torch.testing.assert_close(changed[mask.bool()], want[mask.bool()], atol=1e-5, rtol=1e-5)
    # another tensor in the slot (as bf16 copies or a reloaded model put there): rebuilt too
    query._parameters["weight"] = torch.nn.Parameter(torch.zeros_like(query.weight), requires_grad=False)
    with torch.no_grad():
        torch.testing.assert_close(lean(ids, mask)[mask.bool()],
                                   bert(input_ids=ids, attention_mask=mask).last_hidden_state[mask.bool()],
                                   atol=1e-5, rtol=1e-5)


def test_lean_forward_applies_only_to_plain_sdpa_bert():
    from transformers import MPNetConfig, MPNetModel

    assert lean_forward_supported(_tiny_bert())
    assert not lean_forward_supported(_tiny_bert("eager"))  # softmax(QK^T) by hand: other rounding
    assert not lean_forward_supported(_tiny_bert(position_embedding_type="relative_key"))
    quantised = torch.ao.quantization.quantize_dynamic(_tiny_bert(), {torch.nn.Linear}, dtype=torch.qint8)
    assert not lean_forward_supported(quantised)  # int8 modules: the Hugging Face forward
    mpnet = MPNetModel(MPNetConfig(vocab_size=60, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=32))
    assert not lean_forward_supported(mpnet)
    with pytest.raises(ValueError, match="plain BERT"):
        LeanBertForward(mpnet)


def test_pair_encoder_uses_the_lean_forward_only_for_inference(monkeypatch):
    """Training (and anything with gradients) runs the Hugging Face forward; eval under no_grad the lean one; both
    give the same pair vectors; entering training mode forgets the concatenated weights."""
    from rocmre.modeling.config import ModelConfig
    from rocmre.modeling.fusion import MultimodalPairEncoder

    bert = _tiny_bert()
    enc = MultimodalPairEncoder(ModelConfig(fusion_layers=1, use_image=False, pair_dim=8), bert, 0, 0).eval()
    ids, mask = _padded_batch()
    batch = {"input_ids": ids, "attention_mask": mask, "head_index": torch.tensor([1, 1, 1]),
             "tail_index": torch.tensor([3, 2, 1])}
    calls = []
    original = LeanBertForward.__call__
    monkeypatch.setattr(LeanBertForward, "__call__", lambda self, *a: calls.append(1) or original(self, *a))
    with torch.no_grad():
        lean_out = enc(batch)
    assert calls == [1]
    hf_out = enc(batch)  # gradients on: the Hugging Face forward
    assert calls == [1]
    torch.testing.assert_close(lean_out, hf_out.detach(), atol=1e-5, rtol=1e-5)
    assert enc._lean_text._qkv
    enc.train()
    assert not enc._lean_text._qkv
    with torch.no_grad():
        enc(batch)  # training mode: no lean forward
    assert calls == [1]
