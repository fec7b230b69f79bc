"""benchmark.py and the kb-mcq exam: distractors checked independently, the harness's accuracy against
a log-likelihood computed here, users' exam files with bad rows, offline behaviour, the launcher."""

import json
import os
import subprocess
import sys
from collections import Counter

import pytest
from conftest import REPO_ROOT, write_jsonl

import benchmark
from utils.knowledge.cmekg import load_all
from utils.knowledge.exam import MAX_QUESTIONS, QUESTIONS, build_exam, read_exam_file
from utils.knowledge.schema import load_knowledge, split_entities

OFFLINE = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


@pytest.fixture(scope="module")
def kb():
    """Our knowledge base, every question (no cap)."""
    entries = load_knowledge(None)
    split_of = split_entities(entries, 42, 0.1, 0.1)
    return entries, split_of, build_exam(entries, split_of, 42, max_questions=None)


def linked(a: str, b: str) -> bool:
    return a == b or a in b or b in a


# ----------------------------------------------------------------------------------------------
# the exam built from the knowledge base


def test_exam_questions_are_grounded_and_distractors_verifiably_wrong(kb):
    entries, split_of, exam = kb
    by_name = {e.name: e for e in entries}
    for split, questions in exam.items():
        for q in questions:
            entry = by_name[q["entity"]]
            assert split_of[entry.name] == split
            options, answer = q["options"], "ABCD".index(q["answer"])
            assert len(options) == 4 == len(set(options))
            assert q["facts"] == [{"field": q["field"], "value": v} for v in entry.get(q["field"])]
            assert all(f["value"] in q["explanation"] for f in q["facts"])
            wrong = [o for i, o in enumerate(options) if i != answer]
            if q["style"] == "fact":
                assert options[answer] in entry.get(q["field"])
                own = [entry.name] + [v for vs in entry.fields.values() for v in vs]
                for d in wrong:  # no distractor is, contains or is contained in a fact of the asked entry
                    assert not any(linked(d, v) for v in own), (q["id"], d)
            else:
                assert options[answer] == entry.name
                shown = [v for v in entry.get(q["field"]) if v in q["question"]]
                assert shown
                for d in wrong:  # another entry of the split, with the field known and none of the shown values
                    other = by_name[d]
                    assert other.kind == entry.kind and split_of[d] == split and other.get(q["field"])
                    assert not any(linked(s, v) for s in shown for v in other.get(q["field"])), (q["id"], d)


def test_exam_size_follows_the_knowledge_base_and_letters_are_balanced(kb):
    entries, split_of, exam = kb
    for split, questions in exam.items():
        asked = sum(len(e.get(f)) for e in entries if split_of[e.name] == split for f in QUESTIONS.get(e.kind, {}))
        facts = sum(q["style"] == "fact" for q in questions)
        # one question per asked fact that is a fit option (utils.knowledge.exam.option_problem) at most
        assert 0 < facts <= asked, split
        letters = Counter(q["answer"] for q in questions)
        assert max(letters.values()) - min(letters.values()) <= 1, letters
    assert build_exam(entries, split_of, 42, max_questions=None) == exam  # deterministic
    capped = build_exam(entries, split_of, 42, max_questions={"train": 100})
    assert len(capped["train"]) == 100
    assert {q["id"] for q in capped["train"]} <= {q["id"] for q in exam["train"]} and capped["valid"] == exam["valid"]


@pytest.mark.slow
def test_committed_exam_files_are_the_builders_output():
    """What build_dataset.py wrote: cMeKG + ours (as the build loads them), the training split's records
    given (frequency matching), the default caps."""
    entries, _ = load_all(None)
    train = [
        json.loads(line) for line in (REPO_ROOT / "data" / "llama_data.json").read_text(encoding="utf-8").splitlines()
    ]
    exam = build_exam(entries, split_entities(entries, 42, 0.1, 0.1), 42, train_records=train)
    assert 800 <= len(exam["test"]) <= MAX_QUESTIONS["test"]
    for split in ("valid", "test"):
        path = REPO_ROOT / "data" / "kb_mcq" / f"{split}.json"
        assert [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] == exam[split]


# ----------------------------------------------------------------------------------------------
# users' exam files


def test_exam_files_in_published_layouts_read_alike(tmp_path):
    expected = {"question": "高血压首选哪种检查？", "options": ["心电图", "血压测量", "胃镜", "脑电图"], "answer": "B"}
    cmexam = tmp_path / "cmexam.csv"
    cmexam.write_text(
        'Question,Options,Answer,Explanation\n"高血压首选哪种检查？","A 心电图\nB 血压测量\nC 胃镜\nD '
        '脑电图",B,测血压\n',
        encoding="utf-8",
    )
    cmb = tmp_path / "cmb.json"
    cmb.write_text(
        json.dumps(
            [
                {
                    "question": expected["question"],
                    "answer": "B",
                    "explanation": "",
                    "option": {"A": "心电图", "B": "血压测量", "C": "胃镜", "D": "脑电图", "E": ""},
                }
            ],
            ensure_ascii=False,
        ),
        encoding="utf-8",
    )
    medqa = write_jsonl(
        tmp_path / "medqa.jsonl",
        [
            {
                "question": expected["question"],
                "answer": "血压测量",
                "answer_idx": "B",
                "options": dict(zip("ABCD", expected["options"])),
            }
        ],
    )
    ceval = tmp_path / "ceval.csv"
    ceval.write_text(
        "id,question,A,B,C,D,answer,explanation\n0,高血压首选哪种检查？,心电图,血压测量,胃镜,脑电图,B,\n",
        encoding="utf-8",
    )
    for path in (cmexam, cmb, medqa, ceval):
        questions, problems = read_exam_file(path)
        assert problems == [] and [{k: q[k] for k in expected} for q in questions] == [expected], path
    custom = write_jsonl(
        tmp_path / "custom.jsonl", [{"题干": expected["question"], "选项": expected["options"], "答案": "b"}]
    )
    questions, _ = read_exam_file(custom, "question=题干,options=选项,answer=答案")
    assert [{k: q[k] for k in expected} for q in questions] == [expected]


def test_bad_exam_rows_are_named_by_file_and_line_and_the_rest_kept(tmp_path):
    csv_path = tmp_path / "exam.csv"
    csv_path.write_text(
        "Question,Options,Answer\n"
        '"问题一","A 甲\nB 乙\nC 丙\nD 丁",A\n'  # lines 2-5
        '"问题二","A 甲\nB 乙",F\n'  # lines 6-7: F is not an option
        '"问题三","A 甲\nB 乙\nC 丙\nD 丁",AB\n'  # lines 8-11: several answers
        '"问题四","甲\n乙",A\n',  # line 12: options without letters
        encoding="utf-8",
    )
    questions, problems = read_exam_file(csv_path)
    assert [q["question"] for q in questions] == ["问题一"]
    assert [p.split(": field")[0] for p in problems] == [f"{csv_path}:6", f"{csv_path}:8", f"{csv_path}:12"]
    assert "'F'" in problems[0] and "several answers" in problems[1] and "does not start with a letter" in problems[2]

    jsonl = tmp_path / "exam.jsonl"
    good = {"question": "问题", "options": ["甲", "乙", "丙", "丁"], "answer": "C"}
    jsonl.write_text(
        json.dumps(good, ensure_ascii=False)
        + "\n{not json\n"
        + json.dumps({**good, "answer": "Z"})
        + "\n"
        + json.dumps(good, ensure_ascii=False)
        + "\n",
        encoding="utf-8",
    )
    questions, problems = read_exam_file(jsonl)
    assert len(questions) == 2 and [q["id"] for q in questions] == ["exam.jsonl:1", "exam.jsonl:4"]
    assert problems[0].startswith(f"{jsonl}:2: invalid JSON") and problems[1].startswith(
        f"{jsonl}:3: field 'answer': 'Z'"
    )


# ----------------------------------------------------------------------------------------------
# the harness


@pytest.mark.slow
def test_no_evaluate_py_shadows_the_evaluate_package():
    assert not (REPO_ROOT / "evaluate.py").exists()
    proc = subprocess.run(
        [sys.executable, "-c", "import evaluate, lm_eval.api.metrics; print(evaluate.__file__)"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env=OFFLINE,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "site-packages" in proc.stdout and str(REPO_ROOT / "evaluate") not in proc.stdout


@pytest.fixture(scope="module")
def loaded_base(tiny_base):
    from utils.model import loading

    tokenizer, model, _ = loading.load_tokenizer_and_model(tiny_base, use_lora=False)
    return tokenizer, model


def test_harness_accuracy_matches_option_log_likelihoods_computed_here(loaded_base):
    import torch
    from lm_eval.tasks import TaskManager

    tokenizer, model = loaded_base
    tm = TaskManager(include_path=str(benchmark.CONFIG_DIR), include_defaults=False)
    results = benchmark.run_tasks(
        model, tokenizer, [benchmark.exam_task()], tm, limit=20, batch_size=8, log_samples=True
    )
    samples = sorted(results["samples"]["kb-mcq"], key=lambda s: s["doc_id"])
    docs = [
        json.loads(line)
        for line in (REPO_ROOT / "data" / "kb_mcq" / "test.json").read_text(encoding="utf-8").splitlines()[:20]
    ]
    assert len(samples) == 20

    correct = 0
    for doc, sample in zip(docs, samples):
        # the CMMLU / C-Eval prompt, written out here; each option letter scored after "答案："
        prompt = "以下是关于医学知识的单项选择题，请直接给出正确答案的选项。\n\n" + doc["question"] + "\n"
        prompt += "".join(f"{letter}. {option}\n" for letter, option in zip("ABCD", doc["options"])) + "答案："
        context = tokenizer(prompt).input_ids
        scores = []
        for letter in "ABCD":
            ids = tokenizer(prompt + " " + letter).input_ids
            assert ids[: len(context)] == context
            with torch.inference_mode():
                logprobs = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1)
            scores.append(sum(float(logprobs[i - 1, ids[i]]) for i in range(len(context), len(ids))))
        harness = [float(r[0]) for r in sample["filtered_resps"]]
        assert harness == pytest.approx(scores, abs=1e-3)
        correct += max(range(4), key=lambda i: scores[i]) == "ABCD".index(doc["answer"])
    assert results["results"]["kb-mcq"]["acc,none"] == pytest.approx(correct / 20)
    assert results["n-samples"]["kb-mcq"]["effective"] == 20


def test_groups_get_a_row_of_their_own(loaded_base, tmp_path, monkeypatch):
    """A group (as medical-zh is) reaches the table with its pooled accuracy and its questions counted."""
    from lm_eval.tasks import TaskManager

    (tmp_path / "group.yaml").write_text(
        "group: kb-group\ntask:\n  - kb-mcq\naggregate_metric_list:\n"
        "  - metric: acc\n    aggregation: mean\n    weight_by_size: true\n"
    )
    monkeypatch.chdir(REPO_ROOT)  # the YAML's data_files are relative to the repository root
    tm = TaskManager(include_path=[str(benchmark.CONFIG_DIR), str(tmp_path)], include_defaults=False)
    tokenizer, model = loaded_base
    rows = benchmark.accuracies(benchmark.run_tasks(model, tokenizer, ["kb-group"], tm, limit=8))
    assert rows["kb-group"]["n"] == rows["kb-mcq"]["n"] == 8
    assert rows["kb-group"]["acc"] == rows["kb-mcq"]["acc"] and rows["kb-group"]["stderr"] == pytest.approx(
        rows["kb-mcq"]["stderr"]
    )


def test_medical_zh_group_names_real_harness_tasks():
    from lm_eval.tasks import TaskManager

    tm = TaskManager(include_path=str(benchmark.CONFIG_DIR))
    assert "medical-zh" in tm.all_groups and "kb-mcq" in tm.all_tasks
    import yaml

    group = yaml.safe_load((benchmark.CONFIG_DIR / "medical_zh.yaml").read_text(encoding="utf-8"))
    assert set(group["task"]) <= set(tm.all_tasks)


@pytest.mark.slow
def test_hub_tasks_skip_in_one_line_offline_and_exam_file_bad_rows(tmp_path):
    good = {"question": "高血压首选哪种检查？", "options": ["心电图", "血压测量", "胃镜", "脑电图"], "answer": "B"}
    exam = write_jsonl(tmp_path / "my_exam.jsonl", [good, {**good, "answer": "E"}, good, good])
    args = [
        sys.executable,
        str(REPO_ROOT / "benchmark.py"),
        "--tasks",
        "medical-zh",
        "--exam_file",
        str(exam),
        "--output_dir",
        str(tmp_path / "out"),
        "--batch_size",
        "4",
    ]
    proc = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, env=OFFLINE)
    assert proc.returncode == 0, proc.stderr[-3000:]
    skip_lines = [l for l in proc.stderr.splitlines() if "medical-zh" in l]
    assert skip_lines == [
        "medical-zh: skipped: needs the Hugging Face hub (haonan-li/cmmlu, ceval/ceval-exam), which cannot be reached"
    ]
    assert f"{exam}:2: field 'answer': 'E'" in proc.stderr
    summary = json.loads((tmp_path / "out" / "benchmark.json").read_text())
    assert summary["accuracy"]["base"]["exam-my_exam"]["n"] == 3  # the rest is scored
    assert summary["exam_files"]["exam-my_exam"]["rows_left_out"][0].startswith(f"{exam}:2:")
    assert "base\texam-my_exam\tacc " in proc.stdout

    proc = subprocess.run(args + ["--on_bad_row", "error"], cwd=tmp_path, capture_output=True, text=True, env=OFFLINE)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {exam}:2: field 'answer': 'E'")


def test_hub_reachable_respects_offline_switches(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert benchmark.hub_reachable() is False
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", "https://127.0.0.1:9")  # nothing listens on the discard port
    assert benchmark.hub_reachable(timeout=1) is False


@pytest.mark.slow
def test_benchmark_script_scores_base_and_adapter_on_the_whole_exam(tiny_base, trained_adapter, tmp_path):
    env = {**OFFLINE, "LORA_WEIGHTS": f"tuned={trained_adapter}", "OUT_DIR": str(tmp_path / "bench")}
    proc = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "benchmark.sh"), "--batch_size", "32"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "bench"
    summary = json.loads((out / "benchmark.json").read_text())
    n_test = len((REPO_ROOT / "data" / "kb_mcq" / "test.json").read_text(encoding="utf-8").splitlines())
    for model in ("base", "tuned"):
        row = summary["accuracy"][model]["kb-mcq"]
        assert row["n"] == n_test
        harness = json.loads((out / model / "results.json").read_text())["results"]["kb-mcq"]
        assert harness["acc,none"] == row["acc"] and harness["acc_stderr,none"] == row["stderr"]
    base = summary["accuracy"]["base"]["kb-mcq"]
    assert abs(base["acc"] - 0.25) < 3 * base["stderr"]  # a random-weight model answers at chance
    table = (out / "benchmark.md").read_text(encoding="utf-8")
    assert "| task (questions) | base | tuned |" in table and f"kb-mcq ({n_test})" in table
    assert (out / "benchmark.png").read_bytes()[:4] == b"\x89PNG" and "<table>" in (out / "benchmark.html").read_text()
