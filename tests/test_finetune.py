"""Fine-tune smoke runs (unquantized, 8-bit, 4-bit) and the saved adapter's fidelity."""

import json
import math

import pytest
import torch
from conftest import tiny_train_args

import finetune
from utils.model import adapters, loading
from utils.train import checkpointing


def run_finetune(tiny_base, train_file, out, **flags):
    finetune.train(**tiny_train_args(base_model=tiny_base, data_path=str(train_file), output_dir=str(out), **flags))
    return json.loads((out / "metrics.json").read_text())


def step_losses(metrics) -> list[float]:
    return [h["loss"] for h in metrics["log_history"] if "loss" in h]


# The recipe's first 3 optimizer steps in fp32 on the tiny base and conftest's train_file (tiny_train_args:
# micro batch 8, batch 16, seed 42, the default learning rate and packing): the loss logged at each step, then
# the evaluation loss. Obtained 2026-11-30 on CPU (torch 2.13.0+cpu, transformers 5.24.0, peft 0.21.2) with
#   pytest tests/test_finetune.py -k "smoke and none" -s   # printing step_losses(metrics), metrics["eval_loss"]
# twice, identical to the last bit; with --packing False the step losses agree within 3e-6 and the eval loss
# within 2.2e-5 (test below). They legitimately change with the data (data/infer.json and the first lines of
# data/llama_data.json make train_file), the prompt template, the tiny base or its tokenizer, the recipe's
# defaults (learning rate, warm-up, LoRA, dropout, seeding order) and library versions: then measure them again
# and say why in the commit.
PINNED_STEP_LOSSES = [8.103140, 8.084374, 8.080174]
PINNED_EVAL_LOSS = 8.078646


@pytest.mark.slow
@pytest.mark.parametrize("quant", ["none", "8bit", "4bit"])
def test_finetune_smoke(tiny_base, train_file, tmp_path, quant):
    out = tmp_path / "lora"
    precision = "fp32" if quant == "none" else "auto"  # fp32: the same losses on any CPU (bf16 rounds per kernel)
    metrics = run_finetune(
        tiny_base, train_file, out, load_8bit=quant == "8bit", load_4bit=quant == "4bit", precision=precision
    )
    assert math.isfinite(metrics["train_loss"]) and math.isfinite(metrics["eval_loss"])
    if quant == "none":
        assert step_losses(metrics) == pytest.approx(PINNED_STEP_LOSSES, abs=1e-4)
        assert metrics["eval_loss"] == pytest.approx(PINNED_EVAL_LOSS, abs=1e-4)
    else:  # quantized kernels differ between bitsandbytes builds and devices: a sanity bound only
        assert metrics["train_loss"] < 9.0  # ln(3000) = 8.0; a NaN or exploding loss would fail
    assert checkpointing.adapter_problem(out) is None
    config = json.loads((out / "run_config.json").read_text())
    assert config["flags"]["load_8bit"] == (quant == "8bit") and config["data"]["records"] == 160
    # HuaTuo's flag names, all 43, as adapters.settings and older adapter folders read them
    assert len(config["flags"]) == 43 and config["flags"]["prompt_template_name"] == "med_template"
    assert config["versions"]["transformers"] and config["resolved"]["pad_token_id"] == 0  # unk for LLaMA
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_base), str(out))
    lora_b = [p for n, p in reloaded.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b), "the adapter was saved empty"


@pytest.mark.slow
def test_padded_batches_log_the_same_pinned_losses(tiny_base, train_file, tmp_path):
    """--packing False (HuaTuo's padded batches): the same arithmetic per example, so the same losses."""
    metrics = run_finetune(tiny_base, train_file, tmp_path / "lora", precision="fp32", packing=False)
    assert json.loads((tmp_path / "lora" / "run_config.json").read_text())["resolved"]["packing"] is False
    assert step_losses(metrics) == pytest.approx(PINNED_STEP_LOSSES, abs=1e-4)
    assert metrics["eval_loss"] == pytest.approx(PINNED_EVAL_LOSS, abs=1e-4)


@pytest.mark.slow
def test_validation_loss_falls(tiny_base, train_file, tmp_path):
    metrics = run_finetune(
        tiny_base, train_file, tmp_path / "lora", max_steps=12, eval_steps=4, save_steps=4, learning_rate=5e-3
    )
    evals = [h["eval_loss"] for h in metrics["log_history"] if "eval_loss" in h]
    assert len(evals) >= 3 and evals[-1] < evals[0] - 0.05, evals


def test_reloaded_adapter_reproduces_in_memory_logits(tiny_base, train_file, tmp_path):
    """Train, keep the in-memory model, save, reload from disk: the logits agree."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    tokenizer = loading.load_tokenizer(tiny_base)
    torch.manual_seed(0)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_base),
        LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]),
    )
    with torch.no_grad():  # a trained-looking adapter: non-zero B matrices
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    model.save_pretrained(tmp_path / "a")
    batch = tokenizer(["糖尿病的症状有哪些？", "头痛"], return_tensors="pt", padding=True)
    model.eval()
    with torch.no_grad():
        expected = model(**batch).logits
        base = AutoModelForCausalLM.from_pretrained(tiny_base)
        plain = base(**batch).logits
        reloaded = adapters.load_adapter(AutoModelForCausalLM.from_pretrained(tiny_base), str(tmp_path / "a"))
        got = reloaded(**batch).logits
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(plain, expected, atol=1e-3)


def test_trained_adapter_on_disk_matches_trainer_model(tiny_base, trained_adapter):
    """The adapter written by finetune.py loads with PeftModel.from_pretrained and with our loader identically."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    tokenizer = loading.load_tokenizer(tiny_base)
    batch = tokenizer(["肺炎怎么治疗？"], return_tensors="pt")
    with torch.no_grad():
        a = (
            PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_base), str(trained_adapter))
            .eval()(**batch)
            .logits
        )
        b = adapters.load_adapter(AutoModelForCausalLM.from_pretrained(tiny_base), str(trained_adapter))(**batch).logits
    assert torch.equal(a, b)


@pytest.mark.slow
def test_val_data_path_is_the_validation_set(tiny_base, train_file, tmp_path):
    """--val_data_path: validation comes from that file (e.g. the builder's llama_data.valid.json), and
    every record of the training file is trained on (nothing carved out)."""
    lines = train_file.read_text(encoding="utf-8").splitlines()
    val_file = tmp_path / "valid.json"
    val_file.write_text("\n".join(lines[:12]) + "\n", encoding="utf-8")
    metrics = run_finetune(
        tiny_base, train_file, tmp_path / "lora", val_data_path=str(val_file), max_steps=1, eval_steps=1, save_steps=1
    )
    config = json.loads((tmp_path / "lora" / "run_config.json").read_text())
    assert config["resolved"]["val_examples"] == 12 and config["data"]["validation"]["records"] == 12
    assert (
        config["resolved"]["train_examples"] + config["resolved"]["dropped_examples"] >= len(lines) - 1
    )  # none held out
    assert math.isfinite(metrics["eval_loss"])
