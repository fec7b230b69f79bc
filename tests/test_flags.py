"""Flags are defined once. Every script Fire runs declares its flags as typed groups (``GROUPS``): the
shared ones of utils/args.py, and one of its own for what only it has. A shared flag is never declared
again under its own name or another spelling, a default differs from the shared one only with a reason,
HuaTuo's two spellings of the template flag both work, and ``--help`` explains every flag."""

import ast
import dataclasses
import importlib
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

from utils import args as shared_args
from utils.args import help_text, parse

# the groups every script that loads or asks a model shares (finetune.py's LoRA, data and training groups are
# its own: another script's --batch_size or --output_dir is another thing)
SHARED_GROUPS = (shared_args.ModelArgs, shared_args.AdapterArgs, shared_args.PromptArgs, shared_args.GenerationArgs)
SHARED_FIELDS = {f.name: (g, f) for g in SHARED_GROUPS for f in dataclasses.fields(g)}

# Deliberate differences from a shared default, each with its reason. Anything else that differs fails.
DIFFERENT = {
    ("generate", "num_beams"): (1, "the demo streams, and beam search cannot"),
    ("bench/infer_speed", "num_beams"): (1, "the benchmark times greedy decoding"),
    ("bench/infer_speed", "max_new_tokens"): (64, "short answers keep the benchmark's runs short"),
    ("bench/infer_speed", "lora_weights"): ("", "the base alone unless an adapter is given"),
    ("finetune", "prompt_template"): ("med_template", "training has no adapter to read the template from"),
    ("infer_literature", "lora_weights"): ("./lora-llama-literature", "HuaTuo's literature adapter folder"),
    ("score", "lora_weights"): ("", "scoring a results file needs no model unless asked for"),
    ("serve_api", "lora_weights"): ("", "'' = $LORA_WEIGHTS, as HuaTuo's export read it"),
    ("export_hf_checkpoint", "lora_weights"): ("", "'' = $LORA_WEIGHTS, as HuaTuo's export read it"),
}

# The same name for a wider idea, with its reason: not the shared flag, and not a drift of it.
OWN_MEANING = {
    ("benchmark", "lora_weights"): "several adapters, name=folder each, every one a column of the table",
    ("build_dataset", "temperature"): "the remote LLM's sampling temperature (openai backend), not our generation",
    ("bench/make_random_llama", "dtype"): "the type the random weights are saved in, not a compute precision",
    (
        "bench/train_speed",
        "base_model",
    ): "one base for both recipes, loaded by each in its own way (no quantization flags)",
}

# Other spellings of the shared ideas: a script declaring one of these has drifted.
VARIANTS = set(
    """
    model_path model_name base base_model_path adapter adapter_dir lora_dir lora_path template template_name
    prompt_template_file load_in_8bit load_in_4bit int8 dtype fp16 bf16 torch_dtype max_tokens max_length
    beams n_beams temp sample
    """.split()
)


def scripts() -> list[tuple[str, object]]:
    """(name, module) of every script (root and bench/) whose ``__main__`` block calls utils.cli.run."""
    found = []
    for path in sorted([*REPO_ROOT.glob("*.py"), *(REPO_ROOT / "bench").glob("*.py")]):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        calls_run = any(
            isinstance(node, ast.Call) and getattr(node.func, "id", "") == "run"
            for block in tree.body
            if isinstance(block, ast.If) and "__main__" in ast.unparse(block.test)
            for node in ast.walk(block)
        )
        if calls_run:
            name = str(path.relative_to(REPO_ROOT).with_suffix(""))
            found.append((name, importlib.import_module(name.replace("/", "."))))
    return found


SCRIPTS = scripts()
IDS = [name for name, _ in SCRIPTS]


def test_the_scripts_are_found():
    names = set(IDS)
    assert {"finetune", "infer", "infer_literature", "generate", "export_hf_checkpoint", "score"} <= names
    assert {"serve_api", "benchmark", "build_dataset", "judge", "compare"} <= names


@pytest.mark.parametrize("name, module", SCRIPTS, ids=IDS)
def test_every_script_declares_its_flags_as_groups_with_help(name, module):
    groups = getattr(module, "GROUPS", None)
    assert groups and all(dataclasses.is_dataclass(g) for g in groups), f"{name}: no GROUPS of flag dataclasses"
    text = help_text(groups, module.__doc__ or "")
    for group in groups:
        for field in dataclasses.fields(group):
            assert field.metadata.get("help"), f"{name} --{field.name}: no help line"
            assert f"--{field.name} (" in text


@pytest.mark.parametrize("name, module", SCRIPTS, ids=IDS)
def test_a_shared_flag_comes_from_its_shared_group(name, module):
    for group in module.GROUPS:
        drifted = sorted(
            VARIANTS & {f.name for f in dataclasses.fields(group)} - {n for s, n in OWN_MEANING if s == name}
        )
        assert not drifted, f"{name}.{group.__name__}: {drifted} spell a shared flag differently"
        for field in dataclasses.fields(group):
            if field.name not in SHARED_FIELDS or (name, field.name) in OWN_MEANING:
                continue
            shared_group, shared_field = SHARED_FIELDS[field.name]
            assert issubclass(group, shared_group), (
                f"{name}: --{field.name} is declared again in {group.__name__}; use (or subclass) "
                f"{shared_group.__name__}"
            )
            assert field.type == shared_field.type, f"{name} --{field.name}: {field.type}, shared {shared_field.type}"
            expected, _why = DIFFERENT.get((name, field.name), (shared_field.default, ""))
            assert field.default == expected, (
                f"{name} --{field.name} defaults to {field.default!r}, shared {expected!r}"
            )


def test_every_listed_difference_is_real():
    """A reason kept for a difference that is gone would hide the next drift."""
    modules = dict(SCRIPTS)
    for (name, flag_name), (value, _why) in DIFFERENT.items():
        defaults = {f.name: f.default for g in modules[name].GROUPS for f in dataclasses.fields(g)}
        assert defaults[flag_name] == value != SHARED_FIELDS[flag_name][1].default
    for name, flag_name in OWN_MEANING:
        assert flag_name in {f.name for g in modules[name].GROUPS for f in dataclasses.fields(g)}


WITH_TEMPLATE = [
    (name, module)
    for name, module in SCRIPTS
    if any(f.name == "prompt_template" for g in module.GROUPS for f in dataclasses.fields(g))
]


@pytest.mark.parametrize("name, module", WITH_TEMPLATE, ids=[name for name, _ in WITH_TEMPLATE])
def test_either_template_flag_spelling_is_accepted(name, module):
    for spelling in ("prompt_template", "prompt_template_name", "prompt-template"):
        values = {f: getattr(g, f) for g in parse(module.GROUPS, {spelling: "chat"}) for f in vars(g)}
        assert values["prompt_template"] == "chat"


@pytest.mark.slow
@pytest.mark.parametrize("name, module", SCRIPTS, ids=IDS)
def test_help_on_the_command_line_explains_every_flag(name, module):
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / f"{name}.py"), "--help"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for group in module.GROUPS:
        for field in dataclasses.fields(group):
            assert f"--{field.name} (" in result.stdout and field.metadata["help"] in result.stdout


@pytest.mark.slow
def test_finetune_accepts_the_inference_spelling_on_the_command_line(tmp_path):
    """HuaTuo's habit the other way round: ``finetune.py --prompt_template X`` is a template, not an error."""
    run = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "finetune.py"),
            "--prompt_template",
            "no_such_template",
            "--data_path",
            str(tmp_path / "none.json"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 2
    assert "error: unknown prompt template 'no_such_template'" in run.stderr, run.stderr[-2000:]
