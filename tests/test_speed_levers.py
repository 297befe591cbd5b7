"""Speed levers that must not change what a model computes (or change it only as documented)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rocmre.modeling.dropout import FastDropout, fast_dropout, use_fast_dropout
from rocmre.modeling.fusion import layer_at_positions


def _layer(hidden: int = 32, heads: int = 4, dropout: float = 0.1) -> nn.TransformerEncoderLayer:
    torch.manual_seed(0)
    return nn.TransformerEncoderLayer(hidden, heads, 4 * hidden, dropout, activation="gelu", batch_first=True,
                                      norm_first=True)


@pytest.mark.parametrize("grad", [False, True])
def test_last_fusion_layer_at_positions_equals_the_full_layer(grad):
    layer = _layer().eval()
    seq = torch.randn(3, 7, 32, requires_grad=grad)
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3, [1] * 2 + [0] * 5], dtype=torch.bool)
    positions = torch.tensor([[0, 3], [1, 2], [1, 0]])
    with torch.set_grad_enabled(grad):
        full = layer(seq, src_key_padding_mask=~mask)
        fast = layer_at_positions(layer, seq, mask, positions)
    rows = torch.arange(3)[:, None]
    torch.testing.assert_close(fast, full[rows, positions], atol=1e-5, rtol=1e-5)
    if grad:  # the gradients reach the same inputs and parameters
        g_full = torch.autograd.grad(full[rows, positions].sum(), [seq, layer.linear1.weight])
        g_fast = torch.autograd.grad(fast.sum(), [seq, layer.linear1.weight])
        for a, b in zip(g_fast, g_full, strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_pair_encoder_scores_do_not_depend_on_masked_tokens():
    """Padding tokens (text or image) never change a pair vector, with the pair-only last layer."""
    layer = _layer().eval()
    seq = torch.randn(1, 5, 32)
    mask = torch.tensor([[1, 1, 1, 0, 0]], dtype=torch.bool)
    positions = torch.tensor([[0, 2]])
    noisy = seq.clone()
    noisy[:, 3:] = 100.0
    torch.testing.assert_close(layer_at_positions(layer, seq, mask, positions),
                               layer_at_positions(layer, noisy, mask, positions))


def test_fast_dropout_keeps_the_expectation_and_is_seeded():
    x = torch.ones(200_000)
    torch.manual_seed(3)
    a = fast_dropout(x, 0.1)
    assert abs((a == 0).float().mean().item() - 0.1) < 0.005
    assert torch.all((a == 0) | torch.isclose(a, torch.tensor(1 / 0.9)))
    assert abs(a.mean().item() - 1.0) < 0.01
    torch.manual_seed(3)
    assert torch.equal(a, fast_dropout(x, 0.1))  # torch's seed determines the mask
    assert not torch.equal(a, fast_dropout(x, 0.1))  # and the stream moves on
    assert fast_dropout(x, 0.1, training=False) is x
    assert torch.equal(fast_dropout(x, 1.0), torch.zeros_like(x))


def test_fast_dropout_bf16_and_gradient():
    x = torch.randn(4, 8, dtype=torch.bfloat16, requires_grad=True)
    torch.manual_seed(0)
    y = fast_dropout(x, 0.5)
    assert y.dtype == torch.bfloat16
    y.sum().backward()
    kept = y.detach() != 0
    torch.testing.assert_close(x.grad[kept].float(), torch.full((int(kept.sum()),), 2.0))
    assert torch.all(x.grad[~kept] == 0)


def test_use_fast_dropout_swaps_modules_in_place():
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.2), nn.Sequential(nn.Dropout(0.3)), _layer())
    state = {k: v.clone() for k, v in model.state_dict().items()}
    n = use_fast_dropout(model)
    assert n == 2 + 3  # two here, three in the transformer layer
    assert all(type(m) is not nn.Dropout for m in model.modules())
    assert isinstance(model[1], FastDropout) and model[1].p == 0.2
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    model.eval()
    x = torch.randn(2, 4)
    torch.testing.assert_close(model[:3](x), model[0](x))  # identity in eval mode


def best_description_index(sims, index, n_rel):
    from rocmre.modeling.model import best_among_rows, multi_description_rows

    rows = multi_description_rows(index, n_rel)
    return best_among_rows(sims[:, rows], index[rows], n_rel)


def test_best_description_index_matches_a_loop():

    torch.manual_seed(1)
    counts = [3, 1, 2, 1, 4, 1]
    index = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    sims = torch.randn(5, len(index)).round(decimals=1)  # rounded: ties happen
    sims[0, 0:3] = 0.5  # an exact tie: the first description wins
    best = best_description_index(sims, index, len(counts))
    for b in range(5):
        start = 0
        for r, n in enumerate(counts):
            row = sims[b, start:start + n]
            assert best[b, r].item() == int(torch.nonzero(row == row.max())[0])
            start += n
    assert best[0, 0].item() == 0
    one_each = best_description_index(torch.randn(2, 4), torch.arange(4), 4)
    assert torch.equal(one_each, torch.zeros(2, 4, dtype=torch.long))


def _tiny_bert():
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    return BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                                intermediate_size=32, attn_implementation="sdpa")).eval()


def test_frozen_text_layers_train_only_the_upper_layers_and_the_added_rows():
    """A tiny random BERT: with frozen_text_layers=1 the embeddings (but the added rows) and layer 0 get no
    gradient, the rest do."""
    from rocmre.modeling.freezing import freeze_lower_layers, freeze_word_embeddings

    bert = _tiny_bert()
    added = freeze_word_embeddings(bert, 46)
    freeze_lower_layers(bert, 1)
    out = bert(input_ids=torch.tensor([[1, 46, 5, 47], [2, 3, 48, 49]])).last_hidden_state
    out.sum().backward()
    assert [n for n, p in bert.embeddings.named_parameters() if p.grad is not None] == ["word_embeddings.added"]
    assert all(p.grad is None for p in bert.encoder.layer[0].parameters())
    assert all(p.grad is not None for p in bert.encoder.layer[1].parameters())
    assert added.added.grad.abs().sum(1).gt(0).all()  # every added row was in the input
    with pytest.raises(ValueError, match="has 3 layers"):
        freeze_lower_layers(bert, 4)
    with pytest.raises(ValueError, match="needs an encoder"):
        freeze_lower_layers(nn.Linear(2, 2), 1)


def test_added_rows_embedding_matches_the_table_and_saves_as_one_weight():
    """Same outputs as the plain table; only the added rows get gradients; the state dict is the plain one (with
    the trained rows written in), loadable both ways."""
    from rocmre.modeling.freezing import AddedRowsEmbedding, freeze_word_embeddings

    bert = _tiny_bert()
    plain = _tiny_bert()
    ids = torch.tensor([[1, 46, 5, 47, 0], [2, 3, 48, 49, 7]])
    before = bert(input_ids=ids).last_hidden_state
    table = freeze_word_embeddings(bert, 46)
    assert freeze_word_embeddings(bert, 46) is table  # idempotent
    assert isinstance(bert.get_input_embeddings(), AddedRowsEmbedding)
    assert torch.equal(bert(input_ids=ids).last_hidden_state, before)
    trainable = [n for n, p in bert.named_parameters() if n.startswith("embeddings.word") and p.requires_grad]
    assert trainable == ["embeddings.word_embeddings.added"]
    assert not table.weight.requires_grad
    with torch.no_grad():
        table.added += 1.0  # "training"
    state = bert.state_dict()
    assert "embeddings.word_embeddings.added" not in state
    assert torch.equal(state["embeddings.word_embeddings.weight"][46:], table.added.detach())
    assert torch.equal(state["embeddings.word_embeddings.weight"][:46], plain.embeddings.word_embeddings.weight[:46])
    plain.load_state_dict(state)  # into a plain table
    assert torch.allclose(plain(input_ids=ids).last_hidden_state, bert(input_ids=ids).last_hidden_state)
    again = _tiny_bert()
    freeze_word_embeddings(again, 46)
    again.load_state_dict(state)  # and back
    assert torch.equal(again.get_input_embeddings().added, table.added)
    with pytest.raises(ValueError, match="inside the table"):
        AddedRowsEmbedding(nn.Embedding(4, 2), 4)


def test_lazy_vision_backbone_can_be_copied_without_loading():
    import copy

    from rocmre.modeling.runtime import _LazyVisionBackbone

    lazy = _LazyVisionBackbone("efficientnet-lite0")
    twin = copy.deepcopy(lazy)
    assert twin.name == "efficientnet-lite0" and twin._backbone is None


def test_bf16_weight_copies_give_the_autocast_result_and_follow_weight_changes():
    from rocmre.modeling.runtime import Bf16MatrixWeights

    layer = _layer(dropout=0.0).eval()
    copies = Bf16MatrixWeights(layer)
    x = torch.randn(2, 5, 32)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        plain = layer(x)
        with copies.swapped():
            assert layer.linear1.weight.dtype == torch.bfloat16
            assert layer.self_attn.in_proj_weight.dtype == torch.bfloat16
            swapped = layer(x)
    assert torch.equal(plain, swapped)
    assert layer.linear1.weight.dtype == torch.float32 and isinstance(layer.linear1.weight, nn.Parameter)
    with torch.no_grad():
        layer.linear1.weight.add_(1.0)  # a training step or load_state_dict: the copies are made again
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        plain = layer(x)
        with copies.swapped():
            assert torch.equal(layer(x), plain)


def test_fast_dropout_attention_is_sdpa_without_drops_and_switches_hf_encoders():
    """The math path (taken when it drops) gives sdpa's result when no element is dropped, with a boolean or an
    additive mask; use_fast_dropout switches an sdpa encoder to it and evaluation stays sdpa's."""
    import torch.nn.functional as F

    from rocmre.modeling.dropout import FAST_DROPOUT_ATTENTION, fast_dropout_attention

    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 4) for _ in range(3))
    keep = torch.ones(2, 1, 5, 5, dtype=torch.bool)
    keep[0, ..., 3:] = False
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=keep).transpose(1, 2)
    additive = torch.zeros(keep.shape).masked_fill(~keep, float("-inf"))
    for mask in (keep, additive):
        got, _ = fast_dropout_attention(nn.Module(), q, k, v, mask, dropout=1e-9)  # rounds to no drop at all
        assert torch.allclose(got, want, atol=1e-6)
    dropped, _ = fast_dropout_attention(nn.Module(), q, k, v, keep, dropout=0.5)
    assert not torch.allclose(dropped, want, atol=1e-3)

    bert = _tiny_bert()
    ids, mask = torch.randint(0, 50, (3, 7)), torch.ones(3, 7, dtype=torch.long)
    mask[0, 5:] = 0
    before = bert(input_ids=ids, attention_mask=mask).last_hidden_state
    use_fast_dropout(bert)
    assert bert.config._attn_implementation == FAST_DROPOUT_ATTENTION
    assert torch.allclose(bert(input_ids=ids, attention_mask=mask).last_hidden_state, before, atol=1e-6)


def test_bf16_copies_are_rebuilt_after_a_fused_adamw_step(tiny_roc_dir, cache_dir, mnre_root):
    """Fused AdamW updates weights without bumping their version counters: validation during training must still
    score the current weights (it scored stale bf16 copies, so the trainer picked checkpoints on stale scores)."""
    import numpy as np

    from rocmre.data.mnre import read_mnre
    from rocmre.modeling.model import RelationModel
    from rocmre.modeling.runtime import ModelRuntime

    model = RelationModel.from_pretrained(tiny_roc_dir)
    runtime = ModelRuntime(model, cache_dir=cache_dir, precision="bf16")
    feats = runtime.featurize(list(read_mnre(mnre_root, "val"))[:8], with_labels=False)
    runtime.score(feats)  # the bf16 copies are made
    model.train()
    weight = model.encoder.text_model.encoder.layer[0].attention.self.query.weight
    version = weight._version
    optimizer = torch.optim.AdamW([weight], lr=0.05, fused=True)
    weight.grad = torch.ones_like(weight)
    optimizer.step()
    assert weight._version == version  # what made the copies go stale
    after = runtime.score(feats).scores
    fresh = ModelRuntime(model, cache_dir=cache_dir, precision="bf16").score(feats).scores
    assert np.array_equal(after, fresh)


def _tiny_mpnet():
    from transformers import MPNetConfig, MPNetModel

    torch.manual_seed(0)
    return MPNetModel(MPNetConfig(vocab_size=50, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                                  intermediate_size=32)).eval()


@pytest.mark.parametrize("make", [_tiny_bert, _tiny_mpnet])
@pytest.mark.parametrize("n_layers", [0, 1, 3])
def test_lower_then_upper_layers_equal_one_forward_pass(n_layers, make):
    from rocmre.modeling.freezing import (
        freeze_lower_layers,
        freeze_marker_rows,
        freeze_word_embeddings,
        frozen_prefix_layers,
        run_lower_layers,
        run_upper_layers,
    )

    bert = make()
    ids = torch.tensor([[1, 46, 5, 47, 0], [2, 3, 48, 49, 9]])
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    full = bert(input_ids=ids, attention_mask=mask).last_hidden_state
    split = run_upper_layers(bert, run_lower_layers(bert, ids, mask, n_layers), mask, n_layers)
    assert torch.allclose(full, split, atol=1e-6)
    if n_layers:  # everything below layer N fixed (MPNet's shared relative position bias included)
        freeze_word_embeddings(bert, 46)
        freeze_marker_rows(bert)
        freeze_lower_layers(bert, n_layers)
        assert frozen_prefix_layers(bert, n_layers) == n_layers
    with pytest.raises(ValueError, match="implemented for bert, mpnet"):
        run_lower_layers(_NotSplittable(), ids, mask, 1)


class _NotSplittable(nn.Module):
    class config:  # noqa: N801 (stands in for a Hugging Face config)
        model_type = "t5"

    def embeddings(self, input_ids: torch.Tensor) -> torch.Tensor:
        return torch.zeros(*input_ids.shape, 4)


def test_fixed_markers_make_a_frozen_prefix_with_no_gradient_and_no_dropout():
    """trainable_markers=false + frozen_text_layers=N: nothing below layer N trains, and the model keeps those
    layers in eval mode when it trains (their output is then a function of the ids: cacheable)."""
    from rocmre.modeling.freezing import (
        freeze_lower_layers,
        freeze_marker_rows,
        freeze_word_embeddings,
        frozen_prefix_layers,
    )

    bert = _tiny_bert()
    freeze_word_embeddings(bert, 46)
    freeze_lower_layers(bert, 2)
    assert frozen_prefix_layers(bert, 2) == 0  # the marker rows still train
    freeze_marker_rows(bert)
    assert frozen_prefix_layers(bert, 2) == 2
    assert frozen_prefix_layers(bert, 0) == 0
    plain = _tiny_bert()
    with pytest.raises(ValueError, match="frozen_word_embeddings"):
        freeze_marker_rows(plain)


def test_marker_rows_start_from_the_chosen_words(tmp_path):
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from rocmre.modeling.features import add_marker_tokens
    from rocmre.modeling.freezing import init_marker_rows
    from rocmre.modeling.prompting import MARKERS

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "<", ">", "{", "}", "person", "##s", "x"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = BertTokenizerFast(str(tmp_path / "vocab.txt"))
    add_marker_tokens(tok)
    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=len(tok), hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=16))
    init_marker_rows(bert, tok, MARKERS, ["<", ">", "{", "}"])
    table = bert.get_input_embeddings().weight
    for marker, word in zip(MARKERS, ["<", ">", "{", "}"], strict=True):
        assert torch.equal(table[tok.convert_tokens_to_ids(marker)], table[tok.convert_tokens_to_ids(word)])
    with pytest.raises(ValueError, match="single known word piece"):
        init_marker_rows(bert, tok, MARKERS, ["<", ">", "{", "persons"])
    with pytest.raises(ValueError, match="needs 4 words"):
        init_marker_rows(bert, tok, MARKERS, ["<", ">"])


def test_frozen_states_cache_keeps_the_records_as_written():
    """A name-swapped variant (keep=False) gets its own prefix states for its batch, and the states kept for the
    record stay those of the record as written: the next epoch reuses them instead of recomputing."""
    from types import SimpleNamespace

    from rocmre.modeling.features import PairFeatures
    from rocmre.modeling.freezing import run_lower_layers
    from rocmre.training.frozen_states import FrozenStatesCache

    bert = _tiny_bert()
    model = SimpleNamespace(frozen_prefix_layers=1, encoder=SimpleNamespace(text_model=bert))
    cache = FrozenStatesCache(model)

    def batch_of(rows: list[list[int]]):
        width = max(map(len, rows))
        ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
        feats = [PairFeatures(r, 0, 1, "person", "person") for r in rows]
        return {"input_ids": ids, "attention_mask": mask}, feats

    written, swapped = [[1, 5, 6, 2], [1, 7, 8, 9, 2]], [[1, 5, 6, 2], [1, 11, 12, 2]]
    batch, feats = batch_of(written)
    with torch.no_grad():
        cache.attach(batch, [0, 1], feats)
        assert (cache.computed, cache.reused) == (2, 0)
        batch, feats = batch_of(swapped)  # record 1 with other names this epoch
        cache.attach(batch, [0, 1], feats, keep=[True, False])
        assert (cache.computed, cache.reused) == (3, 1)
        want = run_lower_layers(bert, torch.tensor([swapped[1]]), torch.ones(1, 4, dtype=torch.long), 1)[0]
        torch.testing.assert_close(batch["text_prefix_states"][1, :4], want)
        batch, feats = batch_of(written)  # the next epoch: as written again, nothing to compute
        cache.attach(batch, [0, 1], feats, keep=[True, True])
    assert (cache.computed, cache.reused) == (3, 3)


@pytest.mark.parametrize("bf16", [False, True])
def test_frozen_states_prepared_before_an_epoch_equal_the_in_step_ones(bf16):
    """``prepare`` (length-sorted inference batches through the lean forward, on bf16 weight copies under bf16
    autocast) gives the states the step would compute, up to float rounding; the steps then compute nothing, and
    an epoch's swapped variants are forgotten at the next ``prepare`` while the records as written stay."""
    from types import SimpleNamespace

    from rocmre.modeling.features import PairFeatures
    from rocmre.modeling.freezing import run_lower_layers
    from rocmre.training.frozen_states import FrozenStatesCache

    bert = _tiny_bert()
    bert.config._attn_implementation = "sdpa"
    model = SimpleNamespace(frozen_prefix_layers=2, encoder=SimpleNamespace(text_model=bert),
                            tokenizer=SimpleNamespace(pad_token_id=0), parameters=bert.parameters)
    cache = FrozenStatesCache(model)
    rows = [[1, 5, 6, 2], [1, 7, 8, 9, 10, 2], [1, 3, 2]]
    feats = [PairFeatures(r, 0, 1, "person", "person") for r in rows]
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)
    with autocast:
        assert cache.prepare([0, 1, 2], feats, [True, True, False]) == 3
    for i, r in enumerate(rows):
        with torch.no_grad(), autocast:
            want = run_lower_layers(bert, torch.tensor([r]), torch.ones(1, len(r), dtype=torch.long), 2)[0]
        torch.testing.assert_close(cache._lookup(i, tuple(r)), want, atol=3e-2 if bf16 else 1e-5,
                                   rtol=3e-2 if bf16 else 1e-5)
    width = 6
    batch = {"input_ids": torch.tensor([r + [0] * (width - len(r)) for r in rows]),
             "attention_mask": torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])}
    cache.attach(batch, [0, 1, 2], feats, keep=[True, True, False])
    assert (cache.computed, cache.reused) == (3, 3) and len(cache) == 2
    with autocast:  # the next epoch: record 2 as written, nothing else to compute
        assert cache.prepare([0, 1, 2], feats, [True, True, True]) == 1
    assert len(cache) == 3 and not cache._epoch

    # a record met first inside a step is computed the way prepare computes it (the lean forward), so its states
    # do not depend on which of the two saw it first
    fresh, calls = FrozenStatesCache(model), []
    lean = fresh._lean
    fresh._lean = lambda *a, **k: calls.append(1) or lean(*a, **k)
    with torch.no_grad(), autocast:
        fresh.attach(batch, [0, 1, 2], feats)
    assert calls and fresh.computed == 3
    for i, r in enumerate(rows):
        torch.testing.assert_close(fresh._lookup(i, tuple(r)), cache._lookup(i, tuple(r)), atol=1e-2 if bf16 else 1e-6,
                                   rtol=1e-2 if bf16 else 1e-6)
