"""The PEFT export of a LoRA adapter (adapters/generation/peft_export.py) against what peft itself writes.

On a small random Llama model (the same module names as SmolLM2: ``model.layers.{i}.self_attn.q_proj``...): a
peft adapter with random A and B is saved by ``PeftModel.save_pretrained`` and, through :class:`LoraWeights`,
by the export; the two directories hold the same tensor names, values and safetensors metadata and the same
``adapter_config.json`` fields, and ``PeftModel.from_pretrained`` on the export gives the adapter's logits.
The real model, end to end through the server: tests/integration/test_generation.py."""

from __future__ import annotations

import copy
import io
import json
import zipfile
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict
from safetensors import safe_open

from adapters.generation import LoraWeights
from adapters.generation.peft_export import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    MANIFEST_FILE,
    MODEL_CARD,
    adapter_files,
    peft_bundle,
)

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


def tiny_llama() -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=97,
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=3,
        num_attention_heads=6,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config).eval()


def as_lora_weights(peft_model, rank: int, alpha: float) -> LoraWeights:
    out = LoraWeights(rank, alpha)
    for key, tensor in get_peft_model_state_dict(peft_model).items():
        module, _, part = key.removeprefix("base_model.model.").rpartition(".lora_")
        {"A.weight": out.a, "B.weight": out.b}[part][module] = tensor.detach().clone()
    out.check()
    return out


@pytest.fixture(scope="module")
def adapted(tmp_path_factory):
    base = tiny_llama()
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=TARGETS, task_type="CAUSAL_LM")
    peft_model = get_peft_model(copy.deepcopy(base), config).eval()  # as fit_lora builds it
    with torch.no_grad():  # as if trained: B starts at zero, so give it values
        for name, param in peft_model.named_parameters():
            if ".lora_B." in name:
                param.normal_(0, 0.2)
    reference = tmp_path_factory.mktemp("peft-save")
    peft_model.save_pretrained(reference)
    return base, peft_model, reference, as_lora_weights(peft_model, 4, 8.0)


def test_the_export_writes_what_peft_save_pretrained_writes(adapted, tmp_path: Path) -> None:
    _, _, reference, weights = adapted
    expected_config = json.loads((reference / ADAPTER_CONFIG).read_text())
    files = adapter_files(weights, expected_config["base_model_name_or_path"])
    mine = json.loads(files[ADAPTER_CONFIG])
    assert sorted(mine.pop("target_modules")) == sorted(expected_config.pop("target_modules"))
    assert mine == expected_config  # every other field, peft_version and inference_mode included
    (tmp_path / ADAPTER_WEIGHTS).write_bytes(files[ADAPTER_WEIGHTS])
    with safe_open(reference / ADAPTER_WEIGHTS, "pt") as ref, safe_open(tmp_path / ADAPTER_WEIGHTS, "pt") as out:
        assert sorted(out.keys()) == sorted(ref.keys())
        assert len(ref.keys()) == 3 * len(TARGETS) * 2
        assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in out.keys()
        assert out.metadata() == ref.metadata()
        for key in ref.keys():
            a, b = ref.get_tensor(key), out.get_tensor(key)
            assert a.dtype == b.dtype and torch.equal(a, b), key


def test_peft_loads_the_exported_zip_and_gives_the_adapters_logits(adapted, tmp_path: Path) -> None:
    base, peft_model, _, weights = adapted
    data = peft_bundle(weights, "tiny-llama", {"format": "test"}, title="tiny")
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert sorted(zf.namelist()) == sorted([ADAPTER_CONFIG, ADAPTER_WEIGHTS, MODEL_CARD, MANIFEST_FILE])
        zf.extractall(tmp_path)
    assert json.loads((tmp_path / MANIFEST_FILE).read_text()) == {"format": "test"}
    assert json.loads((tmp_path / ADAPTER_CONFIG).read_text())["base_model_name_or_path"] == "tiny-llama"
    loaded = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path).eval()
    ids = torch.tensor([[1, 5, 9, 33, 2, 70, 4]])
    with torch.no_grad():
        want, got, plain = (m(input_ids=ids).logits for m in (peft_model, loaded, base))
    assert torch.equal(got, want)
    assert (got - plain).abs().max() > 1e-3  # the adapter changes the output: the comparison can fail


def test_a_fractional_alpha_and_another_rank_are_kept(adapted) -> None:
    _, _, _, weights = adapted
    odd = LoraWeights(2, 3.5, {m: t[:2] for m, t in weights.a.items()}, {m: t[:, :2] for m, t in weights.b.items()})
    config = json.loads(adapter_files(odd, None)[ADAPTER_CONFIG])
    assert config["r"] == 2 and config["lora_alpha"] == 3.5 and config["task_type"] == "CAUSAL_LM"
    assert config["base_model_name_or_path"] is None and sorted(config["target_modules"]) == sorted(TARGETS)
