"""utils/knowledge/review.py: the review sheet holds each sampled record beside its entry, is reproducible, escapes."""

import os
import re

import pytest

from utils.knowledge.review import CATEGORIES, sample_records, write_review
from utils.knowledge.schema import REPO_ROOT, Entry

OURS = Entry(
    kind="disease",
    name="急性阑尾炎",
    fields={"所属科室": ["普外科"], "相关症状": ["转移性右下腹痛", "恶心", "发热"], "药物治疗": ["头孢曲松", "甲硝唑"]},
    path=os.path.join(REPO_ROOT, "data", "knowledge", "diseases.jsonl"),
    line=12,
    source="ours",
)
SPLEEN = Entry(
    kind="disease",
    name="脾破裂",
    fields={
        "所属科室": ["外科"],
        "发病部位": ["脾脏"],
        "相关症状": ["休克", "压痛", "左上腹疼痛", "疼痛", "紧张", "腹痛"],
    },
    path="pycmekg-0.2.5",
    line=0,
    source="cmekg",
)
ODD = Entry(
    kind="disease",
    name="<b>病",
    fields={"所属科室": ["内科"], "相关症状": ["a<script>alert(1)</script>", "x&y"]},
    path="pycmekg-0.2.5",
    line=0,
    source="cmekg",
)


def records():
    out = [
        {
            "id": f"{i:04x}",
            "style": "triage",
            "entity": "脾破裂",
            "source": "cmekg",
            "split": "train",
            "instruction": f"最近总是休克、左上腹疼痛、疼痛{i}，去医院应该看什么科？",
            "input": "",
            "output": "休克、左上腹疼痛、疼痛同时出现时要考虑脾破裂，可以先挂外科，由医生进一步检查。",
            "facts": [
                {"field": "中心词", "value": "脾破裂", "source": "cmekg"},
                {"field": "所属科室", "value": "外科", "source": "cmekg"},
            ],
        }
        for i in range(30)
    ]
    out.append(
        {
            "id": "ours1",
            "style": "single_fact",
            "entity": "急性阑尾炎",
            "source": "ours",
            "split": "test",
            "instruction": "急性阑尾炎用什么药？",
            "input": "",
            "output": "常用头孢曲松、甲硝唑。",
            "facts": [
                {"field": "药物治疗", "value": "头孢曲松", "source": "ours"},
                {"field": "药物治疗", "value": "甲硝唑", "source": "ours"},
            ],
        }
    )
    out.append(
        {
            "id": "pair1",
            "style": "comparison",
            "entity": ["急性阑尾炎", "脾破裂"],
            "source": ["ours", "cmekg"],
            "split": "valid",
            "instruction": "急性阑尾炎和脾破裂的主要症状一样吗？",
            "input": "",
            "output": "不一致。急性阑尾炎为发热，脾破裂为休克。",
            "facts": [
                {"field": "相关症状", "value": "发热", "source": "ours", "entity": "急性阑尾炎"},
                {"field": "相关症状", "value": "休克", "source": "cmekg", "entity": "脾破裂"},
            ],
        }
    )
    return out


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def test_every_record_sits_beside_its_entry_with_quoted_values_marked(tmp_path):
    md, page = write_review(records(), [OURS, SPLEEN], n=len(records()), seed=7, out_stem=str(tmp_path / "sheet"))
    text, html_text = read(md), read(page)
    for r in records():
        assert r["instruction"] in text and r["output"] in text and r["id"] in html_text
    assert text.count("- [ ] no defect") == len(records()) and html_text.count("<section") == len(records())
    assert html_text.count('type="checkbox"') == len(records()) * len(CATEGORIES)
    assert "ours, data/knowledge/diseases.jsonl:12" in text and "cmekg, pycmekg-0.2.5" in text
    assert "| 药物治疗 | **头孢曲松**、**甲硝唑** |" in text
    assert "<mark>外科</mark>" in html_text and "<u>休克</u>" in html_text  # a fact / stated in the question only
    # the comparison marks each entity's own fact, not the other's
    section = text[text.index("`pair1`") :]
    assert "| 相关症状 | 转移性右下腹痛、恶心、**发热** |" in section and "**休克**" in section
    assert "http" not in html_text.replace("http-equiv", "")  # nothing fetched


def test_the_sample_is_seeded_and_independent_of_record_order(tmp_path):
    a = write_review(records(), [OURS, SPLEEN], n=5, seed=7, out_stem=str(tmp_path / "a"))
    b = write_review(records()[::-1], [OURS, SPLEEN], n=5, seed=7, out_stem=str(tmp_path / "b"))
    assert read(a[0]) == read(b[0]) and read(a[1]) == read(b[1])
    assert [r["id"] for r in sample_records(records(), 5, 7)] != [r["id"] for r in sample_records(records(), 5, 8)]
    assert len(sample_records(records(), 100, 7)) == len(records())


def test_html_escapes_names_and_values(tmp_path):
    rec = {
        "id": "x",
        "style": "overview",
        "entity": "<b>病",
        "source": "cmekg",
        "split": "train",
        "instruction": "<b>病是什么？",
        "input": "",
        "output": "可表现为a<script>alert(1)</script>、x&y。",
        "facts": [{"field": "相关症状", "value": "x&y", "source": "cmekg"}],
    }
    _, page = write_review([rec], [ODD], n=1, seed=0, out_stem=str(tmp_path / "s"))
    html_text = read(page)
    assert "<script>alert" not in html_text and "&lt;script&gt;alert(1)&lt;/script&gt;" in html_text
    assert "<mark>x&amp;y</mark>" in html_text and "&lt;b&gt;病" in html_text and "<b>病" not in html_text
    assert len(re.findall(r"<script>", html_text)) == 1  # only the sheet's own tally script


def test_a_record_without_its_entry_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="脾破裂"):
        write_review(records(), [OURS], n=len(records()), seed=7, out_stem=str(tmp_path / "s"))
