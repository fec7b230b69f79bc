"""HuaTuo's users' habits: hub ids (offline, from the cache), infer_literature.py, the tiny-base banner,
adapters that describe themselves (run_config.json read back), tiny-base token ids that must match."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT, tiny_train_args, write_jsonl
from test_adapters import old_adapter

import infer
import infer_literature
from utils.model import adapters, loading, tiny_base

BANNER = "EMBEDDED TINY DEMO MODEL"


def run_script(
    args: list[str], env: dict | None = None, stdin: str = "", timeout: int = 600
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=REPO_ROOT,
    )


def cache_snapshot(hf_home: Path, repo_id: str, source: Path, revision: str = "0" * 39 + "1") -> Path:
    """Put ``source``'s files into the hub cache layout ``HF_HOME/hub/models--owner--name/snapshots/<rev>``."""
    repo = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / revision
    shutil.copytree(source, snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    return snapshot


# ----------------------------------------------------------------------------------------------
# hub ids


@pytest.mark.slow
def test_hub_ids_load_offline_from_the_cache(tiny_base, tmp_path):
    """--base_model owner/name and HuaTuo README's --lora_weights thinksoso/lora-llama-med (old peft .bin)."""
    hf_home = tmp_path / "hf"
    cache_snapshot(hf_home, "huatuo/tiny-llama", Path(tiny_base))
    old_adapter(tiny_base, tmp_path / "old-lora")
    adapter_snapshot = cache_snapshot(hf_home, "thinksoso/lora-llama-med", tmp_path / "old-lora")
    env = {"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "answers.jsonl"
    run = run_script(
        [
            "infer.py",
            "--base_model",
            "huatuo/tiny-llama",
            "--lora_weights",
            "thinksoso/lora-llama-med",
            "--instruct_dir",
            str(REPO_ROOT / "data" / "infer.json"),
            "--output_file",
            str(out),
            "--num_beams",
            "1",
            "--max_new_tokens",
            "4",
            "--quiet",
        ],
        env,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"loaded adapter {adapter_snapshot} (16 tensors" in run.stderr  # the old .bin, from the cache
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert rows and rows[0]["settings"]["base_model"].startswith(
        str(hf_home / "hub" / "models--huatuo--tiny-llama" / "snapshots")
    )

    # offline and not cached: one clear line, no traceback
    run = run_script(
        ["infer.py", "--base_model", "huatuo/not-cached", "--use_lora", "False", "--max_new_tokens", "2"], env
    )
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert (
        "error: base model 'huatuo/not-cached': no such local folder, and HF_HUB_OFFLINE=1 and it is not in the cache"
        in run.stderr
    )


def test_a_missing_local_adapter_is_not_taken_for_a_hub_id(tmp_path):
    with pytest.raises(FileNotFoundError, match="LoRA adapter folder ./lora-nowhere not found"):
        adapters.resolve("./lora-nowhere")


# ----------------------------------------------------------------------------------------------
# the embedded tiny base: banner, token ids


@pytest.mark.slow
def test_infer_literature_single_runs_with_the_seed_flags_and_shows_the_banner(trained_adapter, tmp_path):
    out = tmp_path / "literature.jsonl"
    run = run_script(
        [
            "infer_literature.py",
            "--single_or_multi",
            "single",
            "--lora_weights",
            str(trained_adapter),
            "--use_lora",
            "True",
            "--prompt_template",
            "literature_template",
            "--num_beams",
            "1",
            "--max_new_tokens",
            "4",
            "--output_file",
            str(out),
        ],
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert BANNER in run.stderr and "NOT medicine" in run.stderr  # the adapter's base is the random tiny model
    lines = run.stdout.splitlines()
    assert [line for line in lines if line.startswith("instruction: ")] == [
        f"instruction: {q}" for q in infer_literature.SEED_QUESTIONS
    ]
    assert sum(line.startswith("Response: ") for line in lines) == len(infer_literature.SEED_QUESTIONS)
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["instruction"] for r in rows] == [
        f" <user>: {q}" for q in infer_literature.SEED_QUESTIONS
    ]  # the literature format
    assert "differs from the 'med_template' that" in run.stderr  # the adapter was trained with med_template


@pytest.mark.slow
def test_infer_literature_multi_script_keeps_the_history(trained_adapter, tmp_path):
    out = tmp_path / "chat.jsonl"
    env = {"LORA_WEIGHTS": str(trained_adapter), "OUTPUT_FILE": str(out), "PYTHON": sys.executable}
    run = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "infer-literature-multi.sh"), "--num_beams", "1", "--max_new_tokens", "4"],
        input="肝癌能治好吗？\n需要做什么检查？\n",
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **env},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert (
        len(rows) == 2 and rows[0]["instruction"] == "肝癌能治好吗？"
    )  # med_template (the adapter's): no folding of one question
    assert (
        rows[1]["instruction"] == f" <user>: 肝癌能治好吗？ <bot>: {rows[0]['model_output']} <user>: 需要做什么检查？"
    )


@pytest.mark.slow
def test_no_base_model_prints_the_banner_on_stderr(tmp_path):
    run = run_script(
        [
            "infer.py",
            "--use_lora",
            "False",
            "--num_beams",
            "1",
            "--max_new_tokens",
            "2",
            "--quiet",
            "--output_file",
            str(tmp_path / "o.jsonl"),
        ]
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert BANNER in run.stderr and "RANDOM" in run.stderr and "NOT medicine" in run.stderr
    assert BANNER not in run.stdout


def test_tiny_base_fingerprint_does_not_depend_on_the_data(monkeypatch, tmp_path):
    before = tiny_base.fingerprint()
    monkeypatch.setattr(tiny_base, "REPO_ROOT", tmp_path)  # a checkout whose data/ is empty or rebuilt
    assert tiny_base.fingerprint() == before
    assert tiny_base.corpus_lines()[:2] == ["下面是一个问题，运用医学知识来正确回答提问.", "### 问题:"]


@pytest.mark.slow
def test_tiny_base_adapter_against_other_token_ids_is_refused(tiny_base, trained_adapter, tmp_path):
    config = json.loads((trained_adapter / "run_config.json").read_text(encoding="utf-8"))
    assert config["resolved"]["tiny_base_fingerprint"] == tiny_base_fingerprint(tiny_base)
    rebuilt = Path(shutil.copytree(tiny_base, tmp_path / "tiny-rebuilt"))
    info = json.loads((rebuilt / "build_info.json").read_text())
    (rebuilt / "build_info.json").write_text(
        json.dumps(dict(info, fingerprint="f" * 64))
    )  # as after a rebuild with other ids
    with pytest.raises(ValueError, match=r"token ids differ.*python -m utils.model.tiny_base --out_dir DIR"):
        loading.load_tokenizer_and_model(str(rebuilt), str(trained_adapter))
    run = run_script(
        ["infer.py", "--base_model", str(rebuilt), "--lora_weights", str(trained_adapter), "--max_new_tokens", "2"]
    )
    assert run.returncode == 2 and "Traceback" not in run.stderr and "token ids differ" in run.stderr


def tiny_base_fingerprint(folder) -> str:
    return json.loads((Path(folder) / "build_info.json").read_text())["fingerprint"]


# ----------------------------------------------------------------------------------------------
# an adapter folder describes itself


@pytest.fixture(scope="module")
def qwen_adapter(tmp_path_factory):
    """An adapter trained on a tiny Qwen2 through its chat template with a system prompt."""
    from test_archs import mixed_records
    from tiny_archs import build

    import finetune

    tmp = tmp_path_factory.mktemp("qwen")
    base = build("qwen2", tmp / "base")
    out = tmp / "lora"
    finetune.train(
        **tiny_train_args(
            base_model=base,
            data_path=str(write_jsonl(tmp / "train.jsonl", mixed_records())),
            output_dir=str(out),
            prompt_template_name="chat",
            system_prompt="你是一名医生。",
            val_set_size=4,
            micro_batch_size=4,
            batch_size=8,
            max_steps=1,
            eval_steps=1,
            save_steps=1,
            cutoff_len=128,
        )
    )
    return base, out


@pytest.mark.slow
def test_infer_takes_base_template_and_system_prompt_from_the_adapter(qwen_adapter, tmp_path):
    base, adapter = qwen_adapter
    out = tmp_path / "answers.jsonl"
    run = run_script(
        [
            "infer.py",
            "--lora_weights",
            str(adapter),
            "--output_file",
            str(out),
            "--num_beams",
            "1",
            "--max_new_tokens",
            "4",
            "--quiet",
        ]
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert BANNER not in run.stderr  # not the tiny LLaMA: the Qwen2 base the adapter names
    settings = json.loads(out.read_text(encoding="utf-8").splitlines()[0])["settings"]
    assert (settings["base_model"], settings["prompt_template"], settings["system_prompt"]) == (
        base,
        "chat",
        "你是一名医生。",
    )
    # a text template asked for explicitly: the adapter's system prompt (a chat-template setting) is not carried over
    chosen = adapters.settings(str(adapter), prompt_template="med_template")
    assert (chosen["base_model"], chosen["prompt_template"], chosen["system_prompt"]) == (base, "med_template", "")


def test_explicit_flags_that_disagree_with_the_adapter_are_warned_about(trained_adapter, tiny_base, tmp_path, caplog):
    copy = Path(shutil.copytree(trained_adapter, tmp_path / "adapter"))
    chosen = adapters.settings(str(copy))
    assert chosen == {
        "lora_weights": str(copy),
        "base_model": tiny_base,
        "prompt_template": "med_template",
        "system_prompt": "",
    }
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    chosen = adapters.settings(str(copy), base_model=str(tmp_path / "elsewhere"), prompt_template="literature_template")
    assert (chosen["base_model"], chosen["prompt_template"]) == (str(tmp_path / "elsewhere"), "literature_template")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert (
        len(warnings) == 2
        and "--base_model" in warnings[0]
        and "--prompt_template 'literature_template' differs" in warnings[1]
    )
    # an adapter without run_config.json (old peft): the flags, else the defaults
    (copy / "run_config.json").unlink()
    assert adapters.settings(str(copy)) == {
        "lora_weights": str(copy),
        "base_model": "",
        "prompt_template": "med_template",
        "system_prompt": "",
    }


def test_infer_with_only_an_adapter_uses_its_template(trained_adapter, tmp_path):
    copy = Path(shutil.copytree(trained_adapter, tmp_path / "adapter"))
    config = json.loads((copy / "run_config.json").read_text(encoding="utf-8"))
    config["flags"]["prompt_template_name"] = "literature_template"
    (copy / "run_config.json").write_text(json.dumps(config), encoding="utf-8")
    out = tmp_path / "answers.jsonl"
    infer.main(lora_weights=str(copy), output_file=str(out), num_beams=1, max_new_tokens=2, quiet=True)
    settings = json.loads(out.read_text(encoding="utf-8").splitlines()[0])["settings"]
    assert settings["prompt_template"] == "literature_template"
    assert settings["base_model"] == config["resolved"]["base_model"]


def test_infer_literature_refuses_unknown_flags_and_modes():
    with pytest.raises(ValueError, match="unknown flag.*--num_beam\\b"):
        infer_literature.main(num_beam=1)
    with pytest.raises(ValueError, match="single or multi"):
        infer_literature.main(single_or_multi="both")
