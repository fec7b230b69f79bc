"""export_hf_checkpoint.py: the merged checkpoint computes exactly what base + adapter computed."""

import json
import subprocess
import sys

import pytest
import torch

import export_hf_checkpoint
from utils import modeling

REPO_ROOT = export_hf_checkpoint.Path(export_hf_checkpoint.__file__).resolve().parent


@pytest.fixture(scope="module")
def random_adapter(tiny_base, tmp_path_factory):
    """An adapter with non-zero B matrices on all attention and MLP projections (a merge must move the logits)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_base), LoraConfig(r=8, lora_alpha=16, target_modules=targets))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    folder = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(folder)
    return folder


def test_merged_logits_equal_base_plus_adapter(tiny_base, random_adapter, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "merged"
    export_hf_checkpoint.main(base_model=tiny_base, lora_weights=str(random_adapter), output_dir=str(out), max_shard_size="5MB")
    shards = sorted(p.name for p in out.glob("model-*.safetensors"))
    assert len(shards) > 1 and (out / "model.safetensors.index.json").is_file()  # sharded as asked
    assert (out / "tokenizer.json").is_file() and (out / "generation_config.json").is_file()
    config = json.loads((out / "run_config.json").read_text())
    assert config["flags"]["lora_weights"] == str(random_adapter) and config["adapter"]["config"]["r"] == 8
    assert not (out / "adapter_config.json").exists()

    tokenizer = AutoTokenizer.from_pretrained(out)  # the merged folder stands alone
    batch = tokenizer(["糖尿病的典型症状是什么？", "高血压患者饮食要注意什么"], return_tensors="pt", padding=True)
    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(out).eval()(**batch).logits
        tuned = modeling.load_adapter(AutoModelForCausalLM.from_pretrained(tiny_base), str(random_adapter))(**batch).logits
        plain = AutoModelForCausalLM.from_pretrained(tiny_base).eval()(**batch).logits
    assert (merged - tuned).abs().max().item() < 1e-4
    assert (merged - plain).abs().max().item() > 1e-2  # the adapter really is in the weights


def test_quantized_training_is_merged_into_a_full_precision_copy(tiny_base, random_adapter, tmp_path, caplog):
    """An adapter trained with --load_8bit is merged into the fp32 base, and the log says so."""
    import shutil

    from transformers import AutoModelForCausalLM

    adapter = tmp_path / "adapter"
    shutil.copytree(random_adapter, adapter)
    (adapter / "run_config.json").write_text(json.dumps({"flags": {"load_8bit": True}}))
    out = tmp_path / "merged"
    export_hf_checkpoint.main(base_model=tiny_base, lora_weights=str(adapter), output_dir=str(out), precision="bf16")
    assert "trained on a 8-bit base" in caplog.text and "bf16 copy" in caplog.text
    merged = AutoModelForCausalLM.from_pretrained(out)
    assert all(p.dtype == torch.bfloat16 for p in merged.parameters())
    assert not any(type(m).__module__.startswith("bitsandbytes") for m in merged.modules())


def test_export_refuses_to_overwrite_and_reports_bad_flags_in_one_line(tiny_base, random_adapter, tmp_path):
    out = tmp_path / "merged"
    out.mkdir()
    (out / "config.json").write_text("{}")
    result = subprocess.run(
        [sys.executable, "export_hf_checkpoint.py", "--base_model", tiny_base, "--lora_weights", str(random_adapter),
         "--output_dir", str(out)], capture_output=True, text=True, cwd=REPO_ROOT,
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "already holds a model" in result.stderr and "--overwrite" in result.stderr
