"""The kb-mcq exam measures knowledge: options of the asked kind (real garbage from cMeKG is refused),
plausible distractors (same department or organ) verified absent from the entity and its aliases, and
answer-blind shortcuts near chance on the test split of a real build (issue #19, point 8)."""

import json
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

from utils.knowledge.exam import LETTERS, answer_blind_scores, build_exam, option_problem
from utils.knowledge.schema import Entry, split_entities


def disease(name, dept, site=(), aliases=(), **fields):
    values = {
        "所属科室": [dept],
        **({"发病部位": list(site)} if site else {}),
        **{k: list(v) for k, v in fields.items()},
    }
    return Entry("disease", name, values, "x.jsonl", 1, aliases=tuple(aliases))


# ----------------------------------------------------------------------------------------------
# what an option may be


@pytest.mark.parametrize(
    "field, value, why",
    [
        ("相关症状", "轻者头痛", "fragment"),  # issue: fragments
        ("相关症状", "第XI", "fragment"),  # Roman numerals left by a split
        ("相关症状", "反复", "generic words only"),
        ("相关症状", "流泪及眼痛", "punctuation or two things in one"),  # 及 not split
        ("相关症状", "气胸", "a disease, not a symptom"),  # a disease name (in the KB)
        ("相关症状", "心肌梗死", "a disease, not a symptom"),
        ("相关症状", "撞击试验", "a lab value, test or descriptor, not a symptom"),
        ("相关症状", "蛋白尿", "a lab value, test or descriptor, not a symptom"),
        ("相关症状", "表面光滑", "a lab value, test or descriptor, not a symptom"),
        ("相关症状", "血钙", "a lab value, not a symptom"),
        ("相关症状", "腹部", "a body site, not a symptom"),
        ("相关症状", "智能", "no abnormality named: not a symptom"),  # 心理障碍's "symptom" in cMeKG
        ("相关症状", "骨间肌", "no abnormality named: not a symptom"),  # 尺神经损伤's
        ("相关症状", "病史", "no abnormality named: not a symptom"),
        ("相关症状", "后期白斑对于热刺激性食物特别敏感", "length"),  # 食管白斑 in cMeKG
        ("相关症状", "发热", "generic: held by many entries"),  # 1,111 cMeKG diseases list it
        ("相关症状", "理损害", "held by one entry only"),  # a cut 心理损害
        ("病因", "病因尚不清楚", "fragment"),
        ("病因", "血源性传播", "a route, a history or a heading, not a cause"),  # 性病's 病因 in cMeKG
        ("并发症", "流感疫苗", "prevention"),
    ],
)
def test_options_of_the_wrong_kind_or_garbage_are_refused(field, value, why):
    df = {"发热": 1111, "理损害": 1}.get(value, 3)
    assert option_problem(field, value, df, diseases=frozenset({"气胸", "心肌梗死"}), sites=frozenset({"腹部"})) == why


@pytest.mark.parametrize(
    "field, value",
    [
        ("相关症状", "呼吸困难"),
        ("相关症状", "颈强直"),
        ("相关症状", "口角歪斜"),
        ("相关症状", "牙龈出血"),
        ("病因", "维生素D不足"),
        ("并发症", "肠梗阻"),
    ],
)
def test_options_of_the_asked_kind_are_kept(field, value):
    assert option_problem(field, value, 3, diseases=frozenset({"气胸"}), sites=frozenset({"腹部"})) is None


# ----------------------------------------------------------------------------------------------
# plausible distractors, verified absent


def small_kb():
    asked = disease(
        "偏头痛",
        "神经内科",
        site=["头部"],
        aliases=["血管性头痛"],
        相关症状=["搏动性头痛", "畏光", "视觉先兆"],
        病因=["动脉粥样硬化"],
    )
    entries = [
        asked,
        disease("血管性头痛", "神经内科", 相关症状=["眼眶胀痛"]),  # an unmerged alias twin: its values are true
        disease("三叉神经痛", "神经内科", 相关症状=["面部电击样疼痛", "流涎", "眼眶胀痛"], 病因=["动脉硬化"]),
        disease("帕金森病", "神经内科", 相关症状=["静止性震颤", "肌强直", "视觉先兆减弱"], 病因=["黑质变性"]),
        disease("脑膜瘤", "神经外科", site=["头部"], 相关症状=["癫痫发作", "嗅觉减退", "偏瘫"], 病因=["电离辐射"]),
        disease("重症肌无力", "神经内科", 相关症状=["眼睑下垂", "复视", "咀嚼无力"], 病因=["胸腺增生"]),
        disease(
            "银屑病", "皮肤科", 相关症状=["红色斑块", "银白色鳞屑", "点状出血"], 病因=["链球菌感染"]
        ),  # other dept, organ
        disease("湿疹", "皮肤科", 相关症状=["剧烈瘙痒", "渗液", "苔藓样变"], 病因=["过敏体质"]),
        disease(
            "某皮肤病", "皮肤科", 相关症状=["搏动性头痛", "畏光", "视觉先兆"], 病因=["动脉粥样硬化"]
        ),  # attests the keys
    ]
    for e in entries:  # every value held twice: attested (MIN_DF), not an import fragment
        e.fields["并发症"] = ["某并发症" + e.name]
    return asked, entries


def test_value_distractors_come_from_the_same_department_or_organ_and_are_absent_from_the_alias_group():
    asked, entries = small_kb()
    twin = entries + [
        disease(e.name + "乙", e.get("所属科室")[0], **{k: v for k, v in e.fields.items() if k != "所属科室"})
        for e in entries[2:]
    ]  # every value attested by two entries
    split_of = {e.name: "test" for e in twin}
    questions = [
        q
        for q in build_exam(twin, split_of, 1, max_questions=None)["test"]
        if q["entity"] == "偏头痛" and q["style"] == "fact" and q["field"] == "相关症状"
    ]
    assert questions
    options = {o for q in questions for o in q["options"]} - set(asked.get("相关症状"))
    assert options and options <= {
        "面部电击样疼痛",
        "流涎",
        "静止性震颤",
        "肌强直",
        "癫痫发作",
        "嗅觉减退",
        "偏瘫",
        "眼睑下垂",
        "复视",
        "咀嚼无力",
    }  # neurology or the head; no skin
    assert "眼眶胀痛" not in options  # held by 血管性头痛, an alias of 偏头痛
    assert "视觉先兆减弱" not in options  # contains a fact
    causes = {
        o
        for q in build_exam(twin, split_of, 1, max_questions=None)["test"]
        if q["entity"] == "偏头痛" and q["field"] == "病因"
        for o in q["options"]
    }
    assert "动脉硬化" not in causes  # a paraphrase of 动脉粥样硬化 (shares its characters)


def test_a_key_that_repeats_the_entity_name_is_not_asked():
    entries = [disease("小儿肠套叠", "儿科", 相关症状=["儿童肠套叠", "阵发性哭闹", "果酱样便"])]
    entries += [
        disease(f"儿科病{i}", "儿科", 相关症状=["阵发性哭闹", "果酱样便", "儿童肠套叠", f"咳嗽{i}号", f"皮疹{i}号"])
        for i in range(8)
    ]
    split_of = {e.name: "test" for e in entries}
    keys = {
        q["options"][LETTERS.index(q["answer"])]
        for q in build_exam(entries, split_of, 1, max_questions=None)["test"]
        if q["entity"] == "小儿肠套叠"
    }
    assert "儿童肠套叠" not in keys


def test_reverse_distractors_are_same_department_diseases_of_the_split_without_the_shown_values():
    asked, entries = small_kb()
    twin = entries + [
        disease(e.name + "乙", e.get("所属科室")[0], **{k: v for k, v in e.fields.items() if k != "所属科室"})
        for e in entries
    ]
    split_of = {e.name: "test" for e in twin}
    split_of["重症肌无力"] = "train"
    by_name = {e.name: e for e in twin}
    reverse = [q for q in build_exam(twin, split_of, 1, max_questions=None)["test"] if q["style"] == "reverse"]
    assert reverse
    for q in reverse:
        entry = by_name[q["entity"]]
        shown = [v for v in entry.get(q["field"]) if v in q["question"]]
        for name in q["options"]:
            if name == entry.name:
                continue
            other = by_name[name]
            assert split_of[name] == "test" and name not in entry.names and entry.name not in other.names
            assert set(other.get("所属科室")) & set(entry.get("所属科室")) or set(other.get("发病部位")) & set(
                entry.get("发病部位")
            )
            assert not set(other.get(q["field"])) & set(shown)


# ----------------------------------------------------------------------------------------------
# answer-blind shortcuts


def test_answer_blind_scores_count_each_shortcut_and_split_ties():
    questions = [
        {
            "question": "下列哪一项是甲病的常见症状？",
            "options": ["咳", "咳嗽咳痰", "腹泻腹痛", "皮疹皮疹"],
            "answer": "A",
        },
        {"question": "下列哪一项是乙病的常见症状？", "options": ["头晕", "心悸", "乙病样皮疹", "多尿"], "answer": "C"},
    ]
    train = [{"instruction": "咳嗽咳痰多久了？", "input": "", "output": "咳嗽咳痰，头晕"}]
    scores = answer_blind_scores(questions, train)
    # q1: 咳 is the shortest and the most frequent (4 occurrences); three options tie as longest, all four on
    # overlap (none shares a character with the stem). q2: the key is the longest and shares 乙, 病 with the stem.
    assert scores["shortest"] == pytest.approx((1 + 0) / 2)
    assert scores["longest"] == pytest.approx((0 + 1) / 2)
    assert scores["most_frequent_in_training"] == pytest.approx((1 + 0) / 2)
    assert scores["most_overlap_with_stem"] == pytest.approx((1 / 4 + 1) / 2)
    assert scores["same_letter"] == 0.5


# ----------------------------------------------------------------------------------------------
# a real build: the test split scores near chance under every shortcut


@pytest.fixture(scope="module")
def real_build(tmp_path_factory):
    from utils.knowledge.cmekg import CmekgError, find_pickle, load_all

    try:
        find_pickle()
    except CmekgError:
        pytest.skip("pycmekg is not installed")
    out = tmp_path_factory.mktemp("exam") / "llama_data.json"
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "build_dataset.py"), "--output_path", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    train = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    entries, _ = load_all(None)
    split_of = split_entities(entries, 42, 0.1, 0.1)
    return entries, split_of, train, build_exam(entries, split_of, 42, train_records=train)


@pytest.mark.slow
def test_answer_blind_shortcuts_score_near_chance_on_the_test_split_of_a_real_build(real_build):
    entries, split_of, train, exam = real_build
    scores = answer_blind_scores(exam["test"], train)
    assert len(exam["test"]) >= 800, len(exam["test"])
    assert all(s <= 0.35 for s in scores.values()), scores
    by_name = {e.name: e for e in entries}
    for q in exam["test"]:  # every option of a fact question is of the asked kind; entities stay in their split
        assert split_of[q["entity"]] == "test"
        if q["style"] == "fact":
            assert q["field"] not in ("所属科室", "检查", "药物治疗", "辅助治疗", "发病部位")
            entry = by_name[q["entity"]]
            for o in q["options"]:
                assert len(o) <= 12 and not any(c in o for c in "，。；：,.;:")
                assert o not in entry.names
