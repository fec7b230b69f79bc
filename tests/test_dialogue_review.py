"""Multi-turn literature dialogues (fold, chat loop, fine-tuning, infer --mode, infer_literature.py) and
reviewable runs (sample answers per evaluation, loss chart)."""

import io
import json
import subprocess
import sys

import pytest
from conftest import REPO_ROOT, seed_file, tiny_train_args, write_jsonl

import finetune
from utils.data import literature
from utils.data.prompter import IGNORE_INDEX, Prompter, tokenize_records
from utils.train.callbacks import sample_questions


def pairs(*turns: str) -> list[dict]:
    """user, bot, user, bot, ... as messages."""
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]


def test_fold_is_the_seeds_format():
    assert literature.fold([], "肝癌能治好吗？") == " <user>: 肝癌能治好吗？"
    assert (
        literature.fold(pairs("q1", "a1", "q2", "a2"), "q3") == " <user>: q1 <bot>: a1 <user>: q2 <bot>: a2 <user>: q3"
    )
    # a single question is folded only where the template's data folds every question
    assert literature.instruction([], "q", fold_single=False) == "q"
    assert literature.instruction([], "q", fold_single=True) == " <user>: q"
    assert literature.instruction(pairs("q1", "a1"), "q2", fold_single=False) == " <user>: q1 <bot>: a1 <user>: q2"
    assert literature.unfold(" <user>: q1 <bot>: a1 <user>: q2") == pairs("q1", "a1", "q2")


def test_seed_literature_records_fold_back():
    records = json.loads(seed_file("liver_cancer.json").read_text(encoding="utf-8"))
    multi = next(r for r in records if r["instruction"].count("<user>:") > 1)
    # split HuaTuo's own instruction into turns and fold them again: the same string
    parts = multi["instruction"].split(" <user>: ")[1:]
    history = pairs(*[t for p in parts[:-1] for t in p.split(" <bot>: ")])
    assert literature.fold(history, parts[-1]) == multi["instruction"]
    assert literature.unfold(multi["instruction"]) == history + pairs(parts[-1])


def fake_answer(instruction: str) -> str:
    return f"答{instruction.count('<user>')}\n轮"  # newlines must not break the one-line-per-answer output


def test_chat_loop_from_a_pipe_keeps_or_forgets_history(capsys):
    stream = io.StringIO("问一\n\n问二\n/reset\n问三\n问四\n")
    records = literature.chat(
        fake_answer, literature.read_turns(stream), keep_history=True, max_history_turns=5, show=print
    )
    assert [r["instruction"] for r in records] == [
        " <user>: 问一",
        " <user>: 问一 <bot>: 答1 轮 <user>: 问二",
        " <user>: 问三",  # /reset forgot the first two exchanges
        " <user>: 问三 <bot>: 答1 轮 <user>: 问四",
    ]
    assert capsys.readouterr().out.splitlines() == ["答1 轮", "答2 轮", "答1 轮", "答2 轮"]
    single = literature.chat(fake_answer, iter(["问一", "问二"]), keep_history=False)
    assert [r["instruction"] for r in single] == [" <user>: 问一", " <user>: 问二"]
    capped = literature.chat(fake_answer, iter(["a", "b", "c", "d"]), keep_history=True, max_history_turns=2)
    assert capped[-1]["instruction"] == " <user>: b <bot>: 答2 轮 <user>: c <bot>: 答3 轮 <user>: d"


LITERATURE = [
    {
        "instruction": " <user>: 肝癌的早期症状有哪些？",
        "input": "",
        "output": "早期肝癌常无明显症状，部分患者有乏力、食欲下降和右上腹不适。",
    },
    {
        "instruction": " <user>: 我听说免疫疗法可以治疗晚期肝癌，真的吗？ <bot>: "
        "是的，免疫疗法可以提高免疫系统对癌"
        "细胞的反应。 <user>: 所有患者都适合吗？",
        "input": "",
        "output": "不是所有患者都适合，医生会根据病情评估后选择方案。",
    },
    {
        "instruction": " <user>: 甲胎蛋白升高意味着什么？ <bot>: 可能提示肝癌，也可见于肝炎活动期。 <user>: "
        "需要做什么检查？",
        "input": "",
        "output": "建议做肝脏超声、增强CT或磁共振，并复查甲胎蛋白。",
    },
]


def test_literature_labels_cover_only_the_last_answer(tokenizer):
    prompter = Prompter("literature_template")
    (example,), _ = tokenize_records(tokenizer, prompter, LITERATURE[1:2], cutoff_len=512)
    learned = [t for t, l in zip(example["input_ids"], example["labels"]) if l != IGNORE_INDEX]
    assert tokenizer.decode(learned, skip_special_tokens=True).strip() == LITERATURE[1]["output"]
    assert learned[-1] == tokenizer.eos_token_id


@pytest.fixture(scope="module")
def literature_run(tiny_base, tmp_path_factory):
    """A few steps on a literature-style (multi-turn) file, evaluating every 2 steps."""
    tmp = tmp_path_factory.mktemp("literature")
    records = [dict(r, instruction=r["instruction"] + "？" * (i // 3)) for i, r in enumerate(LITERATURE * 8)]
    data = write_jsonl(tmp / "literature.json", records)
    out = tmp / "lora-literature"
    finetune.train(
        **tiny_train_args(
            base_model=tiny_base,
            data_path=str(data),
            output_dir=str(out),
            prompt_template_name="literature_template",
            val_set_size=4,
            micro_batch_size=4,
            batch_size=4,
            max_steps=4,
            eval_steps=2,
            save_steps=2,
            learning_rate=3e-3,
            sample_questions=2,
            sample_max_new_tokens=6,
        )
    )
    return out


@pytest.mark.slow
def test_training_keeps_sample_answers_per_evaluation_and_a_loss_chart(literature_run):
    samples = [json.loads(line) for line in (literature_run / "samples.jsonl").read_text().splitlines()]
    questions = sample_questions(2)
    assert [s["step"] for s in samples] == [2, 2, 4, 4]  # evaluations at steps 2 and 4; the final evaluate adds none
    assert [s["question"] for s in samples] == questions * 2
    assert all(isinstance(s["answer"], str) for s in samples)
    metrics = json.loads((literature_run / "metrics.json").read_text())
    assert sum(1 for e in metrics["log_history"] if "eval_loss" in e) >= 2
    assert (literature_run / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert (literature_run / "adapter_config.json").is_file()


@pytest.mark.slow
def test_infer_multi_turn_from_a_pipe(literature_run, tiny_base, tmp_path):
    out = tmp_path / "chat.jsonl"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "infer.py"),
            "--mode",
            "multi",
            "--base_model",
            tiny_base,
            "--lora_weights",
            str(literature_run),
            "--prompt_template",
            "literature_template",
            "--num_beams",
            "1",
            "--max_new_tokens",
            "6",
            "--output_file",
            str(out),
        ],
        input="肝癌能治好吗？\n需要做什么检查？\n\n免疫疗法适合我吗？\n",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    answers = proc.stdout.splitlines()
    assert len(rows) == len(answers) == 3
    assert [r["model_output"] for r in rows] == answers
    assert rows[2]["instruction"] == literature.fold(
        pairs("肝癌能治好吗？", answers[0], "需要做什么检查？", answers[1]), "免疫疗法适合我吗？"
    )
    assert rows[0]["settings"]["prompt_template"] == "literature_template"
