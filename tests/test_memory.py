"""The memory planner against a real measurement, the dry run, auto micro-batch, precision by
device capability, sharded-parameter detection, out-of-memory retries (mocked) in training and generation."""

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import tiny_train_args

from utils.model import loading, memory
from utils.train.callbacks import parameters_sharded

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIGS = REPO_ROOT / "bench" / "configs"  # config-only folders made from the published config.json files


def config_of(name: str):
    return memory.load_config(str(CONFIGS / name))


# ----------------------------------------------------------------------------------------------
# activations: the formula against saved-tensor bytes of a real decoder layer


def measured_saved_bytes_per_token(config, targets, tokens=256, dropout=0.05) -> float:
    """Bytes autograd keeps for backward in one real decoder layer (bf16, SDPA, LoRA), per token.

    Parameters and the layer's input are left out (the planner counts them elsewhere); storages
    shared by several saved tensors count once."""
    import importlib

    from peft import LoraConfig, get_peft_model

    module = importlib.import_module(f"transformers.models.{config.model_type}.modeling_{config.model_type}")
    decoder_layer = next(getattr(module, n) for n in dir(module) if n.endswith("DecoderLayer"))
    rotary = next(getattr(module, n) for n in dir(module) if n.endswith("RotaryEmbedding"))
    config = config.__class__.from_dict(config.to_dict())
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    layer = decoder_layer(config, 0).to(torch.bfloat16)

    class OneLayer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = layer

        def forward(self, hidden, position_embeddings):
            out = self.layer(hidden, position_embeddings=position_embeddings, attention_mask=None, position_ids=None)
            return out[0] if isinstance(out, tuple) else out

    model = OneLayer()
    model.requires_grad_(False)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=dropout, target_modules=targets))
    hidden = torch.randn(1, tokens, config.hidden_size, dtype=torch.bfloat16, requires_grad=True)
    cos, sin = rotary(config)(hidden, torch.arange(tokens)[None])
    excluded = {p.untyped_storage().data_ptr() for p in model.parameters()} | {hidden.untyped_storage().data_ptr()}
    saved: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in excluded:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(hidden, (cos.to(torch.bfloat16), sin.to(torch.bfloat16)))
    return sum(saved.values()) / tokens


@pytest.mark.parametrize("name,targets", [("llama-7b", ["q_proj", "v_proj"]), ("qwen2.5-7b", ["q_proj", "v_proj"])])
def test_activation_bytes_match_a_7b_layer_measured_on_cpu(name, targets):
    config = config_of(name)
    measured = measured_saved_bytes_per_token(config, targets)
    shape = memory.model_shape(config, targets, lora_r=8)
    planned = memory.layer_activation_bytes(shape, dtype_bytes=2, lora_dropout=0.05)
    assert abs(planned - measured) <= 0.2 * measured, (planned, measured)
    if name == "llama-7b":  # 32 layers of ~48 x hidden bytes: ~6 MB per token without checkpointing
        assert 5.5e6 < memory.activation_bytes_per_token(shape, 2, 0.05, False) < 7e6


def test_model_shape_counts_published_parameters():
    llama = memory.model_shape(config_of("llama-7b"), "auto")
    assert 6.7e9 < llama.params < 6.8e9 and llama.lora_targets == ("q_proj", "v_proj")
    assert llama.lora_params == 32 * 2 * 8 * (4096 + 4096)  # 4.19 M, HuaTuo's adapter
    llama3, qwen = memory.model_shape(config_of("llama-3-8b")), memory.model_shape(config_of("qwen2.5-7b"))
    assert 8.0e9 < llama3.params < 8.1e9 and llama3.kv_dim == 1024
    assert 7.6e9 < qwen.params < 7.7e9 and qwen.kv_dim == 512
    # 512 KiB of KV cache per token on LLaMA-7B (no GQA), 128 KiB on Llama-3-8B
    assert memory.kv_cache_bytes_per_token(config_of("llama-7b")) == 512 * 1024
    assert memory.kv_cache_bytes_per_token(config_of("llama-3-8b")) == 128 * 1024
    # NF4 weights are about a quarter of 16-bit ones; the output head and embeddings stay 16-bit
    assert 0.25 < memory.weight_bytes(llama, "4bit", 2) / memory.weight_bytes(llama, "16bit", 2) < 0.3


def test_parse_memory():
    assert memory.parse_memory("24GiB") == 24 * 2**30 and memory.parse_memory("80GB") == 80 * 10**9
    assert memory.parse_memory("40") == 40 * 2**30 and memory.parse_memory("16000MiB") == 16000 * 2**20
    for bad in ("abc", "", "-3GiB", "24 parsecs"):
        with pytest.raises(ValueError, match="--gpu_memory"):
            memory.parse_memory(bad)


# ----------------------------------------------------------------------------------------------
# the micro-batch choice


def synthetic_tokens(per_example=200):
    return lambda m: (m * per_example, m * per_example // 3)


def test_auto_micro_batch_is_the_largest_divisor_that_fits_and_checkpointing_when_needed():
    shape = memory.model_shape(config_of("llama-7b"))
    setup = memory.TrainingSetup("16bit", "bf16")
    plan = memory.plan_micro_batch(shape, setup, 128, synthetic_tokens(), 80 * memory.GiB)
    assert (
        plan.fits
        and 128 % plan.micro_batch_size == 0
        and plan.micro_batch_size * plan.gradient_accumulation_steps == 128
    )
    assert not plan.gradient_checkpointing  # 80 GiB: a micro-batch of >= 4096 tokens fits without it
    bigger = memory.training_peak(shape, setup, *synthetic_tokens()(plan.micro_batch_size * 2), False)["peak"]
    assert not memory.fits(bigger, 80 * memory.GiB)  # the next divisor would not have fitted

    small = memory.plan_micro_batch(shape, setup, 128, synthetic_tokens(), 24 * memory.GiB)
    assert small.fits and small.gradient_checkpointing  # 24 GiB: only checkpointing makes a useful micro-batch fit
    assert "without it only" in small.reason and small.peak_gib <= 0.9 * 24

    fixed = memory.plan_micro_batch(
        shape, setup, 128, synthetic_tokens(), 24 * memory.GiB, micro_batch_size=2, gradient_checkpointing=False
    )
    assert (fixed.micro_batch_size, fixed.gradient_checkpointing, fixed.gradient_accumulation_steps) == (2, False, 64)

    nothing = memory.plan_micro_batch(shape, setup, 128, synthetic_tokens(), 8 * memory.GiB)
    assert not nothing.fits and "does not fit" in nothing.reason


def test_generation_batch_is_capped_by_the_kv_cache():
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config_of("llama-7b"), dtype=torch.bfloat16)
    # 4 beams x 400 tokens x 512 KiB = 800 MiB per question; 10 GiB of free memory holds 11 of them (at 90%)
    assert memory.generation_batch_size(model, 16, num_beams=4, max_tokens=400, budget=10 * memory.GiB) == 11
    assert memory.generation_batch_size(model, 8, num_beams=4, max_tokens=400, budget=10 * memory.GiB) == 8
    assert memory.generation_batch_size(model, 16, num_beams=4, max_tokens=400, budget=100 * 2**20) == 1


# ----------------------------------------------------------------------------------------------
# the dry run (a CPU machine, a folder with only config.json)


def dry_run(*flags):
    return subprocess.run(
        [sys.executable, "finetune.py", "--dry_run", "--wandb_project=", *flags],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=600,
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "name,gib,quant", [("llama-7b", 24, "--load_4bit"), ("llama-3-8b", 80, ""), ("qwen2.5-7b", 40, "--load_8bit")]
)
def test_dry_run_plans_a_config_only_folder(name, gib, quant, tmp_path):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text((CONFIGS / name / "config.json").read_text())
    result = dry_run("--base_model", str(folder), "--gpu_memory", f"{gib}GiB", *([quant] if quant else []))
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    plan = json.loads(lines[-1])
    for key in (
        "peak_gib",
        "micro_batch_size",
        "tokens_per_micro_batch",
        "gradient_checkpointing",
        "activation_bytes_per_token",
    ):
        assert key in plan
    assert plan["fits"] and plan["peak_gib"] <= 0.9 * gib and plan["budget_gib"] == gib
    assert 128 % plan["micro_batch_size"] == 0 and plan["micro_batch_size"] * plan["gradient_accumulation_steps"] == 128
    assert plan["quantization"] == {"--load_4bit": "4bit", "--load_8bit": "8bit", "": "16bit"}[quant]
    table = "\n".join(lines[:-1])
    assert (
        "estimated peak per GPU" in table and "estimated from the text" in table and "gradient checkpointing" in table
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "flags,message",
    [
        (["--gpu_memory", "abc"], "--gpu_memory 'abc': expected a size"),
        (["--base_model", "{empty}"], "has no config.json"),
    ],
)
def test_dry_run_bad_values_get_one_line(flags, message, tmp_path):
    flags = [f.replace("{empty}", str(tmp_path)) for f in flags]
    result = dry_run(*flags)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert message in result.stderr.strip().splitlines()[-1]


# ----------------------------------------------------------------------------------------------
# devices, precision, attention, sharding


@pytest.mark.parametrize(
    "capability,expected", [((7, 0), "fp16"), ((7, 5), "fp16"), ((8, 0), "bf16"), ((9, 0), "bf16")]
)
def test_auto_precision_follows_compute_capability(monkeypatch, capability, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # True under emulation on a V100/T4
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: capability)
    assert loading.resolve_precision("auto", training=True) == expected


def test_budget_is_free_memory_alone_and_the_same_on_every_rank(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(
        torch.cuda, "mem_get_info", lambda *a: (30 * memory.GiB, 80 * memory.GiB)
    )  # another job holds 50 GiB
    assert memory.memory_budget("", world_size=1)[0] == 30 * memory.GiB
    assert memory.memory_budget("", world_size=4)[0] == 80 * memory.GiB - memory.GiB // 2  # what every rank reads alike
    assert memory.memory_budget("24GiB", world_size=4)[0] == 24 * memory.GiB


def test_single_process_loads_on_the_current_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    assert loading.device_map_for(world_size=1, local_rank=0) == {"": 3}  # never "auto" (layers spread or offloaded)
    assert loading.device_map_for(world_size=4, local_rank=2) == {"": 2}


def test_sharded_parameters_are_detected(monkeypatch):
    for name in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED", "ACCELERATE_DEEPSPEED_ZERO_STAGE"):
        monkeypatch.delenv(name, raising=False)
    assert parameters_sharded(None) is None
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")
    assert parameters_sharded(None) is None  # ZeRO-2 keeps whole parameters on every rank
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
    assert "ZeRO-3" in parameters_sharded(None)
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED")
    monkeypatch.delenv("ACCELERATE_DEEPSPEED_ZERO_STAGE")
    assert "ZeRO-3" in parameters_sharded(SimpleNamespace(fsdp=[], deepspeed={"zero_optimization": {"stage": 3}}))
    assert parameters_sharded(SimpleNamespace(fsdp=[], deepspeed={"zero_optimization": {"stage": 2}})) is None
    assert "FSDP" in parameters_sharded(SimpleNamespace(fsdp=["full_shard"], deepspeed=None))
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    assert "FSDP" in parameters_sharded(None)


def test_packing_refuses_what_would_let_examples_see_each_other(tiny_base):
    from transformers import BloomConfig, BloomForCausalLM, LlamaForCausalLM

    assert loading.packing_problem(LlamaForCausalLM, "sdpa", 256) is None
    assert loading.packing_problem(LlamaForCausalLM, "flash_attention_2", 0) is None  # one flattened row + cu_seq_lens
    assert "plain causal" in loading.packing_problem(LlamaForCausalLM, "flash_attention_2", 256)
    assert "no position ids" in loading.packing_problem(
        BloomForCausalLM, "auto", 256
    )  # ALiBi: a causal mask over the row
    remote = type("RemoteCodeModel", (torch.nn.Module,), {"__module__": "transformers_modules.someone.modeling_x"})
    assert "not one of transformers' own" in loading.packing_problem(remote, "sdpa", 256)
    assert "not one of transformers' own" in loading.packing_problem(None, "sdpa", 256)  # a config outside the mapping
    llama, bloom = memory.load_config(tiny_base), BloomConfig()
    assert (
        loading.resolve_packing("auto", llama, "auto", 0) is True
        and loading.resolve_packing("auto", bloom, "auto", 0) is False
    )
    with pytest.raises(ValueError, match="--packing False"):
        loading.resolve_packing(True, bloom, "auto", 0)
    with pytest.raises(ValueError, match="flash packs one flattened row"):
        loading.resolve_packing(True, llama, "flash_attention_2", 256)
    assert loading.resolve_packing(False, bloom, "auto", 0) is False
    with pytest.raises(ValueError, match="flash-attn"):
        loading.resolve_attention("flash_attention_2")  # not installed on a CPU machine
    with pytest.raises(ValueError, match="one of auto"):
        loading.resolve_attention("flex")


# ----------------------------------------------------------------------------------------------
# out of memory: training step and generation (mocked)


@pytest.mark.slow
def test_training_out_of_memory_is_retried_with_the_same_gradient(tiny_base, train_file, tmp_path, monkeypatch, caplog):
    """A CUDA out-of-memory in the middle of a backward (some gradients already added) is survived:
    the micro-batch is redone in halves and the adapter equals a run that never hit it."""
    import accelerate
    from safetensors.torch import load_file

    import finetune

    def run(out):
        finetune.train(
            **tiny_train_args(
                base_model=tiny_base,
                data_path=str(train_file),
                output_dir=str(out),
                val_set_size=0,
                save_steps=100,
                precision="fp32",
                lora_dropout=0.0,
                learning_rate=3e-3,
                cutoff_len=96,
            )
        )
        return load_file(str(out / "adapter_model.safetensors"))

    clean = run(tmp_path / "clean")
    real_backward, calls = accelerate.Accelerator.backward, {"n": 0}

    def backward_then_oom(self, loss, **kwargs):
        real_backward(self, loss, **kwargs)  # the gradients of this micro-batch are already added...
        calls["n"] += 1
        if calls["n"] == 3:  # ...when the first micro-batch of step 2 "runs out of memory"
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (mocked)")

    monkeypatch.setattr(accelerate.Accelerator, "backward", backward_then_oom)
    with caplog.at_level("WARNING"):
        retried = run(tmp_path / "oom")
    assert calls["n"] > 6  # the failed micro-batch and every later one ran in halves
    assert clean.keys() == retried.keys()
    assert max((clean[k] - retried[k]).abs().max().item() for k in clean) <= 1e-6
    assert any("out of memory at step 2" in r.getMessage() and "cut in 2" in r.getMessage() for r in caplog.records)
    events = json.loads((tmp_path / "oom" / "metrics.json").read_text())["out_of_memory_retries"]
    assert (
        len(events) == 1
        and events[0]["step"] == 2
        and events[0]["splits"] == 2
        and 2 <= events[0]["examples_per_piece"] <= 5
    )


def test_generation_halves_the_batch_on_out_of_memory(tiny_base, monkeypatch):
    from utils.model import generation

    tokenizer, model, _ = loading.load_tokenizer_and_model(tiny_base, use_lora=False)
    config = generation.make_generation_config(model, tokenizer, num_beams=1, max_new_tokens=8)
    prompts = [f"问题{i}：头痛怎么办？" * (1 + i % 3) for i in range(10)]
    expected = generation.generate_answers(model, tokenizer, prompts, config, batch_size=1, progress=False)
    real, sizes = generation.generate_batch, []

    def limited(model, tokenizer, batch, config):
        sizes.append(len(batch))
        if len(batch) > 3:
            raise torch.OutOfMemoryError("CUDA out of memory (mocked)")
        return real(model, tokenizer, batch, config)

    monkeypatch.setattr(generation, "generate_batch", limited)
    assert generation.generate_answers(model, tokenizer, prompts, config, batch_size=8, progress=False) == expected
    assert sizes[:3] == [8, 4, 2] and max(sizes[3:]) <= 2


@pytest.mark.parametrize("quant", ["8bit", "4bit"])
def test_quantized_training_keeps_only_lora_in_fp32(tiny_base, quant):
    """No fp32 copies of embeddings, norms or the head (peft's prepare_model_for_kbit_training made
    them), non-reentrant checkpointing on, and bitsandbytes sees no fp32 input to cast."""
    import warnings

    from peft import LoraConfig, get_peft_model

    model = loading.load_model(tiny_base, load_8bit=quant == "8bit", load_4bit=quant == "4bit", precision="bf16")
    model = loading.prepare_for_training(model, gradient_checkpointing=True)
    model = get_peft_model(
        model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    )
    fp32 = [n for n, p in model.named_parameters() if p.dtype == torch.float32]
    assert fp32 and all("lora_" in name for name in fp32), fp32  # only the trainable LoRA weights
    assert all(p.requires_grad == ("lora_" in n) for n, p in model.named_parameters())
    base = model.get_base_model()
    assert base.is_activation_checkpointing and base.model.layers[0].gradient_checkpointing
    model.train()
    ids = torch.randint(3, 2000, (2, 24))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        loss.backward()
    assert torch.isfinite(loss)
    assert not [w for w in caught if "cast" in str(w.message).lower() and "float32" in str(w.message)], [
        str(w.message) for w in caught
    ]
    assert all(p.grad is not None for n, p in model.named_parameters() if "lora_B" in n)
