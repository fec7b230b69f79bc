"""cMeKG import: the restricted unpickler, every cleaning rule, the entity filters, and the installed package."""

import os
import pickle
import sys
from collections import Counter

import pytest

from utils import cmekg
from utils.knowledge import NOT_TREATMENT_PHRASES, TREATMENT_FIELDS, validate_record


class Payload:
    """Unpickling this would call os.getcwd (a stand-in for any code a pickle can run)."""

    def __reduce__(self):
        return (os.getcwd, ())


# ============================================================================ restricted unpickler


def test_restricted_unpickler_loads_plain_data():
    data = {"甲病": {"常见症状": ["发热", "咳嗽"], "就诊科室": ["内科"]}, "n": [1, 2.5, None, True, ("t",)]}
    for protocol in range(0, pickle.HIGHEST_PROTOCOL + 1):
        assert cmekg.restricted_loads(pickle.dumps(data, protocol=protocol)) == data


@pytest.mark.parametrize("payload", [Payload(), Counter(a=1), os.getcwd], ids=["reduce", "class", "function"])
def test_restricted_unpickler_refuses_every_global(tmp_path, payload):
    blob = pickle.dumps({"甲病": {"常见症状": [payload]}})
    with pytest.raises(pickle.UnpicklingError, match=r"refused to load global \S+: only plain data"):
        cmekg.restricted_loads(blob)
    path = tmp_path / "cmekg.pkl"
    path.write_bytes(blob)
    with pytest.raises(cmekg.CmekgError, match="refused to load global"):
        cmekg.load_graph(str(path))


def test_load_graph_checks_the_shape(tmp_path):
    path = tmp_path / "cmekg.pkl"
    path.write_bytes(pickle.dumps(["not", "a", "dict"]))
    with pytest.raises(cmekg.CmekgError, match="expected a dict of entities, got list"):
        cmekg.load_graph(str(path))


# ============================================================================ cleaning rules, one case each


def clean(raw, key="相关症状", own=("甲病",), not_symptoms=()):
    notes = []
    kept = cmekg.clean_values(raw, key, set(own), lambda rule, value: notes.append((rule, value)), set(not_symptoms))
    return kept, {rule for rule, _ in notes}


RULE_CASES = [
    # (rule, field, raw values, kept)
    ("split", "相关症状", ["恶心、呕吐；腹痛"], ["恶心", "呕吐", "腹痛"]),
    ("split", "相关症状", ["畏光和流泪", "流泪"], ["畏光", "流泪"]),
    ("trailing_deng", "相关症状", ["心悸等", "乏力及"], ["心悸", "乏力"]),
    ("sentence_punct", "相关症状", ["体力减退,畏寒", "发热。"], []),
    ("bad_start", "病因", ["可因直接暴力所致", "常染色体遗传", "或由感染", "以头昏为主", "及时"], []),
    ("bad_start", "相关症状", ["有大量玻璃体溢出", "为慢性进行性脊髓压迫症状", "头晕"], ["头晕"]),
    ("clause", "相关症状", ["如恶心", "患者体温稍升高", "伴或不伴咳嗽"], []),
    ("code", "检查", ["S20140002", "C2"], []),
    ("too_long", "并发症", ["双下肢末端慢性复发性蓝红色紫色斑片样皮损"], []),
    ("too_short", "发病部位", ["上", "肾"], []),
    ("header", "检查", ["实验室检查", "辅助检查", "血常规"], ["血常规"]),
    ("header", "病因", ["病因不明", "遗传因素"], ["遗传因素"]),
    ("own_name", "并发症", ["甲病", "肺炎"], ["肺炎"]),
    ("non_symptom", "相关症状", ["肺炎", "溃疡病", "肿瘤", "结核分枝杆菌", "感染", "发热"], ["发热"]),
    ("non_symptom", "相关症状", ["乙病", "咳嗽"], ["咳嗽"]),  # another disease of the KB
    ("non_symptom", "相关症状", ["侧胸壁", "淡褐色", "椭圆形", "刺激期", "感觉", "胸痛"], ["胸痛"]),  # a site, colour, shape...
    ("descriptor", "相关症状", ["多数无症状", "大小不一", "病程缓慢", "早期不易察觉", "头痛"], ["头痛"]),
    ("near_duplicate", "药物治疗", ["β 受体阻滞剂", "β—受体阻滞剂", "β-受体阻滞剂"], ["β 受体阻滞剂"]),
    ("near_duplicate", "相关症状", ["心悸", "心悸等"], ["心悸"]),
    ("department_synonym", "所属科室", ["心内科", "耳鼻喉科", "呼吸内科"], ["心血管内科", "耳鼻咽喉科", "呼吸内科"]),
    ("department_unknown", "所属科室", ["门诊", "男性", "儿科"], ["儿科"]),
]


@pytest.mark.parametrize("rule, key, raw, kept", RULE_CASES, ids=[f"{c[0]}-{c[1]}" for c in RULE_CASES])
def test_cleaning_rule(rule, key, raw, kept):
    got, rules = clean(raw, key, not_symptoms=("乙病", "侧胸壁"))
    assert got == kept
    assert rule in rules


def test_every_rule_has_a_case():
    assert {c[0] for c in RULE_CASES} | {"prevention_moved"} == set(cmekg.RULES)


def test_nfkc_before_everything():
    got, _ = clean(["ＣＴ检查", "（MRI）检查"], key="检查")
    assert got == ["CT检查", "(MRI)检查"]


def test_prevention_listed_as_treatment_moves_to_prevention():
    fields = {"药物治疗": ["狂犬病疫苗", "镇静药物"], "辅助治疗": ["暴露后预防处置"], "预防": ["远离蝙蝠"]}
    notes = []
    cmekg.split_prevention(fields, lambda rule, value: notes.append(rule))
    assert fields == {"药物治疗": ["镇静药物"], "预防": ["远离蝙蝠", "狂犬病疫苗", "暴露后预防处置"]}
    assert notes == ["prevention_moved", "prevention_moved"]


# ============================================================================ entity filters on a small graph

GRAPH = {
    "甲病": {"就诊科室": ["心内科"], "常见症状": ["胸痛、胸闷", "心悸等", "乙病"], "治疗": ["药物治疗", "手术治疗"],
             "相关药物": ["某某片"], "药物治疗": ["阿司匹林", "流感疫苗"], "别称": ["甲症"]},
    "乙病": {"就诊科室": ["呼吸科"], "常见症状": ["咳嗽", "咳痰"], "多发群体": ["老年人"], "常见病因": ["病因不明", "吸烟"]},
    "丙病": {"就诊科室": ["门诊"], "常见症状": ["发热", "头痛"]},
    "丁病": {"就诊科室": ["儿科"], "常见症状": ["发热"]},
    "胸痛": {"就诊科室": ["心内科"], "常见症状": ["胸闷", "心悸"]},  # a symptom page, listed as a symptom below
    "某某片": {"成份": ["阿司匹林"], "OTC类型": ["甲类OTC"], "适应症": ["头痛"]},
    "高血压": {"就诊科室": ["心内科"], "常见症状": ["头痛", "头晕"], "别称": ["原发性高血压"]},
    **{f"病{i}": {"就诊科室": ["内科"], "常见症状": ["胸痛", "乏力"]} for i in range(5)},
}


def test_import_maps_cleans_filters_and_reports():
    records, report = cmekg.import_diseases(GRAPH, own_names={"原发性高血压"})
    by_name = {r["中心词"]: r for r in records}
    assert by_name["甲病"] == {"中心词": "甲病", "所属科室": ["心血管内科"], "相关症状": ["胸痛", "胸闷", "心悸"],
                              "药物治疗": ["阿司匹林"], "预防": ["流感疫苗"]}  # no 治疗 headers, no 相关药物 brands
    assert by_name["乙病"]["所属科室"] == ["呼吸内科"] and by_name["乙病"]["多发人群"] == ["老年人"]
    assert by_name["乙病"]["病因"] == ["吸烟"]
    assert {"丙病", "丁病", "胸痛", "某某片", "高血压"}.isdisjoint(by_name)
    skipped = report.skipped
    assert skipped["drug product (not imported)"] == 1
    assert skipped["no whitelisted department after cleaning"] == 1  # 丙病
    assert skipped[f"fewer than {cmekg.MIN_SYMPTOMS} symptoms after cleaning"] == 1  # 丁病
    assert skipped["ours wins (same disease in our KB)"] == 1  # 高血压, by its alias
    assert skipped[f"a symptom page (listed as a symptom >= {cmekg.SYMPTOM_PAGE_USES} times)"] == 1  # 胸痛
    d = report.as_dict()
    assert d["rules"]["non_symptom"] >= 1 and d["rules"]["prevention_moved"] == 1 and d["rules"]["header"] == 1
    assert d["per_department"] == {"内科": 5, "心血管内科": 1, "呼吸内科": 1}
    assert d["per_field"]["相关症状"]["kept"] < d["per_field"]["相关症状"]["raw"]
    markdown = cmekg.report_markdown(report)
    assert "| `prevention_moved` | 1 |" in markdown and "| 心血管内科 | 1 |" in markdown
    entries = cmekg.to_entries(records, "test")
    assert {e.source for e in entries} == {"cmekg"} and entries[0].get("所属科室")


# ============================================================================ the installed package


@pytest.fixture(scope="module")
def installed():
    pytest.importorskip("openai")  # keeps the module importable without extras; the real check is next
    try:
        source = cmekg.find_pickle()
    except cmekg.CmekgError as e:
        pytest.skip(str(e))
    records, report = cmekg.import_installed(set())
    return source, records, report


def test_installed_import_is_large_clean_and_valid(installed):
    source, records, report = installed
    assert len(source.sha256) == 64 and source.version
    assert report.source["sha256"] == source.sha256
    assert len(records) >= 1500
    assert "pyCMeKG" not in sys.modules  # read as data; the package (which unpickles unrestricted) is never imported
    for r in records:
        assert validate_record(r, "disease", r["中心词"]) == []
        for key in TREATMENT_FIELDS:
            assert not [v for v in r.get(key, []) if any(p in v for p in NOT_TREATMENT_PHRASES)]
        assert not [s for s in r["相关症状"] if "无症状" in s or s.endswith("等") or s == r["中心词"]]
        assert set(r["所属科室"]) <= set(cmekg.DEPARTMENTS)
    keys = [cmekg.near_key(v) for r in records for v in r["相关症状"]]
    assert len(records) and len(keys) > 10 * len(records)
    assert all(len({cmekg.near_key(v) for v in r["相关症状"]}) == len(r["相关症状"]) for r in records)


def test_report_cli_writes_the_same_report_the_build_commits(installed, tmp_path):
    import subprocess

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    stem = tmp_path / "report"
    result = subprocess.run([sys.executable, "-m", "utils.cmekg", "report", str(stem)], cwd=repo, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    committed = os.path.join(repo, "data", "llama_data.cmekg_import.md")
    assert (tmp_path / "report.md").read_text(encoding="utf-8") == open(committed, encoding="utf-8").read()
