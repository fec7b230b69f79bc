"""utils/knowledge/phrasing.py and the phrasings it and styles.json hold: variety without medical content.

The wrappers must add voices, not facts: no urgency (the old templates drew 应尽快 at random, also for
sneezing), no patient details (the old triage put 家里老人 before every disease), no names of drugs,
tests or departments, no numbers. The core question and answer stay verbatim, so the facts stay
verifiable. The styles.json sections of the single-fact, overview, comparison and drug styles must load,
use only placeholders the builder fills, and ask what their answer answers.
"""

import random
import re

import pytest

from utils.knowledge import paraphrase
from utils.knowledge.cmekg import load_all
from utils.knowledge.phrasing import ANSWER_PARTS, QUESTION_PARTS, VOICES, load_phrasings, wrap_answer, wrap_question
from utils.knowledge.schema import PLACEHOLDER, load_knowledge, load_styles, resolve_kb_paths, split_entities
from utils.knowledge.tasks import plan_tasks

URGENCY = ("尽快", "立即", "立刻", "马上", "急诊", "及时", "赶紧", "抓紧", "紧急", "120", "着急")
# who the patient is (age, sex, a relation that implies either), how long, and treatment/prevention claims
PATIENT_DETAILS = (
    "岁",
    "男",
    "女",
    "妈",
    "爸",
    "母",
    "父",
    "孩子",
    "宝宝",
    "婴",
    "老人",
    "爷",
    "奶",
    "儿子",
    "丈夫",
    "妻子",
    "老公",
    "老婆",
    "孕",
    "最近",
    "这几天",
    "天",
    "周",
    "月",
    "年",
)
CLAIMS = ("治疗", "预防", "药", "疫苗", "手术", "服用", "确诊", "严重")
NUMBER = re.compile(r"[0-9０-９一二三四五六七八九十百两]+\s*(岁|天|周|月|年|次)")


def kb_vocabulary() -> set[str]:
    """Drug names, drugs, tests, departments and symptoms of our KB: none may be part of a wrapper."""
    entries = load_knowledge()
    vocab = {e.name for e in entries if e.kind == "drug"}
    for e in entries:
        for key in ("药物治疗", "检查", "所属科室", "相关症状"):
            vocab.update(e.get(key))
    return {v for v in vocab if len(v) >= 2}


def medical_content(text: str, vocab: set[str]) -> list[str]:
    """What in a wrapper is not a voice: urgency, patient details, claims, numbers, KB vocabulary."""
    found = [w for w in URGENCY + PATIENT_DETAILS + CLAIMS if w in text]
    found += [m.group(0) for m in NUMBER.finditer(text)] + re.findall(r"\d+", text)
    found += [v for v in vocab if v in text]
    return found


def every_wrapper() -> list[str]:
    data = load_phrasings()
    texts = [t for v in VOICES for k in QUESTION_PARTS for t in data["question"][v][k]]
    texts += [t for k in ANSWER_PARTS for t in data["answer"][k]]
    return [t for t in texts if t]


# ----------------------------------------------------------------------------- the wrappers' content


def test_the_content_check_catches_the_old_templates_faults():
    vocab = kb_vocabulary()
    assert medical_content("家里老人", vocab)  # the old triage: an elderly patient for every disease
    assert medical_content("，应尽快去", vocab)  # the old vignette: urgency drawn at random
    assert medical_content("我妈妈最近，", vocab) and medical_content("孩子3岁了，", vocab)
    assert medical_content("先做个心电图，", vocab) and medical_content("建议去心血管内科，", vocab)
    assert medical_content("想问一下，", vocab) == []


def test_wrappers_carry_no_medical_content():
    vocab = kb_vocabulary()
    bad = {t: medical_content(t, vocab) for t in every_wrapper()}
    assert {t: why for t, why in bad.items() if why} == {}


def test_wrappers_hold_no_value_of_the_built_knowledge_base():
    """cMeKG lists 担心, 理解, 结合 ... as symptoms: a wrapper with one would add a symptom to the question
    ("家里人有点担心") and would be masked as a value in the pattern counts."""
    entries, _ = load_all(resolve_kb_paths("data/knowledge"), True)  # with cMeKG when pycmekg is installed
    values = {v for e in entries for vs in e.fields.values() for v in vs if len(v) >= 2} | {e.name for e in entries}
    assert {t: hits for t in every_wrapper() if (hits := [v for v in values if v in t])} == {}


def test_every_voice_of_the_openai_backend_has_wrappers():
    assert len(VOICES) == len(paraphrase.VOICES)  # patient, family, student, online in that order
    for name, prompt in zip(VOICES, paraphrase.VOICES):
        assert {"patient": "患者本人", "family": "家属", "student": "医学生", "online": "在线问诊"}[name] in prompt


# ----------------------------------------------------------------------------- wrap_question / wrap_answer


def core_questions() -> list[str]:
    """About 30 real core questions: each single-fact field, overview, comparison and drug phrasing, filled."""
    styles = load_styles()
    out = [f["questions"][0].format(name="惠普尔病") for f in styles["single_fact"]["fields"].values()]
    out += [q.format(name="小儿肠套叠") for q in styles["overview"]["questions"][:6]]
    out += [
        q.format(a="脾破裂", b="肝破裂", label="病因", dept="普外科") for q in styles["comparison"]["questions"][:4]
    ]
    out += [q.format(name="阿莫西林") for q in styles["drug_usage"]["questions"][:3]]
    out += ["医生您好，一名45岁男性这段时间咳嗽、咯血，是得了什么病？要怎么治？", "我想了解一下惠普尔病这个病。"]
    return out


def test_wrapped_question_keeps_the_core_verbatim_and_adds_no_medical_content():
    vocab = kb_vocabulary()
    for i, core in enumerate(core_questions()):
        for voice in VOICES:
            for j in range(40):
                wrapped = wrap_question(core, random.Random(f"{i}:{voice}:{j}"), voice=voice)
                assert core.rstrip("。") in wrapped
                head, tail = wrapped.split(core.rstrip("。"), 1)
                assert medical_content(head + tail.lstrip("。"), vocab) == [], wrapped


def test_wrapped_answer_keeps_the_core_verbatim():
    answer = "惠普尔病的常见症状有腹泻、体重减轻、关节痛等。"
    for j in range(300):
        wrapped = wrap_answer(answer, random.Random(j))
        assert answer in wrapped
        head, tail = wrapped.split(answer)
        assert medical_content(head + tail, kb_vocabulary()) == []


def test_wrappers_are_deterministic_given_the_rng():
    cores = core_questions()
    first = [wrap_question(c, random.Random(f"42:{i}")) for i, c in enumerate(cores)]
    again = [wrap_question(c, random.Random(f"42:{i}")) for i, c in enumerate(cores)]
    other = [wrap_question(c, random.Random(f"43:{i}")) for i, c in enumerate(cores)]
    assert first == again and first != other
    assert [wrap_answer(c, random.Random(i)) for i, c in enumerate(cores)] == [
        wrap_answer(c, random.Random(i)) for i, c in enumerate(cores)
    ]


def test_thousands_of_distinct_questions_and_answers_over_a_build_sized_draw():
    cores = core_questions()
    assert 25 <= len(cores) <= 40
    rng = random.Random(42)
    questions = {wrap_question(cores[i % len(cores)], rng) for i in range(9000)}
    answers = {wrap_answer("惠普尔病的常见症状有腹泻、关节痛等。", rng) for _ in range(9000)}
    assert len(questions) >= 4000, len(questions)
    assert len(answers) >= 1000, len(answers)  # one core answer: the wrappers alone
    for voice in VOICES:  # per voice, one core question already gets hundreds of forms
        forms = {wrap_question("惠普尔病有哪些症状？", random.Random(f"{voice}:{j}"), voice=voice) for j in range(5000)}
        assert len(forms) >= 300, (voice, len(forms))


def test_family_voice_only_when_the_caller_asks_for_it():
    family_leads = {t for t in load_phrasings()["question"]["family"]["leads"] if t}
    drawn = [wrap_question("惠普尔病有哪些症状？", random.Random(j)) for j in range(3000)]
    assert not any(lead in q for q in drawn for lead in family_leads)
    asked = [wrap_question("惠普尔病有哪些症状？", random.Random(j), voice="family") for j in range(300)]
    assert any(lead in q for q in asked for lead in family_leads)
    assert load_phrasings()["question"]["default_voice_weights"]["family"] == 0


def test_first_person_questions_are_not_put_in_someone_elses_mouth():
    core = "医生说我可能是惠普尔病，这是什么病？"
    voices = load_phrasings()["question"]
    patient = set(voices["patient"]["leads"] + voices["patient"]["greetings"])
    others = {t for v in ("family", "student") for t in voices[v]["leads"] + voices[v]["greetings"] if t} - patient
    for j in range(500):
        for voice in ("family", "student"):
            wrapped = wrap_question(core, random.Random(j), voice=voice)
            assert not any(t in wrapped for t in others), wrapped


def test_no_doubled_greeting_or_request():
    for j in range(2000):
        rng = random.Random(j)
        greeted = wrap_question("医生您好，一名45岁男性咳嗽、咯血，是什么病？", rng)
        assert greeted.startswith("医生您好，"), greeted
        request = wrap_question("请简单介绍一下惠普尔病。", rng)
        assert not re.search(r"(请问|问下|问一下|想问|求问|请教老师|想请教一下)请简单", request), request
        again = wrap_question("我想了解一下惠普尔病这个病。", rng)
        assert again.count("我想了解一下") == 1, again


def test_symptom_leads_only_for_described_symptoms():
    leads = load_phrasings()["answer"]["symptom_leads"]
    plain = [wrap_answer("惠普尔病一般到消化内科就诊。", random.Random(j)) for j in range(1000)]
    assert not any(lead in a for a in plain for lead in leads)  # "根据您的描述" with nothing described
    described = [wrap_answer("建议挂消化内科。", random.Random(j), describes_symptoms=True) for j in range(1000)]
    assert sum(any(lead in a for lead in leads) for a in described) > 200
    opened = [
        wrap_answer("根据描述的症状，可能患的是惠普尔病。", random.Random(j), describes_symptoms=True)
        for j in range(300)
    ]
    assert not any(lead in a for a in opened for lead in leads)


def test_an_answer_that_already_refers_to_a_doctor_gets_no_second_reminder():
    reminders = {t for t in load_phrasings()["answer"]["reminders"] if t}
    answer = "阿莫西林属于青霉素类抗生素，用法为口服。具体剂量请遵医嘱。"
    assert not any(r in wrap_answer(answer, random.Random(j)) for j in range(500) for r in reminders)


def test_unknown_voice_is_an_error():
    with pytest.raises(ValueError, match="voice"):
        wrap_question("惠普尔病有哪些症状？", random.Random(0), voice="doctor")


# ----------------------------------------------------------------------------- styles.json sections

OWNED = ("single_fact", "overview", "comparison", "drug_usage", "drug_side_effects", "drug_contraindication")
# placeholders utils/knowledge/tasks.py fills, per section and list (single_fact_tasks, overview_tasks,
# comparison_question, drug_tasks)
COMPARISON_SLOTS = {"a", "b", "label", "dept"}
FILLED = {
    ("single_fact", "questions"): {"name"},
    ("single_fact", "answers"): {"name", "values"},
    ("overview", "questions"): {"name"},
    ("overview", "answer_open"): {"name", "dept"},
    ("overview", "answer_site"): {"site"},
    ("overview", "answer_cause"): {"cause"},
    ("overview", "answer_group"): {"group"},
    ("overview", "answer_symptoms"): {"symptoms"},
    ("overview", "answer_exams"): {"exams"},
    ("overview", "answer_close"): set(),
    ("comparison", "questions"): COMPARISON_SLOTS,
    ("comparison", "same"): COMPARISON_SLOTS | {"common"},
    ("comparison", "overlap"): COMPARISON_SLOTS | {"common", "a_values", "b_values"},
    ("comparison", "different"): COMPARISON_SLOTS | {"a_values", "b_values"},
    ("drug_usage", "questions"): {"name"},
    ("drug_usage", "answers"): {"name", "class", "indication", "usage"},
    ("drug_usage", "indication_questions"): {"name"},
    ("drug_usage", "indication_answers"): {"name", "class", "indication"},
    ("drug_side_effects", "questions"): {"name"},
    ("drug_side_effects", "answers"): {"name", "adverse"},
    ("drug_contraindication", "questions"): {"name"},
    ("drug_contraindication", "answers"): {"name", "contra", "exception"},
}


def owned_phrasings():
    """(section, list key, field or None, phrasing) for every phrasing of the sections this module owns."""
    styles = load_styles()
    for section in OWNED:
        for key, value in styles[section].items():
            if key in ("kind", "description"):
                continue
            if key == "fields":
                for field, lists in value.items():
                    for sub, phrasings in lists.items():
                        if sub != "label":
                            yield from ((section, sub, field, p) for p in phrasings)
                        else:
                            yield from ((section, "label", field, p) for p in phrasings)
            else:
                yield from ((section, key, None, p) for p in value)


def test_owned_sections_load_and_use_only_placeholders_the_builder_fills():
    seen = set()
    for section, key, _field, phrasing in owned_phrasings():
        used = set(PLACEHOLDER.findall(phrasing))
        if key == "label":
            assert not used, phrasing
            continue
        seen.add((section, key))
        assert used <= FILLED[(section, key)], (section, key, phrasing)
        part = {
            "answer_site": "site",
            "answer_cause": "cause",
            "answer_group": "group",
            "answer_symptoms": "symptoms",
            "answer_exams": "exams",
            "answers": "values" if section == "single_fact" else None,
        }.get(key)
        if part:  # an answer that states nothing would pass as answering
            assert "{" + part + "}" in phrasing, (section, key, phrasing)
    assert seen == set(FILLED)


def test_owned_sections_carry_no_urgency():
    for section, _key, field, phrasing in owned_phrasings():
        assert not [w for w in URGENCY if w in phrasing], (section, field, phrasing)


# what a single-fact question about a field must be about (a question about 检查 asks about tests)
ASKS_ABOUT = {
    "所属科室": "科",
    "发病部位": "部位|哪里|哪儿|什么地方|哪个部位",
    "相关症状": "症状|表现|不舒服|反应|感觉",
    "并发症": "并发|别的病|其他问题|继发",
    "高危因素": "因素|什么样的人|哪些人|什么情况下",
    "检查": "检查|查|确诊",
    "组织学检查": "组织|病理|活检",
    "药物治疗": "药",
    "辅助治疗": "治疗|办法|措施|方法",
    "预防": "预防",
    "病因": "原因|病因|为什么|怎么得|引起|导致",
    "传播途径": "传播|感染|途径",
    "多发人群": "人",
    "相关疾病": "疾病|病",
}


def test_single_fact_questions_ask_about_their_field():
    fields = load_styles()["single_fact"]["fields"]
    assert set(fields) == set(ASKS_ABOUT)
    for field, lists in fields.items():
        for q in lists["questions"]:
            assert re.search(ASKS_ABOUT[field], q.replace("{name}", "")), (field, q)
            if field != "预防":
                assert "预防" not in q, (field, q)  # prevention is never asked (or answered) as treatment


def test_no_question_the_answer_cannot_answer():
    """'X严重吗？' and '副作用大吗？' get a list of values, not a judgement; '需要，' answers a yes/no question only."""
    for section, key, field, phrasing in owned_phrasings():
        if "question" in key:
            assert not re.search(r"严重吗|大吗|厉害吗|要紧吗|能治好吗|会死", phrasing), (section, phrasing)
        elif key != "label":
            assert not re.match(r"(需要|是的|会|能)[，,]", phrasing), (section, field, phrasing)


def test_the_builder_renders_every_owned_style_with_its_facts_verbatim():
    """Plan every task of our own KB with these styles: the builder checks each fact occurs in its answer."""
    entries, _ = load_all(resolve_kb_paths("data/knowledge"), False)
    split_of = split_entities(entries, 42, 0.1, 0.1)
    tasks, _ = plan_tasks(entries, load_styles(), split_of, 42)
    styles = {t["style"] for t in tasks}
    assert set(OWNED) <= styles
    exceptions = {e.name: e.get("禁忌例外") for e in entries if e.kind == "drug" and e.get("禁忌例外")}
    contra = {t["entity"]: t["output"] for t in tasks if t["style"] == "drug_contraindication"}
    assert exceptions and all(all(v in contra[name] for v in values) for name, values in exceptions.items())
