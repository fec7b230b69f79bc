"""Issue #20: what a real GPU run would hit and CPU runs cannot see, checked on CPU against the
installed libraries' code (CUDA mocked where needed: device count, capability, mem_get_info)."""

import json
import logging
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from conftest import tiny_train_args
from test_memory import CONFIGS, config_of, dry_run

from utils.model import loading, memory
from utils.train.callbacks import parameters_sharded

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(**overrides):
    from transformers import LlamaConfig

    settings = dict(
        hidden_size=64,
        intermediate_size=176,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        vocab_size=256,
    )
    return LlamaConfig(**{**settings, **overrides})


# ----------------------------------------------------------------------------------------------
# 1. 8-bit + checkpointing: the int8 inputs bitsandbytes keeps


def int8_kept_bytes(model, tokens: int) -> int:
    """Bytes held by ``ctx.tensors`` of every ``MatMul8bitLt`` node of the graph (storages once)."""
    ids = torch.randint(3, 250, (1, tokens))
    out = model(input_ids=ids, use_cache=False).logits
    kept, seen, stack = {}, set(), [out.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        for tensor in getattr(node, "tensors", None) or ():  # the ctx of a custom Function is its grad_fn
            if isinstance(tensor, torch.Tensor):
                kept[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        stack.extend(next_node for next_node, _ in node.next_functions)
    return sum(kept.values())


def test_int8_inputs_kept_by_bitsandbytes_are_planned(tmp_path, monkeypatch):
    """bitsandbytes trains through MatMul8bitLt on CUDA (MatMul8bitFp on CPU, autograd/_functions.py:401-404);
    its forward keeps each int8 layer's input in ``ctx.tensors`` (:186-188), which checkpointing cannot
    free. Run that CUDA autograd function on CPU (its kernels have CPU versions) and count what it keeps."""
    import bitsandbytes.autograd._functions as bnb_functions
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    config = tiny_config()
    LlamaForCausalLM(config).save_pretrained(tmp_path / "base")
    monkeypatch.setattr(bnb_functions, "MatMul8bitFp", bnb_functions.MatMul8bitLt)  # the CUDA path, on CPU
    model = loading.load_model(str(tmp_path / "base"), load_8bit=True, precision="bf16", device_map={"": "cpu"})
    model = loading.prepare_for_training(model, gradient_checkpointing=True)
    model = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    )
    model.train()
    tokens = 32
    measured = int8_kept_bytes(model, tokens) / tokens

    shape = memory.model_shape(config, ["q_proj", "v_proj"], lora_r=4)
    per_layer = memory.int8_kept_bytes_per_token(shape, dtype_bytes=2)
    assert measured == shape.layers * per_layer, (measured, per_layer)  # every layer, the first one included
    planned = memory.activation_bytes_per_token(shape, 2, 0.05, True, "8bit") - memory.activation_bytes_per_token(
        shape, 2, 0.05, True
    )
    assert planned == shape.layers * per_layer


@pytest.mark.slow
def test_dry_run_of_llama_7b_8bit_on_24gib_carries_the_int8_inputs():
    result = dry_run(
        "--base_model",
        str(CONFIGS / "llama-7b"),
        "--load_8bit",
        "--gpu_memory",
        "24GiB",
        "--gradient_checkpointing",
        "True",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    plan = json.loads(result.stdout.strip().splitlines()[-1])
    shape = memory.model_shape(config_of("llama-7b"))
    assert (
        plan["int8_kept_bytes_per_token"]
        == 32 * 2 * (2 * 4096 + 4096 + 11008)
        == 32 * memory.int8_kept_bytes_per_token(shape, 2)
    )
    assert (
        plan["int8_kept_bytes_per_token"] > 0.7 * plan["activation_bytes_per_token"]
    )  # most of it, with checkpointing
    assert plan["fits"] and plan["peak_gib"] <= 0.9 * 24


# ----------------------------------------------------------------------------------------------
# 2. 8-bit on CUDA: fp16 compute, the cast warning once


def test_8bit_on_cuda_computes_in_fp16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    assert loading.resolve_precision("auto", training=True, load_8bit=True) == "fp16"
    assert loading.resolve_precision("auto", training=True) == "bf16"


def test_bitsandbytes_cast_warning_shows_once(tmp_path, caplog):
    """bf16 asked explicitly with --load_8bit: MatMul8bitLt logs its fp16 cast at every call (:128-129)."""
    import bitsandbytes.autograd._functions as bnb_functions
    from transformers import LlamaForCausalLM

    bnb_logger = logging.getLogger("bitsandbytes.autograd._functions")
    for once in [f for f in bnb_logger.filters if isinstance(f, loading.FirstTimeOnly)]:
        bnb_logger.removeFilter(once)  # as in a fresh process
    LlamaForCausalLM(tiny_config()).save_pretrained(tmp_path / "base")
    model = loading.load_model(str(tmp_path / "base"), load_8bit=True, precision="bf16", device_map={"": "cpu"})
    layer = model.model.layers[0].self_attn.q_proj
    with caplog.at_level(logging.WARNING, logger="bitsandbytes.autograd._functions"):
        for _ in range(3):
            bnb_functions.MatMul8bitLt.apply(
                torch.randn(4, 64, dtype=torch.bfloat16), layer.weight, None, None, layer.state
            )
    assert len([r for r in caplog.records if "cast" in r.getMessage()]) == 1


# ----------------------------------------------------------------------------------------------
# 3. one process: one GPU, whatever is visible; 4. torchrun: set_device before any CUDA call


def test_single_process_training_uses_one_gpu(tmp_path):
    from utils.args import DataArgs, TrainingArgs
    from utils.train.arguments import training_arguments
    from utils.train.planning import Layout, Placement

    training = TrainingArgs(
        output_dir=str(tmp_path),
        num_epochs=1,
        max_steps=1,
        learning_rate=1e-4,
        warmup_ratio=0.1,
        logging_steps=1,
        eval_steps=1,
        save_steps=1,
        save_total_limit=1,
        wandb_run_name="",
        seed=1,
    )
    args = training_arguments(
        training,
        DataArgs(group_by_length=False),
        plan={"micro_batch_size": 4, "gradient_accumulation_steps": 2},
        placement=Placement(1, 0, 0, "cpu", "fp32", "sdpa", None),
        layout=Layout(packing=True, flatten=False, pack_len=256),
        has_val=False,
        use_wandb=False,
    )
    args.device  # noqa: B018 (what the Trainer does first)
    args._n_gpu = (
        4  # what _setup_devices sets on a box with 4 visible GPUs (training_args.py: torch.cuda.device_count())
    )
    assert args.n_gpu == 1 and args.train_batch_size == 4  # no nn.DataParallel, no micro-batch x 4
    assert args.logging_nan_inf_filter is False  # 8. no host sync on every micro-step's loss


def mock_cuda(monkeypatch, calls: list):
    state = {"device": 0}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: state["device"])
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: (calls.append(("set_device", d)), state.update(device=d)))
    monkeypatch.setattr(
        torch.cuda,
        "mem_get_info",
        lambda d=None: (calls.append(("mem_get_info", d)), (70 * memory.GiB, 80 * memory.GiB))[1],
    )


@pytest.mark.parametrize("world_size,local_rank", [(2, 1), (1, 0)])
def test_each_rank_binds_its_gpu_before_touching_cuda(world_size, local_rank, monkeypatch, capsys, caplog):
    import finetune

    for key, value in {"WORLD_SIZE": world_size, "RANK": local_rank, "LOCAL_RANK": local_rank}.items():
        monkeypatch.setenv(key, str(value))
    calls: list = []
    mock_cuda(monkeypatch, calls)
    with caplog.at_level(logging.INFO):
        finetune.train(base_model=str(CONFIGS / "llama-7b"), dry_run=True, wandb_project="", batch_size=8)
    assert calls[-1] == ("mem_get_info", local_rank)  # the plan reads this rank's own GPU
    if world_size > 1:
        assert calls[0] == ("set_device", local_rank)  # before the first memory query
    else:
        assert not any(c[0] == "set_device" for c in calls)
        assert any("cuda:0 only, the first of 4 visible GPUs" in r.getMessage() for r in caplog.records)
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["precision"] == "bf16"


# ----------------------------------------------------------------------------------------------
# 5. sharded engines load sharded; 6. FSDP and quantization; 7. ZeRO-3 however configured, FSDP wrap class


def test_sharded_engines_load_without_device_placement_and_plan_whole_quantized_weights():
    assert loading.device_map_for(world_size=4, local_rank=1, sharded=True) is None  # zero.Init / FSDP place the shards
    assert loading.device_map_for(world_size=4, local_rank=1) in ({"": 1}, {"": "cpu"})
    shape = memory.model_shape(config_of("llama-7b"))
    sharded = lambda q: memory.training_peak(
        shape, memory.TrainingSetup(q, "bf16", world_size=4, sharded=True), 1024, 100, True
    )  # noqa: E731
    whole = lambda q: memory.training_peak(shape, memory.TrainingSetup(q, "bf16"), 1024, 100, True)  # noqa: E731
    assert sharded("16bit")["weights"] == -(-whole("16bit")["weights"] // 4)
    assert sharded("4bit")["weights"] == whole("4bit")["weights"]  # bitsandbytes quantizes the whole base on each GPU


def test_finetune_builds_training_arguments_before_loading_the_model(monkeypatch, tiny_base, train_file, tmp_path):
    """transformers shards at load only once accelerate's state exists (is_deepspeed_zero3_enabled, is_fsdp_enabled)."""
    import finetune

    order = []
    real_args = finetune.training_arguments
    monkeypatch.setattr(finetune, "training_arguments", lambda *a, **k: (order.append("args"), real_args(*a, **k))[1])

    def load_then_stop(*a, **k):
        order.append("model")
        raise KeyboardInterrupt  # enough: the order is what is checked

    monkeypatch.setattr(finetune, "lora_model", load_then_stop)
    with pytest.raises(KeyboardInterrupt):
        finetune.train(
            **tiny_train_args(
                base_model=tiny_base,
                data_path=str(train_file),
                output_dir=str(tmp_path),
                val_set_size=0,
                micro_batch_size=4,
                batch_size=8,
                max_steps=1,
            )
        )
    assert order == ["args", "model"]


def test_fsdp_refuses_8bit_and_stores_nf4_as_floats(monkeypatch):
    from utils.cli import UserError

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    sharded = parameters_sharded(None)
    with pytest.raises(UserError, match="--load_8bit cannot be sharded"):
        loading.quantization_config(True, False, torch.bfloat16, sharded)
    assert loading.quantization_config(False, True, torch.bfloat16, sharded).bnb_4bit_quant_storage == torch.bfloat16
    assert loading.quantization_config(False, True, torch.bfloat16).bnb_4bit_quant_storage == torch.uint8


def test_zero3_from_a_deepspeed_json_is_detected(monkeypatch, tmp_path):
    for name in ("ACCELERATE_USE_FSDP", "ACCELERATE_DEEPSPEED_ZERO_STAGE"):
        monkeypatch.delenv(name, raising=False)
    ds = tmp_path / "ds.json"
    ds.write_text(json.dumps({"zero_optimization": {"stage": 3}, "train_micro_batch_size_per_gpu": "auto"}))
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")  # accelerate launch with deepspeed_config_file: ds.json
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", str(ds))
    assert "ZeRO-3" in parameters_sharded(None)
    assert "ZeRO-3" in parameters_sharded(SimpleNamespace(fsdp=[], deepspeed=None))


def test_fsdp_wraps_the_models_own_decoder_layer():
    """No layer class in fsdp.yaml: accelerate takes the model's _no_split_modules (Qwen2DecoderLayer for Qwen)."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import FullyShardedDataParallelPlugin
    from transformers import Qwen2Config, Qwen2ForCausalLM

    yaml = load_config_from_file(str(CONFIGS.parent.parent / "configs" / "accelerate" / "fsdp.yaml")).fsdp_config
    with torch.device("meta"):
        qwen = Qwen2ForCausalLM(
            Qwen2Config(
                hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2
            )
        )
    plugin = FullyShardedDataParallelPlugin(
        auto_wrap_policy="transformer_based_wrap",
        transformer_cls_names_to_wrap=yaml.get("fsdp_transformer_layer_cls_to_wrap"),
    )
    plugin.set_auto_wrap_policy(qwen)
    assert plugin.transformer_cls_names_to_wrap == ["Qwen2DecoderLayer"]


# ----------------------------------------------------------------------------------------------
# 8. host syncs: logits picked by integer positions (a boolean mask needs its count on the host)


def test_packed_batch_keeps_logits_by_integer_positions():
    from utils.train.batching import PackingCollator

    examples = [
        {"input_ids": list(range(3, 3 + n)), "labels": [-100] * (n // 2) + list(range(n - n // 2))}
        for n in (9, 14, 5, 20, 7)
    ]
    collator = PackingCollator(0, pack_len=24)
    batch = collator(examples)
    keep = batch["logits_to_keep"]
    assert keep.dtype == torch.long and keep.dim() == 2 and keep.shape[0] == batch["input_ids"].shape[0]
    targets = batch["shift_labels"]
    assert targets.shape == keep.shape and int((targets != -100).sum()) == collator.stats["targets"]
    assert keep.shape.numel() == collator.logit_tokens_of(
        [len(e["input_ids"]) for e in examples], [n - n // 2 for n in (9, 14, 5, 20, 7)]
    )


# ----------------------------------------------------------------------------------------------
# 9. user errors one line, everything else a traceback; CPU precision


def test_only_user_errors_are_shortened(monkeypatch, capsys):
    from utils import cli

    monkeypatch.setattr("sys.argv", ["prog"])
    monkeypatch.delenv("HUATUO_DEBUG", raising=False)

    def bad_flag():
        raise cli.UserError("--flag must be positive")

    def real_failure():
        raise ValueError("cuBLAS returned an unexpected shape")  # a library's ValueError: a bug or a GPU problem

    with pytest.raises(SystemExit) as stop:
        cli.run(bad_flag)
    assert stop.value.code == 2 and capsys.readouterr().err.strip() == "error: --flag must be positive"
    with pytest.raises(ValueError, match="cuBLAS"):
        cli.run(real_failure)


@pytest.mark.parametrize(
    "avx512_bf16,amx,expected", [(True, False, "fp32"), (True, True, "bf16"), (False, False, "fp32")]
)
def test_cpu_trains_in_bf16_only_where_it_is_faster(monkeypatch, avx512_bf16, amx, expected):
    """This machine (AVX512-BF16, no AMX): 45 s in bf16 vs 38 s in fp32 for the same run."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    assert loading.resolve_precision("auto", training=True) == expected


@pytest.mark.slow
def test_gpu_check_smoke_mode_writes_its_json_and_table(tmp_path):
    """`DEVICE=cpu bash bench/gpu_check.sh` (issue #20): the one-call GPU check runs end to end on a CPU and writes
    gpu_check.json and gpu_check.md to $OUT, so the day a GPU is lent the prepared call is known to work."""
    env = {**os.environ, "DEVICE": "cpu", "OUT": str(tmp_path), "PYTHON": sys.executable}
    result = subprocess.run(
        ["bash", os.path.join(REPO, "bench", "gpu_check.sh")], env=env, capture_output=True, text=True, timeout=1200
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text(encoding="utf-8"))
    assert report and "|" in (tmp_path / "gpu_check.md").read_text(encoding="utf-8")
