"""The knowledge base validator: the shipped KB passes; each kind of bad entry gets a file:line:field error."""

import json
import os
import subprocess
import sys

import pytest

from utils.knowledge.schema import (
    DEFAULT_KB_DIR,
    SCHEMA,
    KnowledgeError,
    load_knowledge,
    load_report,
    load_styles,
    resolve_kb_paths,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOOD = {"中心词": "甲病", "所属科室": ["内科"], "相关症状": ["发热"]}


def test_shipped_knowledge_base_is_valid():
    report = load_report()
    assert report.errors == []
    kinds = [e.kind for e in report.entries]
    assert kinds.count("disease") >= 150 and kinds.count("drug") >= 50
    assert len({e.name for e in report.entries}) == len(report.entries)


def test_shipped_fields_are_schema_fields():
    for entry in load_knowledge():
        allowed = set(SCHEMA[entry.kind]["required"]) | set(SCHEMA[entry.kind]["optional"])
        assert set(entry.fields) <= allowed, entry.name


def test_styles_file_loads_and_covers_every_style():
    styles = load_styles()
    assert set(styles) == {
        "single_fact",
        "overview",
        "vignette",
        "triage",
        "comparison",
        "drug_usage",
        "drug_side_effects",
        "drug_contraindication",
    }
    assert "预防" in styles["single_fact"]["fields"]  # prevention has its own questions, never treatment ones


def _write(tmp_path, lines, name="diseases.jsonl"):
    path = tmp_path / name
    path.write_text(
        "\n".join(x if isinstance(x, str) else json.dumps(x, ensure_ascii=False) for x in lines) + "\n",
        encoding="utf-8",
    )
    return path


BAD_SECOND_LINES = [
    ({**GOOD, "中心词": "乙病", "所属科室": 3}, "field '所属科室': expected a list of non-empty strings, got int"),
    ({**GOOD, "中心词": "乙病", "所属科室": "内科"}, "field '所属科室': expected a list of non-empty strings, got str"),
    (
        {**GOOD, "中心词": "乙病", "相关症状": ["咳嗽", ""]},
        "field '相关症状': expected a list of non-empty strings, got an empty string at index 1",
    ),
    (
        {**GOOD, "中心词": "乙病", "相关症状": ["咳嗽", 7]},
        "field '相关症状': expected a list of non-empty strings, got int at index 1",
    ),
    (
        {**GOOD, "中心词": "乙病", "并发症": []},
        "field '并发症': expected a list of non-empty strings, got an empty list",
    ),
    ({"所属科室": ["内科"], "相关症状": ["发热"]}, "field '中心词': missing"),
    ({**GOOD, "中心词": 5}, "field '中心词': expected a non-empty string, got int"),
    ({"中心词": "乙病", "所属科室": ["内科"]}, "field '相关症状': missing (required for a disease)"),
    ({**GOOD, "中心词": "乙病", "颜色": ["红"]}, "field '颜色': unknown field for a disease"),
    ({**GOOD, "中心词": "乙病", "并发症": ["肺炎", "肺炎"]}, "field '并发症': duplicate value(s) '肺炎'"),
    ({**GOOD, "中心词": "乙病", "病因": ["很" * 60]}, "field '病因': value"),
    (
        {**GOOD, "中心词": "乙病", "辅助治疗": ["休息", "接种流感疫苗"]},
        "field '辅助治疗': '接种流感疫苗' is prevention (疫苗), not treatment; move it to 预防",
    ),
    (
        {**GOOD, "中心词": "乙病", "药物治疗": ["狂犬病暴露后处置"]},
        "field '药物治疗': '狂犬病暴露后处置' is prevention",
    ),
    (GOOD, "field '中心词': duplicate '甲病' (first at"),
    ('{"中心词": "乙病", "所属科室": ["内科"', "not valid JSON"),
    ('["乙病"]', "expected a JSON object, got list"),
]


@pytest.mark.parametrize("bad, message", BAD_SECOND_LINES, ids=[m[:24] for _, m in BAD_SECOND_LINES])
def test_bad_entry_names_file_line_and_field(tmp_path, bad, message):
    path = _write(tmp_path, [GOOD, bad])
    report = load_report(str(path))
    assert len(report.errors) >= 1
    assert report.errors[0].startswith(f"{path}:2: ") or report.errors[0].startswith(f"{os.path.relpath(path)}:2: ")
    assert message in report.errors[0], report.errors
    with pytest.raises(KnowledgeError) as err:
        load_knowledge(str(path))
    assert message in str(err.value)


def test_drug_files_use_the_drug_schema(tmp_path):
    path = _write(
        tmp_path,
        [{"中心词": "某药", "药物分类": ["抗生素"], "适应症": ["感染"], "相关症状": ["发热"]}],
        name="drugs_extra.jsonl",
    )
    (error,) = load_report(str(path)).errors
    assert ":1: field '相关症状': unknown field for a drug" in error


def test_file_name_must_tell_the_kind(tmp_path):
    path = _write(tmp_path, [GOOD], name="stuff.jsonl")
    (error,) = load_report(str(path)).errors
    assert "cannot tell the kind" in error


def test_duplicates_across_files_and_all_errors_reported(tmp_path):
    a = _write(tmp_path, [GOOD], name="diseases_a.jsonl")
    _write(tmp_path, [{**GOOD, "所属科室": 1}, GOOD, {"中心词": "丙病"}], name="diseases_b.jsonl")
    errors = load_report(str(tmp_path)).errors
    assert any("diseases_b.jsonl:1: field '所属科室'" in e for e in errors)
    assert any(
        "diseases_b.jsonl:2: field '中心词': duplicate '甲病'" in e and "diseases_a.jsonl:1" in e for e in errors
    )
    assert any("diseases_b.jsonl:3: field '所属科室': missing" in e for e in errors)
    assert str(a) in resolve_kb_paths(str(tmp_path)) or os.path.relpath(a) in resolve_kb_paths(str(tmp_path))


def test_missing_path_is_reported(tmp_path):
    (error,) = load_report(str(tmp_path / "nope.jsonl")).errors
    assert "no such file or directory" in error


def _cli(*args, cwd=REPO):
    return subprocess.run(
        [sys.executable, "-m", "utils.knowledge.schema", "validate", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.slow
def test_cli_accepts_shipped_kb():
    result = _cli()
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: ")


@pytest.mark.slow
def test_cli_rejects_bad_file_without_traceback(tmp_path):
    path = _write(tmp_path, [GOOD, GOOD, {**GOOD, "中心词": "乙病", "所属科室": 17}])
    result = _cli(str(path), DEFAULT_KB_DIR)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert ":2: field '中心词': duplicate '甲病'" in result.stderr
    assert ":3: field '所属科室': expected a list of non-empty strings, got int" in result.stderr


def test_shipped_kb_keeps_prevention_out_of_treatment_and_symptoms_real():
    """The entries the review found unsafe or wrong are fixed (the validator now refuses the first kind)."""
    by_name = {e.name: e for e in load_knowledge()}
    for name in ("流行性感冒", "甲型病毒性肝炎", "流行性腮腺炎", "麻疹", "水痘", "带状疱疹", "宫颈癌", "狂犬病"):
        treatment = by_name[name].get("药物治疗") + by_name[name].get("辅助治疗")
        assert not [v for v in treatment if "疫苗" in v or "免疫球蛋白" in v or "接种" in v], (name, treatment)
        assert any("疫苗" in v for v in by_name[name].get("预防")), name
    assert "狂犬病免疫球蛋白" in by_name["狂犬病"].get("预防")
    assert not [e.name for e in by_name.values() if any("无症状" in s for s in e.get("相关症状"))]
    assert "乳腺纤维腺瘤" not in by_name["乳腺增生"].get("并发症")
    assert "无绝对禁忌" in by_name["肾上腺素"].get("禁忌例外")[0]
