"""The launchers on a model, tokenizer and data the project did not make; wandb never prompts."""

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO_ROOT, SHARED, write_jsonl

pytestmark = pytest.mark.slow


def foreign_llama(folder):
    """A LLaMA-architecture checkpoint unlike ours: byte-level BPE tokenizer, its own pad token,
    bos/eos at other ids, tied embeddings, grouped-query attention."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    text = (REPO_ROOT / "data" / "infer.json").read_text(encoding="utf-8").splitlines()
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["<|begin|>", "<|end|>", "<|pad|>"]  # pad is not id 0 here
    tok.train_from_iterator(text, trainers.BpeTrainer(vocab_size=600, special_tokens=special, show_progress=False))
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin|> $A", special_tokens=[("<|begin|>", tok.token_to_id("<|begin|>"))]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|begin|>", eos_token="<|end|>", pad_token="<|pad|>"
    )
    tokenizer.save_pretrained(folder)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    return tokenizer


def seed_format_data(path):
    source = SHARED / "llama_data.json"
    if source.is_file():
        path.write_text("".join(source.read_text(encoding="utf-8").splitlines(keepends=True)[:48]), encoding="utf-8")
    else:  # a user's fresh clone without ../shared: the same format, our own words
        write_jsonl(
            path,
            [{"instruction": f"问题{i}：发热怎么办？", "input": "", "output": "多休息，多饮水。"} for i in range(48)],
        )
    return path


def test_finetune_and_infer_scripts_on_a_foreign_llama(tmp_path):
    tokenizer = foreign_llama(tmp_path / "model")
    data = seed_format_data(tmp_path / "seed_data.json")
    env = dict(
        os.environ,
        BASE_MODEL=str(tmp_path / "model"),
        DATA_PATH=str(data),
        OUTPUT_DIR=str(tmp_path / "lora"),
        MICRO_BATCH_SIZE="8",
        BATCH_SIZE="16",
        VAL_SET_SIZE="8",
        NUM_EPOCHS="1",
        WANDB_PROJECT="",
        PYTHON=sys.executable,
    )
    run = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "finetune.sh"), "--max_steps", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    config = json.loads((tmp_path / "lora" / "run_config.json").read_text())
    assert config["resolved"]["pad_token_id"] == tokenizer.pad_token_id != 0
    questions = SHARED / "infer.json" if (SHARED / "infer.json").is_file() else REPO_ROOT / "data" / "infer.json"
    out = tmp_path / "answers.jsonl"
    env.update(LORA_WEIGHTS=str(tmp_path / "lora"), INFER_DATA=str(questions), OUTPUT_FILE=str(out))
    run = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "infer.sh"), "--max_new_tokens", "8", "--quiet"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    n_questions = len([l for l in questions.read_text(encoding="utf-8").splitlines() if l.strip()])
    assert len(out.read_text(encoding="utf-8").splitlines()) == n_questions


def test_wandb_without_credentials_runs_offline_and_never_prompts(tiny_base, train_file, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env["HOME"] = str(tmp_path / "home")  # no ~/.netrc, no wandb settings
    out = tmp_path / "lora"
    run = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "finetune.py"),
            "--base_model",
            tiny_base,
            "--data_path",
            str(train_file),
            "--output_dir",
            str(out),
            "--max_steps",
            "2",
            "--micro_batch_size",
            "8",
            "--batch_size",
            "8",
            "--val_set_size",
            "8",
            "--eval_steps",
            "1",
            "--save_steps",
            "2",
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "logging offline" in run.stderr
    assert list((out / "wandb").glob("offline-run-*")), "no offline wandb run was written"
    # the sample answers of every evaluation also went to a wandb Table (the newest holds them all)
    tables = sorted(
        (out / "wandb").glob("offline-run-*/files/media/table/sample_answers_*.table.json"),
        key=lambda p: p.stat().st_mtime,
    )
    assert tables, "no wandb Table of sample answers"
    table = json.loads(tables[-1].read_text(encoding="utf-8"))
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text(encoding="utf-8").splitlines()]
    assert table["columns"] == ["step", "question", "answer"]
    assert [row[0] for row in table["data"]] == [s["step"] for s in samples] == [1, 1, 1, 2, 2, 2]
    assert [row[2] for row in table["data"]] == [s["answer"] for s in samples]
