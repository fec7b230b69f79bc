"""score.py: metric values against independent computations, reports, reference-answer loss."""

import json
import math
import subprocess
import sys
from collections import Counter

import pytest
from conftest import REPO_ROOT, write_jsonl

import score
from utils.eval import loss, metrics

# Fixed Chinese pairs (reference, prediction); the corpus shares n-grams of every order up to 4 at
# character and at word level, so BLEU needs no smoothing and nltk's unsmoothed value is the reference.
PAIRS = [
    ("高血压患者需要低盐饮食，规律服药。", "高血压患者应该低盐饮食，按时规律服药。"),
    ("糖尿病患者应控制饮食并监测血糖。", "糖尿病患者需要控制饮食，监测血糖。"),
    ("急性阑尾炎常见转移性右下腹痛。", "阑尾炎常见右下腹痛和发热。"),
    ("患者应按时服用降压药并定期复查血压。", "患者应按时服用降压药，定期复查。"),
]
# jieba's segmentation of the same texts, written out by hand (checked against word_tokens below).
WORDS = [
    ("高血压 患者 需要 低盐 饮食 ， 规律 服药 。", "高血压 患者 应该 低盐 饮食 ， 按时 规律 服药 。"),
    ("糖尿病 患者 应 控制 饮食 并 监测 血糖 。", "糖尿病 患者 需要 控制 饮食 ， 监测 血糖 。"),
    ("急性 阑尾炎 常见 转移性 右 下 腹痛 。", "阑尾炎 常见 右 下 腹痛 和 发热 。"),
    ("患者 应 按时 服用 降压药 并 定期 复查 血压 。", "患者 应 按时 服用 降压药 ， 定期 复查 。"),
]


def ngram_f1(ref: list[str], hyp: list[str], n: int) -> float:
    r = Counter(tuple(ref[i : i + n]) for i in range(len(ref) - n + 1))
    h = Counter(tuple(hyp[i : i + n]) for i in range(len(hyp) - n + 1))
    overlap = sum((r & h).values())
    if not overlap:
        return 0.0
    p, q = overlap / sum(h.values()), overlap / sum(r.values())
    return 2 * p * q / (p + q)


def lcs_f1(ref: list[str], hyp: list[str]) -> float:
    table = [[0] * (len(hyp) + 1) for _ in range(len(ref) + 1)]
    for i, a in enumerate(ref):
        for j, b in enumerate(hyp):
            table[i + 1][j + 1] = table[i][j] + 1 if a == b else max(table[i][j + 1], table[i + 1][j])
    lcs = table[-1][-1]
    if not lcs:
        return 0.0
    p, q = lcs / len(hyp), lcs / len(ref)
    return 2 * p * q / (p + q)


def reference_values(token_pairs: list[tuple[list[str], list[str]]]) -> dict:
    from nltk.translate.bleu_score import corpus_bleu

    refs = [[r] for r, _ in token_pairs]
    hyps = [h for _, h in token_pairs]
    n = len(token_pairs)
    return {
        "bleu4": 100 * corpus_bleu(refs, hyps),
        "rouge1": sum(ngram_f1(r, h, 1) for r, h in token_pairs) / n,
        "rouge2": sum(ngram_f1(r, h, 2) for r, h in token_pairs) / n,
        "rougeL": sum(lcs_f1(r, h) for r, h in token_pairs) / n,
    }


def test_word_tokens_are_jieba_segmentation_without_spaces():
    for (ref, hyp), (wref, whyp) in zip(PAIRS, WORDS):
        assert metrics.word_tokens(ref) == wref.split()
        assert metrics.word_tokens(hyp) == whyp.split()
    assert metrics.char_tokens("高 血\n压") == ["高", "血", "压"]


@pytest.mark.parametrize("tokenization", ["char", "word"])
def test_metrics_equal_independent_computation(tokenization):
    refs, hyps = [r for r, _ in PAIRS], [h for _, h in PAIRS]
    if tokenization == "char":
        token_pairs = [(list(r), list(h)) for r, h in PAIRS]
    else:
        token_pairs = [(r.split(), h.split()) for r, h in WORDS]
    expected = reference_values(token_pairs)
    got = metrics.text_metrics(refs, hyps)[tokenization]
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-6), name
    assert 0 < got["bleu4"] < 100 and 0 < got["rouge2"] < got["rouge1"] < 1


def test_hand_checked_values():
    same = metrics.text_metrics(["高血压患者需要低盐饮食"], ["高血压患者需要低盐饮食"])
    for tok in ("char", "word"):
        assert same[tok]["bleu4"] == pytest.approx(100)
        assert same[tok]["rouge1"] == same[tok]["rouge2"] == same[tok]["rougeL"] == 1.0
    disjoint = metrics.text_metrics(["高血压患者需要低盐饮食"], ["今天天气很好"])
    for tok in ("char", "word"):
        assert disjoint[tok]["bleu4"] == 0.0
        assert disjoint[tok]["rouge1"] == disjoint[tok]["rouge2"] == disjoint[tok]["rougeL"] == 0.0
    # 高血压 vs 高血糖, by hand: 2 of 3 characters shared (F1 2/3), 1 of 2 bigrams (F1 1/2), LCS 2 (F1 2/3)
    r = metrics.rouge(["高血压"], ["高血糖"], "char")
    assert (
        r["rouge1"] == pytest.approx(2 / 3)
        and r["rouge2"] == pytest.approx(0.5)
        and r["rougeL"] == pytest.approx(2 / 3)
    )


def test_fact_coverage_and_lengths():
    facts = [
        {"field": "症状", "value": "头痛"},
        {"field": "症状", "value": "发热"},
        {"field": "科室", "value": "神经内科"},
        {"field": "症状", "value": "头痛"},
    ]
    assert metrics.fact_coverage(facts, "常见头痛、发热。") == pytest.approx(2 / 3)
    assert metrics.fact_coverage([], "x") is None
    stats = metrics.length_stats(["一二三", "", "一 二"])
    assert stats == {"mean": pytest.approx(5 / 3), "median": 2.0, "min": 0, "max": 3, "empty": 1}


def test_score_writes_metrics_report_and_chart(tmp_path):
    records = [
        {"instruction": f"问题{i}", "input": "", "output": r, "model_output": h} for i, (r, h) in enumerate(PAIRS)
    ]
    records[0]["facts"] = [{"field": "治疗", "value": "低盐饮食"}, {"field": "治疗", "value": "手术"}]
    records.append({"instruction": "开放问题", "model_output": "答案"})  # no reference: lengths only
    path = write_jsonl(tmp_path / "answers.jsonl", records)
    score.main(predictions_file=str(path), output_dir=str(tmp_path / "eval"))
    result = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert result["records"] == 5 and result["with_reference"] == len(PAIRS)
    expected = metrics.text_metrics([r for r, _ in PAIRS], [h for _, h in PAIRS])
    assert result["char"] == pytest.approx(expected["char"]) and result["word"] == pytest.approx(expected["word"])
    assert result["fact_coverage"] == {"mean": 0.5, "records": 1}
    assert result["answer_length_chars"]["max"] == max(len(h) for _, h in PAIRS)
    report = (tmp_path / "eval" / "report.md").read_text()
    assert f"{expected['char']['bleu4']:.2f}" in report and "metrics.png" in report
    assert (tmp_path / "eval" / "metrics.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_bad_predictions_file_is_one_clear_line(tmp_path):
    path = write_jsonl(
        tmp_path / "bad.jsonl", [{"instruction": "q", "model_output": "a"}, {"instruction": "q", "output": "x"}]
    )
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "score.py"),
            "--predictions_file",
            str(path),
            "--output_dir",
            str(tmp_path / "e"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert (
        proc.stderr.strip().splitlines()[-1]
        == f"error: {path}:2: field 'model_output': missing or not a string (expected infer.py --output_file results)"
    )


def test_reference_loss_is_token_weighted_and_matches_the_model(tiny_base, tokenizer):
    import torch

    from utils.data.prompter import Prompter, tokenize_records
    from utils.model import loading

    _, model, _ = loading.load_tokenizer_and_model(tiny_base, use_lora=False)
    prompter = Prompter()
    records = [
        {"instruction": "头痛怎么办？", "output": "多休息。"},
        {"instruction": "高血压要注意什么？", "output": "低盐饮食，规律服药，定期测量血压，戒烟限酒。"},
    ]
    examples, _ = tokenize_records(tokenizer, prompter, records, 256)
    sums, counts = [], []
    with torch.inference_mode():
        for e in examples:  # the model's own mean loss on one unpadded example, times its token count
            out = model(input_ids=torch.tensor([e["input_ids"]]), labels=torch.tensor([e["labels"]]))
            n = sum(1 for l in e["labels"][1:] if l != -100)
            sums.append(float(out.loss) * n)
            counts.append(n)
    got = loss.reference_loss(model, tokenizer, prompter, records, cutoff_len=256, batch_size=2)
    assert got["tokens"] == sum(counts) and counts[0] != counts[1]
    assert got["loss"] == pytest.approx(sum(sums) / sum(counts), rel=1e-4)
    assert got["perplexity"] == pytest.approx(math.exp(got["loss"]))
    assert got["loss"] != pytest.approx((sums[0] / counts[0] + sums[1] / counts[1]) / 2, rel=1e-4)
