"""Presets (configs/presets/*.yaml, ``--config``) and finetune.py's flags as typed groups: every preset
names known flags and dry-runs, a command-line flag wins over a preset, HuaTuo-era spellings parse,
and scripts/finetune.sh passes CONFIG and only the variables a user set."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import finetune
from utils.args import ALIASES, PRESETS_DIR, fields_of, load_preset, parse
from utils.cli import UserError

REPO_ROOT = Path(__file__).resolve().parent.parent
PRESETS = sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))
# the 7B presets dry-run on config-only folders (the hub is unreachable in tests); tiny-cpu on its own base
CONFIG_ONLY = {
    "huatuo-llama-7b-8bit": REPO_ROOT / "bench" / "configs" / "llama-7b",
    "qwen2.5-7b-instruct-qlora-24gb": REPO_ROOT / "bench" / "configs" / "qwen2.5-7b",
}
# finetune.py's flags since HuaTuo (run_config.json records them under these names; adapters read them)
FLAG_NAMES = {
    *"base_model data_path val_data_path output_dir batch_size micro_batch_size num_epochs learning_rate".split(),
    *"warmup_ratio cutoff_len val_set_size lora_r lora_alpha lora_dropout lora_target_modules".split(),
    *"train_on_inputs group_by_length packing pack_len prompt_template_name system_prompt wandb_project".split(),
    *"wandb_run_name wandb_watch wandb_log_model resume_from_checkpoint on_bad_record load_8bit load_4bit".split(),
    *"precision attn_implementation gradient_checkpointing gpu_memory dry_run trust_remote_code max_steps".split(),
    *"seed logging_steps eval_steps save_steps save_total_limit sample_questions sample_max_new_tokens".split(),
}


def test_the_groups_hold_exactly_finetunes_flags():
    names = {ALIASES.get(n, n) for n in FLAG_NAMES}
    assert len(FLAG_NAMES) == 43 and set(fields_of(finetune.GROUPS)) == names


def test_the_three_presets_are_shipped():
    assert {"huatuo-llama-7b-8bit", "qwen2.5-7b-instruct-qlora-24gb", "tiny-cpu"} <= set(PRESETS)


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_key_is_a_flag_and_its_value_has_the_flags_type(name):
    preset = load_preset(name)
    known = fields_of(finetune.GROUPS)
    assert preset and all(ALIASES.get(key, key) in known for key in preset), set(preset) - set(known)
    parse(finetune.GROUPS, {"config": name})  # values checked against the fields' types


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_dry_runs(name, capsys):
    flags = {"config": name, "dry_run": True}
    if name in CONFIG_ONLY:
        flags["base_model"] = str(CONFIG_ONLY[name])  # the command line wins over the preset's hub id
    finetune.train(**flags)
    plan = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    preset = load_preset(name)
    assert plan["micro_batch_size"] >= 1 and plan["peak_gib"] > 0
    assert plan["gradient_accumulation_steps"] * plan["micro_batch_size"] == preset["batch_size"]
    expected = "8bit" if preset.get("load_8bit") else "4bit" if preset.get("load_4bit") else "16bit"
    assert plan["quantization"] == expected
    if "gpu_memory" in preset:
        assert plan["budget_gib"] == 24.0 and plan["fits"]


def test_a_command_line_flag_wins_over_the_preset():
    model, lora, data, prompt, training = parse(finetune.GROUPS, {"config": "tiny-cpu", "batch_size": 32})
    assert training.batch_size == 32  # given
    assert training.learning_rate == 3e-3 and data.val_set_size == 100  # the preset's
    assert training.seed == 42 and prompt.prompt_template == "med_template"  # neither: the defaults
    _, _, _, prompt, _ = parse(
        finetune.GROUPS, {"config": "qwen2.5-7b-instruct-qlora-24gb", "prompt_template_name": "x"}
    )
    assert prompt.prompt_template == "x"  # HuaTuo's spelling on the command line wins too


@pytest.mark.slow
def test_an_unknown_key_in_a_preset_is_one_line_naming_the_file(tmp_path):
    preset = tmp_path / "mine.yaml"
    preset.write_text("lora_r: 8\nlora_rank: 16\n")
    with pytest.raises(UserError, match=f"unknown flag --lora_rank in {preset}.*did you mean --lora_r"):
        parse(finetune.GROUPS, {"config": str(preset)})
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "finetune.py"), "--config", str(preset), "--dry_run"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    error_lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2 and len(error_lines) == 1 and str(preset) in error_lines[0], done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "argv,expected",
    [
        (["--micro_batch_size", "auto"], {"micro_batch_size": "auto"}),
        (["--micro_batch_size", "8"], {"micro_batch_size": 8}),
        (["--packing", "False"], {"packing": False}),
        (["--packing", "auto"], {"packing": "auto"}),
        (["--gradient_checkpointing", "auto"], {"gradient_checkpointing": "auto"}),
        (["--gradient_checkpointing", "True"], {"gradient_checkpointing": True}),
        (["--lora_target_modules", "[q_proj,v_proj]"], {"lora_target_modules": ["q_proj", "v_proj"]}),
        (["--lora_target_modules", "q_proj,v_proj"], {"lora_target_modules": ["q_proj", "v_proj"]}),
        (["--lora_target_modules", "all-linear"], {"lora_target_modules": "all-linear"}),
        (["--resume_from_checkpoint", "auto"], {"resume_from_checkpoint": "auto"}),
        (["--wandb_project", ""], {"wandb_project": ""}),
        (["--wandb_project="], {"wandb_project": ""}),
        (["--load_8bit"], {"load_8bit": True}),
        (["--prompt_template_name", "chat"], {"prompt_template": "chat"}),
    ],
)
def test_fire_era_spellings_parse_to_the_flags_types(argv, expected):
    import dataclasses

    import fire

    groups = fire.Fire(lambda **flags: parse(finetune.GROUPS, flags), command=argv)
    values = {k: v for g in groups for k, v in dataclasses.asdict(g).items()}
    assert {k: values[k] for k in expected} == expected
    if "lora_target_modules" in expected:
        targets = groups[1].targets()
        assert targets == (["all-linear"] if expected["lora_target_modules"] == "all-linear" else ["q_proj", "v_proj"])


@pytest.mark.parametrize(
    "flags,message",
    [
        ({"micro_batch_size": "many"}, "--micro_batch_size 'many'"),
        ({"packing": "sometimes"}, "--packing 'sometimes'"),
        ({"batch_size": "big"}, "--batch_size: expected int"),
    ],
)
def test_a_wrong_value_is_a_user_error_naming_the_flag(flags, message):
    with pytest.raises(UserError, match=message):
        parse(finetune.GROUPS, flags)


# ----------------------------------------------------------------------------------------------
# scripts/finetune.sh and CONFIG=


def script_argv(tmp_path, **env) -> list[str]:
    """The arguments scripts/finetune.sh hands to Python (PYTHON is a stub that prints them)."""
    stub = tmp_path / "python"
    stub.write_text("#!/usr/bin/env bash\nprintf '%s\\n' \"$@\"\n")
    stub.chmod(0o755)
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    done = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "finetune.sh"), "--logging_steps", "1"],
        env={**keep, "PYTHON": str(stub), **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.splitlines()[1:]  # after finetune.py's path


@pytest.mark.slow
def test_finetune_sh_with_config_passes_only_the_variables_set(tmp_path):
    argv = script_argv(tmp_path, CONFIG="tiny-cpu", BATCH_SIZE="32", WANDB_PROJECT="")
    assert argv == ["--config", "tiny-cpu", "--batch_size", "32", "--wandb_project", "", "--logging_steps", "1"]


@pytest.mark.slow
def test_finetune_sh_without_config_keeps_its_twelve_variables(tmp_path):
    argv = script_argv(tmp_path, EXP_TAG="e7", LEARNING_RATE="1e-4")
    flags = dict(zip(argv[0:-2:2], argv[1:-2:2]))
    assert flags == {
        "--base_model": "",
        "--data_path": str(REPO_ROOT / "data" / "llama_data.json"),
        "--output_dir": "./lora-llama-med-e7",
        "--prompt_template_name": "med_template",
        "--micro_batch_size": "auto",
        "--batch_size": "128",
        "--num_epochs": "10",
        "--learning_rate": "1e-4",
        "--val_set_size": "500",
        "--wandb_project": "llama_med",
        "--wandb_run_name": "e7",
    }
    assert argv[-2:] == ["--logging_steps", "1"]


@pytest.mark.slow
def test_finetune_sh_dry_runs_the_tiny_preset(tiny_base, tmp_path):
    done = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "finetune.sh"), "--dry_run"],
        env={**os.environ, "CONFIG": "tiny-cpu", "BATCH_SIZE": "128", "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    plan = json.loads(done.stdout.strip().splitlines()[-1])
    assert plan["micro_batch_size"] * plan["gradient_accumulation_steps"] == 128  # BATCH_SIZE over the preset's 64
