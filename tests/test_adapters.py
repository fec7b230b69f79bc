"""Old-format adapters (the published HuaTuo LoRA) load; pickles that run code do not."""

import json
import os
import pickle

import pytest
import torch

from utils.model import adapters, loading

OLD_CONFIG = {  # as peft 0.2/0.3 wrote it for the published HuaTuo adapter
    "base_model_name_or_path": "decapoda-research/llama-7b-hf",
    "bias": "none",
    "enable_lora": None,
    "fan_in_fan_out": False,
    "inference_mode": True,
    "lora_alpha": 16,
    "lora_dropout": 0.05,
    "merge_weights": False,
    "modules_to_save": None,
    "peft_type": "LORA",
    "r": 8,
    "target_modules": ["q_proj", "v_proj"],
    "task_type": "CAUSAL_LM",
}


def old_adapter(tiny_base, folder):
    """Write an adapter the way old peft did: .bin, keys without the adapter name, old config fields."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tiny_base)
    generator = torch.Generator().manual_seed(7)
    state = {}
    for layer in range(config.num_hidden_layers):
        for proj in ("q_proj", "v_proj"):
            out_features = (
                config.num_attention_heads * config.head_dim
                if proj == "q_proj"
                else config.num_key_value_heads * config.head_dim
            )
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{proj}"
            state[f"{prefix}.lora_A.weight"] = torch.randn(8, config.hidden_size, generator=generator) * 0.05
            state[f"{prefix}.lora_B.weight"] = torch.randn(out_features, 8, generator=generator) * 0.05
    folder.mkdir()
    torch.save(state, folder / "adapter_model.bin")
    (folder / "adapter_config.json").write_text(json.dumps(OLD_CONFIG))
    return state


def test_old_format_adapter_loads_and_changes_outputs(tiny_base, tmp_path):
    from transformers import AutoModelForCausalLM

    state = old_adapter(tiny_base, tmp_path / "huatuo-lora")
    tokenizer = loading.load_tokenizer(tiny_base)
    batch = tokenizer(["急性阑尾炎有哪些症状？"], return_tensors="pt")
    with torch.no_grad():
        plain = AutoModelForCausalLM.from_pretrained(tiny_base).eval()(**batch).logits
        model = adapters.load_adapter(AutoModelForCausalLM.from_pretrained(tiny_base), str(tmp_path / "huatuo-lora"))
        tuned = model(**batch).logits
    assert (tuned - plain).abs().max() > 1e-3
    # every tensor of the file went where its name says
    loaded = {n: p for n, p in model.named_parameters() if "lora_" in n}
    assert len(loaded) == len(state)
    key = "base_model.model.model.layers.2.self_attn.v_proj.lora_B.default.weight"
    assert torch.equal(loaded[key], state[key.replace(".default", "")])


def test_empty_or_mismatched_adapter_is_an_error(tiny_base, tmp_path):
    from transformers import AutoModelForCausalLM

    folder = tmp_path / "empty"
    folder.mkdir()
    torch.save({}, folder / "adapter_model.bin")
    (folder / "adapter_config.json").write_text(json.dumps(OLD_CONFIG))
    with pytest.raises(ValueError, match="holds no tensors"):
        adapters.load_adapter(AutoModelForCausalLM.from_pretrained(tiny_base), str(folder))
    torch.save(
        {"base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight": torch.zeros(8, 4)},
        folder / "adapter_model.bin",
    )
    with pytest.raises(ValueError, match="does not match the base model"):
        adapters.load_adapter(AutoModelForCausalLM.from_pretrained(tiny_base), str(folder))


class RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_pickle_that_runs_code_is_refused(tiny_base, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "evil"
    folder.mkdir()
    with open(folder / "adapter_model.bin", "wb") as handle:
        pickle.dump({"x": RunsCode()}, handle)
    (folder / "adapter_config.json").write_text(json.dumps(OLD_CONFIG))
    with pytest.raises(ValueError, match="refused to load"):
        adapters.load_adapter(AutoModelForCausalLM.from_pretrained(tiny_base), str(folder))
    assert not (tmp_path / "pwned").exists()
