"""infer.py: batched generation equals one-at-a-time, files in and out, HuaTuo's print format."""

import json

from conftest import REPO_ROOT, seed_file

import infer
from utils.data.prompter import Prompter
from utils.model import generation, loading

QUESTIONS = [
    "头痛怎么办？",
    "一位70岁的女性患者出现晕厥、不自主颤抖，请说明可能的疾病和治疗。",
    "感冒",
    "糖尿病患者饮食要注意什么？",
    "肺结核会传染吗？",
]


def test_batched_greedy_equals_one_at_a_time(tiny_base, trained_adapter):
    tokenizer, model, _ = loading.load_tokenizer_and_model(tiny_base, str(trained_adapter))
    config = generation.make_generation_config(model, tokenizer, num_beams=1, max_new_tokens=24)
    prompts = [Prompter().generate_prompt(q) for q in QUESTIONS]
    single = [
        generation.generate_answers(model, tokenizer, [p], config, batch_size=1, progress=False)[0] for p in prompts
    ]
    batched = generation.generate_answers(model, tokenizer, prompts, config, batch_size=len(prompts), progress=False)
    assert batched == single
    assert all(single)  # every question got some answer


def test_infer_writes_one_answer_per_question(tiny_base, trained_adapter, tmp_path, capsys):
    out = tmp_path / "answers.jsonl"
    infer.main(
        base_model=tiny_base,
        lora_weights=str(trained_adapter),
        instruct_dir=str(REPO_ROOT / "data" / "infer.json"),
        output_file=str(out),
        batch_size=4,
        max_new_tokens=16,
    )
    questions = [json.loads(l) for l in (REPO_ROOT / "data" / "infer.json").read_text().splitlines() if l.strip()]
    answers = [json.loads(l) for l in out.read_text().splitlines()]
    assert len(questions) >= 10 and len(answers) == len(questions)
    for q, a in zip(questions, answers):
        assert a["instruction"] == q["instruction"] and a["output"] == q["output"]
        assert isinstance(a["model_output"], str)
        assert a["settings"]["num_beams"] == 4 and a["settings"]["lora_weights"] == str(trained_adapter)
    printed = capsys.readouterr().out
    assert printed.count("###golden output###") == len(questions) and printed.count("###model output###") == len(
        questions
    )


def test_infer_without_questions_file_answers_builtin_questions(tiny_base, tmp_path, capsys):
    infer.main(
        base_model=tiny_base, use_lora=False, max_new_tokens=8, num_beams=1, output_file=str(tmp_path / "o.jsonl")
    )
    assert len((tmp_path / "o.jsonl").read_text().splitlines()) == len(infer.BUILTIN_QUESTIONS)


def test_seed_infer_file_with_adapter(tiny_base, trained_adapter, tmp_path):
    path = seed_file("infer.json")
    out = tmp_path / "seed.jsonl"
    infer.main(
        base_model=tiny_base,
        lora_weights=str(trained_adapter),
        instruct_dir=str(path),
        output_file=str(out),
        max_new_tokens=8,
    )
    assert len(out.read_text().splitlines()) == len(path.read_text().splitlines())


def test_generation_settings_are_checked():
    import pytest

    with pytest.raises(ValueError, match="top_p=1.5"):
        generation.check_settings(top_p=1.5)
