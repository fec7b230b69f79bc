"""export_hf_checkpoint.py: the merged checkpoint computes exactly what base + adapter computed."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import export_hf_checkpoint
from utils.model import adapters

REPO_ROOT = Path(export_hf_checkpoint.__file__).resolve().parent


@pytest.fixture(scope="module")
def random_adapter(tiny_base, tmp_path_factory):
    """An adapter with non-zero B matrices on all attention and MLP projections (a merge must move the logits)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_base), LoraConfig(r=8, lora_alpha=16, target_modules=targets)
    )
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
    export_hf_checkpoint.main(
        base_model=tiny_base, lora_weights=str(random_adapter), output_dir=str(out), max_shard_size="5MB"
    )
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
        tuned = adapters.load_adapter(AutoModelForCausalLM.from_pretrained(tiny_base), str(random_adapter))(
            **batch
        ).logits
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


@pytest.mark.slow
def test_export_refuses_to_overwrite_and_reports_bad_flags_in_one_line(tiny_base, random_adapter, tmp_path):
    out = tmp_path / "merged"
    out.mkdir()
    (out / "config.json").write_text("{}")
    result = subprocess.run(
        [
            sys.executable,
            "export_hf_checkpoint.py",
            "--base_model",
            tiny_base,
            "--lora_weights",
            str(random_adapter),
            "--output_dir",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "already holds a model" in result.stderr and "--overwrite" in result.stderr


# ----------------------------------------------------------------------------------------------
# defaults: the base's dtype, $BASE_MODEL / $LORA_WEIGHTS, the adapter's run_config.json


def test_weights_keep_the_base_dtype_unless_asked(random_adapter, tiny_base, tmp_path):
    from transformers import AutoModelForCausalLM

    base = tmp_path / "bf16-base"  # the tiny base saved in bf16, as 7B bases are saved in fp16/bf16
    AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.bfloat16).save_pretrained(base)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (base / name).write_bytes((Path(tiny_base) / name).read_bytes())
    assert json.loads((base / "config.json").read_text())["dtype"] == "bfloat16"

    default = export_hf_checkpoint.main(
        base_model=str(base), lora_weights=str(random_adapter), output_dir=str(tmp_path / "a")
    )
    fp32 = export_hf_checkpoint.main(
        base_model=str(base), lora_weights=str(random_adapter), output_dir=str(tmp_path / "b"), precision="fp32"
    )
    assert {p.dtype for p in AutoModelForCausalLM.from_pretrained(default, dtype="auto").parameters()} == {
        torch.bfloat16
    }
    assert {p.dtype for p in AutoModelForCausalLM.from_pretrained(fp32, dtype="auto").parameters()} == {torch.float32}
    size = lambda folder: sum(p.stat().st_size for p in Path(folder).glob("*.safetensors"))  # noqa: E731
    assert size(default) < 0.55 * size(fp32)


def adapter_trained_with(random_adapter, folder, **flags):
    """A copy of ``random_adapter`` whose run_config.json says it was trained with ``flags``."""
    import shutil

    shutil.copytree(random_adapter, folder)
    (folder / "run_config.json").write_text(
        json.dumps({"flags": flags, "resolved": {"base_model": flags.get("base_model", "")}})
    )
    return folder


@pytest.mark.slow
def test_environment_and_run_config_defaults_flags_win(tiny_base, random_adapter, tmp_path):
    from transformers import AutoTokenizer

    from utils.data.prompter import Prompter

    adapter = adapter_trained_with(
        random_adapter, tmp_path / "lora-lit", base_model=tiny_base, prompt_template_name="literature_template"
    )
    env = dict(os.environ, BASE_MODEL=tiny_base, LORA_WEIGHTS=str(adapter))
    script = [sys.executable, "export_hf_checkpoint.py", "--output_dir"]
    result = subprocess.run(script + [str(tmp_path / "env")], capture_output=True, text=True, cwd=REPO_ROOT, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    written = json.loads((tmp_path / "env" / "run_config.json").read_text())
    assert written["resolved"]["base_model"] == tiny_base and written["adapter"]["path"] == str(adapter.resolve())
    assert written["resolved"]["prompt_template"] == "literature_template"  # from the adapter's run_config.json
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "env")
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "肝癌能治好吗？"}], tokenize=False, add_generation_prompt=True
    )
    assert rendered.endswith(Prompter("literature_template").generate_prompt(" <user>: 肝癌能治好吗？"))
    assert (tmp_path / "env" / "chat_template.jinja").read_text(encoding="utf-8") == tokenizer.chat_template

    # a flag wins over the environment, and a template other than the trained one is used with a warning
    env["LORA_WEIGHTS"] = str(tmp_path / "no-such-adapter")
    flagged = script + [str(tmp_path / "flag"), "--lora_weights", str(adapter), "--prompt_template", "med_template"]
    result = subprocess.run(flagged, capture_output=True, text=True, cwd=REPO_ROOT, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "differs from the 'literature_template'" in result.stderr and "using 'med_template'" in result.stderr
    assert (
        json.loads((tmp_path / "flag" / "run_config.json").read_text())["resolved"]["prompt_template"] == "med_template"
    )

    env.pop("LORA_WEIGHTS")
    result = subprocess.run(
        script + [str(tmp_path / "none"), "--lora_weights", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr and "missing not found" in result.stderr


def test_chat_adapter_export_stops_at_end_of_turn_and_keeps_its_system_prompt(tmp_path):
    from peft import LoraConfig, get_peft_model
    from tiny_archs import build, end_of_turn_id
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    base = build("qwen2", tmp_path / "qwen2")
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base), LoraConfig(r=4, target_modules=["q_proj", "v_proj"])
    )
    model.save_pretrained(tmp_path / "lora")
    adapter = tmp_path / "lora"
    (adapter / "run_config.json").write_text(
        json.dumps(
            {
                "flags": {"base_model": base, "prompt_template_name": "chat", "system_prompt": "你是一名医生。"},
                "resolved": {"base_model": base},
            }
        )
    )
    out = export_hf_checkpoint.main(lora_weights=str(adapter), output_dir=str(tmp_path / "merged"))
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert end_of_turn_id("qwen2", tokenizer) in GenerationConfig.from_pretrained(out).eos_token_id
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "头疼怎么办？"}], tokenize=False, add_generation_prompt=True
    )
    assert rendered.startswith("<|im_start|>system\n你是一名医生。<|im_end|>") and rendered.endswith(
        "<|im_start|>assistant\n"
    )
