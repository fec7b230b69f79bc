"""torchrun: 2 CPU processes (gloo) train the same adapter as 1 process at the same global batch."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CLI_RUN, free_port, tiny_train_cli

from utils.train import checkpointing

REPO_ROOT = Path(__file__).resolve().parent.parent


def torchrun_two() -> list[str]:
    """``torchrun --nproc_per_node 2 finetune.py`` on loopback, on a free port."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        "finetune.py",
    ]


def flags(tiny_base, train_file, out):
    return tiny_train_cli(
        base_model=tiny_base,
        data_path=train_file,
        output_dir=out,
        **CLI_RUN,
        max_steps=4,
        save_steps=4,
        lora_dropout=0,
        precision="fp32",
    )  # (no dropout: the two runs then do the same arithmetic, up to the gradient all-reduce; fp32: on a
    # CPU with AMX auto is bf16, whose rounding differs between one process's accumulated micro-batches and two
    # processes' all-reduce, and Adam turns that noise into lr-sized steps: 2.6e-3 apart in bf16, 4e-7 in fp32)


def losses(out):
    history = json.loads((out / "metrics.json").read_text())["log_history"]
    return [h["loss"] for h in history if "loss" in h]


@pytest.mark.slow
def test_torchrun_two_processes_matches_one(tiny_base, train_file, tmp_path):
    from safetensors.torch import load_file

    single, ddp = tmp_path / "single", tmp_path / "ddp"
    run = dict(capture_output=True, text=True, cwd=REPO_ROOT, timeout=900)
    one = subprocess.run([sys.executable, "finetune.py", *flags(tiny_base, train_file, single)], **run)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run(
        [
            *torchrun_two(),
            *flags(tiny_base, train_file, ddp),
        ],
        **run,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    assert "2 process(es) x micro batch 4 x 1 accumulation steps = 8 examples per step" in two.stderr
    assert json.loads((ddp / "run_config.json").read_text())["resolved"]["world_size"] == 2

    # one adapter, same files and tensors as the single-process one
    names = lambda d: sorted(p.name for p in d.iterdir() if p.name.startswith("adapter_"))  # noqa: E731
    assert names(ddp) == names(single) == ["adapter_config.json", "adapter_model.safetensors"]
    assert not (ddp / checkpointing.PARTIAL_DIR).exists()
    a, b = load_file(str(single / "adapter_model.safetensors")), load_file(str(ddp / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4
    assert checkpointing.checkpoint_problem(ddp / "checkpoint-4") is None
    assert (ddp / "checkpoint-4" / "rng_state_0.pth").is_file() and (ddp / "checkpoint-4" / "rng_state_1.pth").is_file()

    one_losses, two_losses = losses(single), losses(ddp)
    assert len(one_losses) == len(two_losses) == 4
    for x, y in zip(one_losses, two_losses):
        assert abs(x - y) <= 0.01 * abs(x), (one_losses, two_losses)


@pytest.mark.parametrize("path", sorted((REPO_ROOT / "configs" / "accelerate").glob("*.yaml")), ids=lambda p: p.stem)
def test_accelerate_configs_load(path):
    """Every shipped accelerate config parses with accelerate's own loader; ZeRO-3 gathers LoRA weights on save."""
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(path))
    assert config.num_machines == 1 and not config.use_cpu
    if path.stem == "deepspeed_zero3":
        assert config.deepspeed_config["zero_stage"] == 3 and config.deepspeed_config["zero3_save_16bit_model"] is True
    if path.stem == "fsdp":
        assert (
            config.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"
            and config.fsdp_config["fsdp_use_orig_params"]
        )


@pytest.mark.slow
def test_torchrun_with_default_batch_flags_trains_one_adapter(tiny_base, train_file, tmp_path):
    """The README's command with no batch flags: batch_size 128 over 2 processes, micro-batch auto (64)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "ddp"
    two = subprocess.run(
        [
            *torchrun_two(),
            "--base_model",
            tiny_base,
            "--data_path",
            str(train_file),
            "--output_dir",
            str(out),
            "--val_set_size",
            "16",
            "--cutoff_len",
            "64",
            "--max_steps",
            "2",
            "--save_steps",
            "2",
            "--wandb_project=",
        ],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=900,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    assert "2 process(es) x micro batch 64 x 1 accumulation steps = 128 examples per step" in two.stderr
    resolved = json.loads((out / "run_config.json").read_text())["resolved"]
    assert resolved["world_size"] == 2 and resolved["memory_plan"]["micro_batch_size"] == 64
    assert checkpointing.adapter_problem(out) is None
    assert [p.name for p in sorted(out.glob("adapter_model.*"))] == ["adapter_model.safetensors"]
    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_base), str(out))
