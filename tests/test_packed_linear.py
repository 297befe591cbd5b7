"""Packed bf16 inference products (modeling/packed_linear.py) give F.linear's numbers under bf16 autocast, follow
weight changes, and stay out of fp32, autograd and training."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rocmre.modeling.packed_linear import PackedLinears, packing_supported

needs_packing = pytest.mark.skipif(not packing_supported(), reason="this CPU or torch build has no packed bf16")


def _bf16(*shape: int) -> torch.Tensor:
    return torch.randn(*shape).to(torch.bfloat16)


@needs_packing
@pytest.mark.parametrize("shape", [(5, 16), (2, 7, 16), (1, 1, 16)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_packed_product_equals_f_linear_under_autocast(shape, with_bias):
    torch.manual_seed(0)
    x, weight = torch.randn(*shape), _bf16(24, 16)
    bias = torch.randn(24) if with_bias else None  # fp32 bias: autocast casts it, so does the packed path
    packed = PackedLinears()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        want = F.linear(x, weight, bias)
        got = packed.linear("slot", x, weight, bias)
    assert packed._entries  # the packed path ran
    assert got.dtype == want.dtype == torch.bfloat16 and got.shape == want.shape
    torch.testing.assert_close(got.float(), want.float(), atol=1e-2, rtol=1e-2)


@needs_packing
def test_packed_weights_follow_in_place_changes_and_replaced_tensors():
    torch.manual_seed(0)
    x = _bf16(3, 8)
    weight, bias = _bf16(4, 8), _bf16(4)
    packed = PackedLinears()
    with torch.no_grad():
        first = packed.linear("w", x, weight, bias)
        weight.mul_(3.0)  # in place: the version counter moves
        torch.testing.assert_close(packed.linear("w", x, weight, bias), F.linear(x, weight, bias))
        other = _bf16(4, 8)  # another tensor in the same slot
        torch.testing.assert_close(packed.linear("w", x, other, bias), F.linear(x, other, bias))
        bias.add_(1.0)
        torch.testing.assert_close(packed.linear("w", x, other, bias), F.linear(x, other, bias))
    assert not torch.allclose(first.float(), F.linear(x, other, bias).float())
    packed.clear()
    assert not packed._entries


@needs_packing
def test_views_made_anew_each_call_are_packed_once():
    """An attention layer's query/key/value weights and biases are ``chunk`` views made on every call: the packed
    copy is kept across calls (one pack per slot), and an in-place change of the parameter still repacks."""
    torch.manual_seed(0)
    x = _bf16(3, 8)
    proj, proj_bias = _bf16(12, 8), _bf16(12)
    packed = PackedLinears()
    made = []
    with torch.no_grad():
        for _ in range(3):
            w_q, _, w_v = proj.chunk(3)
            b_q, _, b_v = proj_bias.chunk(3)
            packed.linear("q", x, w_q, b_q, proj)
            got = packed.linear("v", x, w_v, b_v, proj)
            made.append(packed._entries["v"][4])
        assert made[0] is made[1] is made[2]  # packed once
        proj_bias.add_(1.0)  # in place, through the parameter: its views' entries are made again
        w_v, b_v = proj.chunk(3)[2], proj_bias.chunk(3)[2]
        torch.testing.assert_close(packed.linear("v", x, w_v, b_v, proj), F.linear(x, w_v, b_v))
    assert packed._entries["v"][4] is not made[0]
    assert not torch.allclose(got.float(), F.linear(x, w_v, b_v).float())


def test_packed_path_stays_out_of_fp32_and_autograd():
    torch.manual_seed(0)
    packed = PackedLinears()
    x, weight = torch.randn(3, 8), torch.randn(4, 8)
    with torch.no_grad():
        torch.testing.assert_close(packed.linear("fp32", x, weight, None), F.linear(x, weight))  # fp32 weight
    low = weight.to(torch.bfloat16).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = packed.linear("grad", x, low, None)  # gradients on: the plain product, which autograd can follow
    out.float().sum().backward()
    assert low.grad is not None
    assert not packed._entries


@needs_packing
def test_lean_encoder_and_last_fusion_layer_with_bf16_weights_equal_the_plain_path():
    """The way prediction runs them: bf16 weight copies swapped in, bf16 autocast, inference mode."""
    from transformers import BertConfig, BertModel

    from rocmre.modeling.fusion import layer_at_positions
    from rocmre.modeling.lean_encoder import LeanBertForward
    from rocmre.modeling.runtime import Bf16MatrixWeights

    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=32, attn_implementation="sdpa")).eval()
    layer = torch.nn.TransformerEncoderLayer(16, 2, 32, 0.0, batch_first=True, norm_first=True).eval()
    ids = torch.tensor([[2, 7, 9, 11, 3], [2, 5, 3, 0, 0]])
    mask = ids != 0
    positions = torch.tensor([[1, 2], [1, 2]])
    lean = LeanBertForward(bert)
    holder = torch.nn.ModuleList([bert, layer])
    packed = PackedLinears()
    with (torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16),
          Bf16MatrixWeights(holder).swapped()):
        want = bert(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        got = lean(ids, mask.long())
        assert lean.packed._entries  # the packed products ran
        plain = layer_at_positions(layer, want, mask, positions)
        fused = layer_at_positions(layer, want, mask, positions, packed=packed)
        assert packed._entries
    torch.testing.assert_close(got[mask].float(), want[mask].float(), atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(fused.float(), plain.float(), atol=1e-2, rtol=1e-2)


@needs_packing
def test_packing_can_be_switched_off_for_comparisons():
    from rocmre.modeling.packed_linear import packing_disabled

    x, weight = _bf16(3, 8), _bf16(4, 8)
    packed = PackedLinears()
    with torch.no_grad():
        with packing_disabled():
            off = packed.linear("w", x, weight, None)
        assert not packed._entries
        on = packed.linear("w", x, weight, None)
    assert packed._entries
    torch.testing.assert_close(on, off)
