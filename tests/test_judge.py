"""judge.py: CMCOQA scoring through a loopback OpenAI-compatible judge that often replies badly."""

import json
import socket

import pytest
from conftest import seed_file, write_jsonl
from fake_judge_server import FakeJudge, expected_scores, is_malformed, malformed_kind

import infer
import judge
from utils.data.records import DataError
from utils.eval.judge import JudgeReplyError, parse_reply


def test_parse_reply_accepts_json_in_prose_and_refuses_bad_scores():
    good = {"完整性": 2, "深刻性": 1, "专业性": 3, "理由": "ok"}
    assert parse_reply(json.dumps(good, ensure_ascii=False)) == good
    assert parse_reply("评分：\n```json\n" + json.dumps(good, ensure_ascii=False) + "\n```") == good
    assert parse_reply('{"完整性": "2", "深刻性": 1.0, "专业性": 0}')["完整性"] == 2
    for reply, reason in [
        ("我给两分", "no JSON object"),
        ('{"完整性": 4, "深刻性": 1, "专业性": 3}', "'完整性' is 4"),
        ('{"完整性": 2, "深刻性": 1}', "'专业性' missing"),
        ('{"完整性": 2, "深刻性"', "no JSON object"),
        ('{"完整性": true, "深刻性": 1, "专业性": 3}', "'完整性' is True"),
        ("", "no JSON object"),
    ]:
        with pytest.raises(JudgeReplyError, match=reason):
            parse_reply(reply)


def answers_file(tmp_path, n=30):
    records = []
    for i in range(n):
        answer = "建议" + "多休息多饮水" * (i % 7) + ("，必要时请咨询医生" if i % 3 == 0 else "")
        records.append(
            {
                "instruction": f"第{i}个问题：发热怎么办？",
                "ICD-10": f"group-{i % 2}",
                "model_output": answer,
                "settings": {"num_beams": 4},
            }
        )
    return write_jsonl(tmp_path / "answers.jsonl", records), records


@pytest.mark.slow
def test_judge_survives_malformed_replies_and_counts_unscored(tmp_path, monkeypatch):
    path, records = answers_file(tmp_path)
    monkeypatch.setenv("JUDGE_KEY", "sk-test")
    with FakeJudge(malformed_rate=1 / 3, script=["500"]) as server:  # the first call also fails in transport
        judge.main(
            predictions_file=str(path),
            output_dir=str(tmp_path / "out"),
            judge_base_url=server.base_url,
            judge_model="fake-judge",
            judge_api_key_env="JUDGE_KEY",
            max_attempts=2,
            workers=4,
            max_retries=2,
        )
        log = list(server.log)
    judged_calls = [entry for entry in log if entry[1] > 0]
    malformed = [entry for entry in judged_calls if entry[2] != "ok"]
    assert [entry[2] for entry in log if entry[1] == 0] == ["500"]
    assert 0.2 < len(malformed) / len(judged_calls) < 0.5  # about a third of the judge's replies are unusable
    # each (question, attempt) is broken in its own fixed way; together they cover every kind
    assert sorted(malformed) == sorted((q, a, malformed_kind(0, q, a)) for q, a, _ in malformed)
    assert {kind for _, _, kind in malformed} == {"prose", "range", "missing", "truncated"}

    expected_unscored = {
        r["instruction"] for r in records if all(is_malformed(0, r["instruction"], a, 1 / 3) for a in (1, 2))
    }
    assert expected_unscored  # the seed of the fake makes some answers fail both attempts

    rows = [json.loads(line) for line in (tmp_path / "out" / "judgments.jsonl").read_text().splitlines()]
    assert [r["instruction"] for r in rows] == [r["instruction"] for r in records]  # nothing dropped, order kept
    for row in rows:
        if row["instruction"] in expected_unscored:
            assert row["status"] == "unscored" and row["scores"] is None and row["attempts"] == 2, (
                row,
                [e for e in log if e[0] == row["instruction"]],
            )
            assert row["error"].startswith("unusable reply:")
        else:
            assert row["status"] == "scored"
            assert {k: row["scores"][k] for k in ("完整性", "深刻性", "专业性")} == expected_scores(row["model_output"])
    summary = json.loads((tmp_path / "out" / "judge_metrics.json").read_text())
    assert summary["unscored"] == len(expected_unscored) and summary["scored"] == len(records) - len(expected_unscored)
    assert summary["judge_calls"] == len(judged_calls)
    scored = [r["scores"] for r in rows if r["status"] == "scored"]
    assert summary["mean"]["完整性"] == pytest.approx(sum(s["完整性"] for s in scored) / len(scored))
    assert set(summary["by_group"]) == {"group-0", "group-1"}
    report = (tmp_path / "out" / "judge_report.md").read_text()
    assert f"**{len(expected_unscored)} unscored**" in report
    assert (tmp_path / "out" / "judge.png").is_file()
    assert "sk-test" not in (tmp_path / "out" / "judge_metrics.json").read_text()


def test_unreachable_judge_leaves_every_answer_unscored(tmp_path):
    path, records = answers_file(tmp_path, n=3)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    judge.main(
        predictions_file=str(path),
        output_dir=str(tmp_path / "out"),
        judge_base_url=f"http://127.0.0.1:{port}/v1",
        max_retries=0,
        workers=1,
    )
    summary = json.loads((tmp_path / "out" / "judge_metrics.json").read_text())
    assert summary["unscored"] == 3 and summary["scored"] == 0
    row = json.loads((tmp_path / "out" / "judgments.jsonl").read_text().splitlines()[0])
    assert row["error"].startswith("judge endpoint:")


def test_bad_questions_file_names_line_and_field(tmp_path):
    path = tmp_path / "q.json"
    path.write_text('[\n  {"question": "头痛怎么办？"},\n  {"ICD-10": "x"}\n]\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"q\.json:3: field 'question': missing"):
        judge.main(questions_file=str(path), output_dir=str(tmp_path / "out"))


@pytest.mark.slow
def test_seed_questions_to_infer_to_judge(tiny_base, tmp_path):
    source = seed_file("question.json")
    questions = json.loads(source.read_text(encoding="utf-8"))[:3]
    small = tmp_path / "question.json"
    small.write_text(json.dumps(questions, ensure_ascii=False), encoding="utf-8")
    judge.main(questions_file=str(small), output_dir=str(tmp_path / "j"))
    converted = [json.loads(line) for line in (tmp_path / "j" / "questions.jsonl").read_text().splitlines()]
    assert [c["instruction"] for c in converted] == [q["question"] for q in questions]
    assert [c["ICD-10"] for c in converted] == [q["ICD-10"] for q in questions]
    answers = tmp_path / "j" / "answers.jsonl"
    infer.main(
        base_model=tiny_base,
        use_lora=False,
        instruct_dir=str(tmp_path / "j" / "questions.jsonl"),
        output_file=str(answers),
        max_new_tokens=8,
        num_beams=1,
        quiet=True,
    )
    with FakeJudge(malformed_rate=0.0) as server:
        judge.main(
            predictions_file=str(answers),
            questions_file=str(small),
            output_dir=str(tmp_path / "j"),
            judge_base_url=server.base_url,
            max_retries=0,
        )
    summary = json.loads((tmp_path / "j" / "judge_metrics.json").read_text())
    assert summary["scored"] == 3 and set(summary["by_group"]) <= {q["ICD-10"] for q in questions}
