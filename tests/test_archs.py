"""End to end on tiny random checkpoints of today's architectures: fine-tune 2 steps, save, reload, infer.

Chat architectures (Llama-3, Qwen2, Gemma) train and answer through their own chat template on a
file mixing every record format; Bloom keeps HuaTuo's bloom_deploy template; GPT-NeoX the default.
"""

import json
import math

import pytest
from conftest import REPO_ROOT, tiny_train_args, write_jsonl
from test_chat import A1, EXPECTED_TARGETS, Q1, Q2, RECORDS
from tiny_archs import build, end_of_turn_id

import finetune
import infer
from utils.model import loading
from utils.train import checkpointing

TEMPLATES = {"llama3": "chat", "qwen2": "chat", "gemma": "chat", "bloom": "bloom_deploy", "gpt_neox": "med_template"}


def mixed_records() -> list[dict]:
    """24 records: the repository's questions plus multi-turn ones in every chat format."""
    plain = [
        json.loads(l) for l in (REPO_ROOT / "data" / "infer.json").read_text(encoding="utf-8").splitlines() if l.strip()
    ]
    records = []
    while len(records) < 24:
        records += [dict(r) for r in plain] + [dict(r) for r in RECORDS.values()]
    return records[:24]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(TEMPLATES))
def test_finetune_save_reload_infer(name, tmp_path):
    base = build(name, tmp_path / "base")
    template = TEMPLATES[name]
    records = (
        mixed_records()
        if template == "chat"
        else [
            r for r in mixed_records() if "instruction" in r and "<user>" not in r["instruction"] and "history" not in r
        ]
    )
    data = write_jsonl(tmp_path / "train.jsonl", records)
    out = tmp_path / "lora"
    finetune.train(
        **tiny_train_args(
            base_model=base,
            data_path=str(data),
            output_dir=str(out),
            prompt_template_name=template,
            val_set_size=4,
            micro_batch_size=4,
            batch_size=8,
            max_steps=2,
            eval_steps=2,
            save_steps=2,
            cutoff_len=128,
            learning_rate=1e-2,
            system_prompt="你是一名医生。" if template == "chat" else "",
        )
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert math.isfinite(metrics["train_loss"]) and math.isfinite(metrics["eval_loss"])
    config = json.loads((out / "run_config.json").read_text())
    assert config["resolved"]["lora_target_modules"] == EXPECTED_TARGETS[name]
    assert json.loads((out / "adapter_config.json").read_text())["target_modules"]
    assert checkpointing.adapter_problem(out) is None

    # reload from disk and answer: single-turn and multi-turn questions
    questions = write_jsonl(
        tmp_path / "q.jsonl",
        [{"instruction": Q1, "output": A1}, {"instruction": "高血压要注意什么？"}]
        + (
            [{"messages": RECORDS["messages"]["messages"]}, {"history": [[Q1, A1]], "instruction": Q2}]
            if template == "chat"
            else []
        ),
    )
    answers_file = tmp_path / "answers.jsonl"
    infer.main(
        base_model=base,
        lora_weights=str(out),
        instruct_dir=str(questions),
        prompt_template=template,
        output_file=str(answers_file),
        batch_size=2,
        num_beams=1,
        max_new_tokens=6,
        quiet=True,
        system_prompt="你是一名医生。" if template == "chat" else "",
    )
    answers = [json.loads(l) for l in answers_file.read_text(encoding="utf-8").splitlines()]
    assert len(answers) == len(questions.read_text().splitlines())
    assert all(isinstance(a["model_output"], str) for a in answers)
    assert answers[0]["settings"]["prompt_template"] == template

    if template == "chat":  # the training examples end with the end-of-turn token, never with "\n" after it
        tokenizer = loading.load_tokenizer(base)
        from utils.data.prompter import ChatPrompter, tokenize_records

        examples, _ = tokenize_records(tokenizer, ChatPrompter(), records, cutoff_len=128)
        eot = end_of_turn_id(name, tokenizer)
        assert all(e["input_ids"][-1] == eot for e in examples if len(e["input_ids"]) < 128)
