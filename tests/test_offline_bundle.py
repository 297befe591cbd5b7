"""benchmarks/offline_bundle.py: the int8 packing that lets mpnet-base travel to a lent GPU, and its unpacking."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="module")
def bundle():
    from conftest import load_benchmark

    return load_benchmark("offline_bundle")


def test_int8_round_trip_is_close_and_compact(bundle) -> None:
    g = torch.Generator().manual_seed(0)
    weights = {"layer.weight": torch.randn(64, 48, generator=g) * 0.05, "layer.bias": torch.randn(64, generator=g),
               "ids": torch.arange(5)}
    packed = bundle.quantize_int8(weights)
    assert packed["layer.weight.q8"].dtype == torch.int8 and packed["layer.weight.scale"].shape == (64, 1)
    assert packed["layer.bias"].dtype == torch.float16 and torch.equal(packed["ids"], weights["ids"])
    restored = bundle.dequantize_int8(packed)
    assert set(restored) == set(weights) and restored["layer.weight"].dtype == torch.float32
    row_max = weights["layer.weight"].abs().amax(dim=1, keepdim=True)
    assert ((restored["layer.weight"] - weights["layer.weight"]).abs() <= row_max / 127 * 0.51 + 1e-4).all()
    assert torch.allclose(restored["layer.bias"], weights["layer.bias"], atol=1e-2)
    assert torch.equal(restored["ids"], weights["ids"])


def test_unpack_writes_a_loadable_model_and_refuses_a_folder_without_weights(bundle, tmp_path: Path) -> None:
    from safetensors.torch import save_file
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=32, max_position_embeddings=16)).eval()
    folder = tmp_path / "tiny-bert"
    model.config.save_pretrained(folder)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(bundle.quantize_int8(state), str(folder / bundle.INT8_FILE), metadata={"format": "pt"})
    assert bundle.unpack(tmp_path) == [folder]
    assert not (folder / bundle.INT8_FILE).exists()
    loaded = BertModel.from_pretrained(folder).eval()
    ids = torch.tensor([[1, 5, 7, 9, 2]])
    with torch.no_grad():
        a, b = model(input_ids=ids).last_hidden_state, loaded(input_ids=ids).last_hidden_state
    assert torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.999
    (folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="tiny-bert"):
        bundle.unpack(tmp_path)
