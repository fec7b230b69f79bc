"""Flags shared by the scripts (model loading, precision, template, generation) have the same names,
types and defaults everywhere; HuaTuo's ``prompt_template_name`` (finetune.py) and ``prompt_template``
(infer.py, generate.py, ...) are both accepted by every script that has either."""

import importlib
import inspect

import pytest
from conftest import REPO_ROOT

from utils.cli import with_aliases
from utils.data.prompter import DEFAULT_TEMPLATE
from utils.model import generation

# name -> (type, default) as every script that has the flag must declare it
SHARED = {
    # model loading
    "base_model": (str, ""),
    "use_lora": (bool, True),
    "load_8bit": (bool, False),
    "load_4bit": (bool, False),
    "trust_remote_code": (bool, False),
    # precision
    "precision": (str, "auto"),
    # template ("" = the adapter's run_config.json, else DEFAULT_TEMPLATE)
    "prompt_template": (str, ""),
    "prompt_template_name": (str, ""),
    "system_prompt": (str, ""),
    # generation (HuaTuo's values, defined once in utils/model/generation.py)
    "max_new_tokens": (int, generation.MAX_NEW_TOKENS),
    "num_beams": (int, generation.NUM_BEAMS),
    "temperature": (float, generation.TEMPERATURE),
    "top_p": (float, generation.TOP_P),
    "top_k": (int, generation.TOP_K),
    "do_sample": (bool, generation.DO_SAMPLE),
}

# Deliberate differences, each with its reason. Anything else that differs fails.
DIFFERENT = {
    ("generate", "num_beams"): (
        1,
        "the demo streams, and beam search cannot (HuaTuo's 4 beams show the answer whole)",
    ),
    ("finetune", "prompt_template_name"): (DEFAULT_TEMPLATE, "training has no adapter to read the template from"),
}

# Other spellings of the same ideas: a script using one of these has drifted.
VARIANTS = {
    "model_path",
    "model_name",
    "base",
    "base_model_path",
    "adapter",
    "adapter_dir",
    "lora_dir",
    "lora_path",
    "template",
    "template_name",
    "prompt_template_file",
    "load_in_8bit",
    "load_in_4bit",
    "int8",
    "dtype",
    "fp16",
    "bf16",
    "torch_dtype",
    "max_tokens",
    "max_length",
    "beams",
    "n_beams",
    "temp",
    "sample",
}


def entry_points():
    """(module name, function) of every script in the repository root that Fire runs and that loads a
    model (has --base_model); build_dataset.py's and judge.py's --temperature are a remote LLM's."""
    found = []
    for path in sorted(REPO_ROOT.glob("*.py")):
        text = path.read_text(encoding="utf-8")
        if "run(" not in text or '__name__ == "__main__"' not in text:
            continue
        module = importlib.import_module(path.stem)
        for name in ("main", "train"):
            fn = getattr(module, name, None)
            if callable(fn) and "base_model" in inspect.signature(fn).parameters:
                found.append((path.stem, fn))
                break
    return found


ENTRY_POINTS = entry_points()


def test_the_scripts_are_found():
    names = {name for name, _ in ENTRY_POINTS}
    assert {"finetune", "infer", "infer_literature", "generate", "export_hf_checkpoint"} <= names


@pytest.mark.parametrize("script, fn", ENTRY_POINTS, ids=[name for name, _ in ENTRY_POINTS])
def test_shared_flags_have_one_name_type_and_default(script, fn):
    params = inspect.signature(fn).parameters
    drifted = sorted(VARIANTS & set(params))
    assert not drifted, f"{script}: {drifted} spell a shared flag differently (use {sorted(SHARED)})"
    for name, param in params.items():
        if name not in SHARED:
            continue
        kind, default = SHARED[name]
        assert param.annotation is kind, f"{script}.{name}: type {param.annotation}, everywhere else {kind.__name__}"
        expected, why = DIFFERENT.get((script, name), (default, ""))
        assert param.default == expected, (
            f"{script} --{name} defaults to {param.default!r}, everywhere else {default!r}"
        )


@pytest.mark.parametrize("script, fn", ENTRY_POINTS, ids=[name for name, _ in ENTRY_POINTS])
def test_either_template_flag_spelling_is_accepted(script, fn):
    params = inspect.signature(fn).parameters
    spelled = [n for n in ("prompt_template", "prompt_template_name") if n in params]
    if not spelled:
        pytest.skip(f"{script} has no template flag")
    for given in ("prompt_template", "prompt_template_name", "prompt-template"):
        for argv in ([f"--{given}", "chat"], [f"--{given}=chat"]):
            out = with_aliases(fn, argv)
            assert out[0].lstrip("-").split("=")[0].replace("-", "_") in spelled, (
                f"{script}: {argv} -> {out}"
            )  # Fire reads - as _
            assert out[-1].endswith("chat")
    assert with_aliases(fn, ["--num_beams", "1", "prompt_template"]) == [
        "--num_beams",
        "1",
        "prompt_template",
    ]  # values untouched


@pytest.mark.slow
def test_finetune_accepts_the_inference_spelling_on_the_command_line(tmp_path):
    """HuaTuo's habit the other way round: ``finetune.py --prompt_template X`` is a template, not an error."""
    import subprocess
    import sys

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
