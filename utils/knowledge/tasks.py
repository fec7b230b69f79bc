"""The candidate tasks of a build, one function per question style: single facts, overviews, patient
vignettes and triage, comparisons of related diseases, and a drug's usage, adverse reactions and
contraindications. A task is a templated question and answer with the facts the answer states (each a
value of its entry, verbatim in the answer), its entity's split and a deterministic id; the offline
record is a task inside voice and reply wrappers (phrasing.py).

Every phrasing is drawn from a per-task RNG seeded by the build's seed and the task's key, so the same
seed gives the same tasks whatever --max_records is.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from utils.knowledge import clinical
from utils.knowledge.answer_checks import prevention_as_treatment
from utils.knowledge.findings import (
    FELT,
    HISTORY_NAMES,
    MAX_DIFFERENTIAL,
    MIN_FINDINGS,
    MIN_RELATEDNESS,
    MIN_SPECIFIC,
    NOT_TOLD,
    NOTHING,
    OTHER_SEX,
    TELLS_OF_FEELINGS,
    TYPICAL_VALUES,
    comparable_sites,
    gives_away,
    grounds,
    names_a_disease,
    relatedness,
    specific_findings,
    symptoms_of,
)
from utils.knowledge.phrasing import wrap_answer, wrap_question
from utils.knowledge.schema import NAME_FIELD, Entry
from utils.knowledge.slots import MAX_VALUES, compose, field_slot, fill, usable


@dataclass
class Planner:
    styles: dict
    split_of: dict[str, str]
    seed: int
    by_symptom: dict[str, set[str]]  # symptom -> diseases listing it (to single a disease out)
    entry_of: dict[str, Entry]
    specific: set[str] = field(default_factory=set)  # findings that point somewhere (is_specific)
    counts: Counter = field(default_factory=Counter)  # builder rule -> how often it changed or left out a task

    def rng(self, *parts) -> random.Random:
        return random.Random(f"{self.seed}:" + ":".join(map(str, parts)))

    def task(
        self,
        style: str,
        entries: list[Entry],
        variant,
        question: str,
        answer: tuple[str, list[dict]],
        urgent: bool = False,
    ) -> dict:
        output, facts = answer
        entity = entries[0].name if len(entries) == 1 else [e.name for e in entries]
        for fact in facts:  # the evaluation relies on this; templates are data, so check rather than trust
            if fact["value"] not in output:
                raise AssertionError(f"{style} {entity}: fact {fact['value']!r} not in output {output!r}")
        bad = prevention_as_treatment(output, facts)
        if bad:
            raise AssertionError(f"{style} {entity}: treatment answer contains {bad!r}: {output!r}")
        key = json.dumps([style, entity, variant], ensure_ascii=False)
        source = entries[0].source if len(entries) == 1 else [e.source for e in entries]
        return {
            "id": hashlib.sha1(key.encode("utf-8")).hexdigest()[:16],
            "style": style,
            "entity": entity,
            "source": source,
            "kind": entries[0].kind,
            "split": self.split_of[entries[0].name],
            "instruction": question,
            "output": output,
            "facts": facts,
            "urgent": urgent,
        }

    def findings(
        self, entry: Entry, rng: random.Random, most: int, sex: str = "", age: float = 30.0
    ) -> tuple[list[str], list[Entry]] | None:
        """A patient's findings: MIN_FINDINGS..most of the entry's typical symptoms, MIN_SPECIFIC of them specific,
        none naming the disease; and the other diseases of the same split that list them all (the differential, at
        most MAX_DIFFERENTIAL), or None when no such set exists. A set that singles the disease out is preferred;
        the smallest differential is kept otherwise."""
        symptoms = [
            s
            for s in symptoms_of(entry)[:TYPICAL_VALUES]
            if s in self.by_symptom
            and not gives_away(s, entry)
            and not OTHER_SEX.get(sex, NOTHING).search(s)  # no 阴囊红肿 in a woman
            and not NOT_TOLD.search(s)
            and not (age < TELLS_OF_FEELINGS and FELT.search(s))
        ]
        specific = [s for s in symptoms if s in self.specific]
        if len(symptoms) < MIN_FINDINGS:
            self.counts[f"patient: fewer than {MIN_FINDINGS} usable typical findings (no question)"] += 1
            return None
        if len(specific) < MIN_SPECIFIC:
            self.counts[
                f"patient: fewer than {MIN_SPECIFIC} specific findings among the typical ones (no question)"
            ] += 1
            return None
        best = None
        for _ in range(12):
            anchors = rng.sample(specific, MIN_SPECIFIC)
            k = rng.randint(MIN_FINDINGS, min(most, len(symptoms)))
            chosen = {*anchors, *rng.sample([s for s in symptoms if s not in anchors], k - MIN_SPECIFIC)}
            others = set.intersection(*(self.by_symptom[s] for s in chosen)) - {entry.name}
            if best is None or len(others) < len(best[1]):
                best = (chosen, others)
            if not others:
                break
        chosen, others = best
        if len(others) > MAX_DIFFERENTIAL:
            self.counts[f"patient: findings fit more than {MAX_DIFFERENTIAL} other diseases (no question)"] += 1
            return None
        same_split = sorted(n for n in others if self.split_of[n] == self.split_of[entry.name])
        if len(same_split) < len(others):
            self.counts["patient: the differential holds a disease of another split (no question)"] += 1
            return None
        return [s for s in symptoms if s in chosen], [self.entry_of[n] for n in same_split]


def plan_tasks(entries: list[Entry], styles: dict, split_of: dict[str, str], seed: int) -> tuple[list[dict], Counter]:
    """Every candidate task, in a deterministic order (each phrasing drawn from a per-task RNG), and how many
    candidates each builder rule left out."""
    diseases = [e for e in entries if e.kind == "disease"]
    by_symptom = defaultdict(set)
    for e in diseases:
        for s in symptoms_of(e):
            by_symptom[s].add(e.name)
    specific = specific_findings(by_symptom)  # generic complaints are counted over every symptom (结节 too)
    naming = names_a_disease(by_symptom, diseases)
    by_symptom = {s: d for s, d in by_symptom.items() if s not in naming}
    p = Planner(styles, split_of, seed, by_symptom, {e.name: e for e in diseases}, specific - naming)
    tasks = []
    for e in diseases:
        tasks += single_fact_tasks(p, e)
        tasks += overview_tasks(p, e)
        tasks += patient_tasks(p, e, "vignette", count=3, most=4)
        tasks += patient_tasks(p, e, "triage", count=2, most=3)
    tasks += comparison_tasks(p, diseases)
    for e in entries:
        if e.kind == "drug":
            tasks += drug_tasks(p, e)
    return tasks, p.counts


# ============================================================================ one function per style


def single_fact_tasks(p: Planner, e: Entry) -> list[dict]:
    """One record per (disease, field): "X的并发症有哪些？"."""
    tasks = []
    for key, style in p.styles["single_fact"]["fields"].items():
        if e.get(key):
            rng = p.rng("single_fact", e.name, key)
            slots = {"name": (e.name, []), "values": field_slot(e, key)}
            question, answer = rng.choice(style["questions"]), rng.choice(style["answers"])
            tasks.append(p.task("single_fact", [e], key, fill(question, slots)[0], fill(answer, slots)))
    return tasks


def _disease_slots(e: Entry, limits: dict[str, int]) -> dict:
    """Slots of a composite answer: placeholder -> (text, facts), for the fields the entry has."""
    slots = {"name": (e.name, [{"field": NAME_FIELD, "value": e.name, "source": e.source}])}
    names = {
        "dept": "所属科室",
        "site": "发病部位",
        "cause": "病因",
        "group": "多发人群",
        "symptoms": "相关症状",
        "exams": "检查",
        "drugs": "药物治疗",
        "aux": "辅助治疗",
    }
    for slot, key in names.items():
        if slot in limits and e.get(key):
            slots[slot] = field_slot(e, key, e.get(key)[: limits[slot]])
    return slots


def overview_tasks(p: Planner, e: Entry) -> list[dict]:
    """ "请简单介绍一下X。": a prose introduction from department, site, cause, group, symptoms, tests."""
    style = p.styles["overview"]
    rng = p.rng("overview", e.name)
    slots = _disease_slots(e, {"dept": 2, "site": 3, "cause": 3, "group": 2, "symptoms": 4, "exams": 3})
    parts = [
        style[k]
        for k in (
            "answer_open",
            "answer_site",
            "answer_group",
            "answer_cause",
            "answer_symptoms",
            "answer_exams",
            "answer_close",
        )
    ]
    question = fill(rng.choice(style["questions"]), slots)[0]
    text, facts = compose(parts, slots, rng)
    level = clinical.urgency(e)  # by the disease's name: an introduction of 脾破裂 says it is an emergency
    if not level.emergency:
        return [p.task("overview", [e], 0, question, (text, facts))]
    warning = f"{e.name}属于急症，出现相关表现时应立即拨打120或到医院急诊就诊。"
    task = p.task("overview", [e], 0, question, (text + warning, facts), urgent=True)
    task["rules"] = [f"overview: emergency advice (rule {level.rule})"]
    return [task]


def treatment_checked(e: Entry) -> bool:
    """The entry has a treatment we can defend: ours, or cMeKG's checked against the curated list
    (utils/knowledge/cmekg.py)."""
    return bool(e.get("药物治疗") or e.get("辅助治疗"))


def answerable(questions: list[str], e: Entry) -> list[str]:
    """The phrasings whose asks the answer can meet: none asking for tests when the entry lists none, none asking
    which drug when it has no checked drug (the review found "要做哪些检查？" answered without a test)."""
    ok = [q for q in questions if (e.get("检查") or "检查" not in q) and (e.get("药物治疗") or "药" not in q)]
    return ok or questions


def ward(e: Entry, person, emergency: bool) -> tuple[str, list[dict]]:
    """The department slot of a patient's answer: no adolescent or adult sent to 儿科, and after the emergency
    department an emergency goes to a ward that is not the emergency department again ("相关专科" if none)."""
    depts = e.get("所属科室")
    if person.age_years >= clinical.SELF_AGE:
        depts = [d for d in depts if d not in clinical.PAEDIATRIC_DEPARTMENTS] or depts
    if emergency:
        depts = [d for d in depts if d != clinical.EMERGENCY_DEPARTMENT]
        if not depts:
            return "相关专科", []
    return field_slot(e, "所属科室", depts[:2])


def patient_tasks(p: Planner, e: Entry, style_name: str, count: int, most: int) -> list[dict]:
    """Vignettes (diagnosis, tests; treatment only where the entry has a checked one) and triage (department):
    a patient who can have the disease, with >= MIN_FINDINGS typical findings of which one is specific. Where the
    findings fit other diseases too, the answer names them as the differential. Urgency comes from the red-flag
    rules (utils/knowledge/clinical.py), never at random."""
    style = p.styles[style_name]
    if any(HISTORY_NAMES.search(n) for n in e.names):
        p.counts["patient: the disease needs a history the question cannot state (exposure, injury, twins)"] += 1
        return []
    whole = _disease_slots(e, {"dept": 2, "exams": 4, "drugs": 4, "aux": 4})
    profile = clinical.patient_profile(e)
    tasks = []
    for i in range(count):
        rng = p.rng(style_name, e.name, i)
        person = clinical.make_person(profile, rng)
        found = p.findings(e, rng, most, person.sex, person.age_years)
        if found is None:
            continue
        picked, others = found
        level = clinical.urgency(e, picked, person)
        slots = {
            **whole,
            "person": (person.text, []),
            "pronoun": (person.pronoun, []),
            "symptoms": ("、".join(picked), []),
        }
        if "dept" in whole:
            slots["dept"] = ward(e, person, level.emergency)
        if others:
            slots["others"] = (
                "、".join(o.name for o in others),
                [{"field": NAME_FIELD, "value": o.name, "source": o.source, "entity": o.name} for o in others],
            )
        # a cMeKG disease singled out within the knowledge base is a possibility, not the most likely diagnosis
        differential = "_differential" if others else "_tentative" if e.source != "ours" else ""
        treatment = ""  # what a vignette asks (a builder rule, counted in the meta file)
        if style_name == "vignette":
            question, (text, facts), treatment = _vignette(style, e, slots, differential, level.emergency, rng)
        else:
            question, (text, facts) = _triage(style, e, person, slots, differential, level.emergency, bool(others), rng)
        if level.emergency:
            text = level.sentence(rng) + text
        task = p.task(style_name, [e], i, fill(question, slots)[0], (text, facts), urgent=level.emergency)
        task["rules"] = [
            f"{style_name}: " + (f"emergency advice (rule {level.rule})" if level.emergency else "routine")
        ]
        task["rules"] += [f"{style_name}: differential named"] * bool(others) + [f"vignette: {treatment}"] * (
            style_name == "vignette"
        )
        tasks.append(task)
    return tasks


def _vignette(style: dict, e: Entry, slots: dict, differential: str, emergency: bool, rng: random.Random):
    """A vignette's question template, its answer (text, facts) and which builder rule chose what it asks:
    treatment is asked (in 60% of vignettes) only where the entry has a checked one."""
    asks_treatment = treatment_checked(e) and rng.random() < 0.6
    treatment = (
        "treatment asked (the entry has a checked one)"
        if asks_treatment
        else "diagnosis and tests only" + ("" if treatment_checked(e) else " (no checked treatment)")
    )
    question = rng.choice(answerable(style["questions_treatment" if asks_treatment else "questions"], e))
    parts = [
        style["answer_open" + differential],
        style["answer_dept_emergency" if emergency else "answer_dept"],
        style["answer_exams"],
    ]
    if asks_treatment:
        parts += [style["answer_drugs"], style["answer_aux"]]
    return question, compose(parts + [style["answer_close"]], slots, rng), treatment


def _triage(style: dict, e: Entry, person, slots: dict, differential: str, emergency: bool, has_others: bool, rng):
    """A triage question template and its answer (text, facts): which department, and the differential."""
    elder = "elder" in person.voices and rng.random() < 0.3  # "家里老人…": only for a patient of that age
    question = rng.choice(answerable(style["questions_elder" if elder else "questions"], e))
    text, facts = fill(rng.choice(style["answers" + ("_emergency" if emergency else differential)]), slots)
    if emergency and has_others:  # the emergency phrasings name one disease: add the differential
        extra, extra_facts = fill(rng.choice(style["differential_note"]), slots)
        text, facts = text + extra, facts + extra_facts
    return question, (text, facts)


def comparison_tasks(p: Planner, diseases: list[Entry]) -> list[dict]:
    """ "X和Y的病因是否一致？" for related pairs only: same split and department, a shared body site or
    specific finding."""
    style = p.styles["comparison"]
    pool = defaultdict(list)  # (split, department) -> diseases
    for e in diseases:
        for d in e.get("所属科室"):
            pool[(p.split_of[e.name], d)].append(e)
    # related(), precomputed: sites and specific findings per disease (a shared department is given by the pool)
    sites = comparable_sites(diseases)
    ground = {e.name: grounds(e, sites, p.specific) for e in diseases}
    tasks, seen_pairs = [], set()
    for a in diseases:
        rng = p.rng("comparison", a.name)
        candidates = {b.name: b for d in a.get("所属科室") for b in pool[(p.split_of[a.name], d)] if b is not a}
        scored = sorted(((relatedness(ground[a.name], ground[n]), n) for n in candidates), key=lambda x: (-x[0], x[1]))
        best = [candidates[n] for score, n in scored[:4] if score >= MIN_RELATEDNESS]
        for b in rng.sample(best, min(2, len(best))):
            pair = tuple(sorted((a.name, b.name)))
            # a pair chosen for a shared site is not asked whether its identical site lists are the same
            shared = [
                k
                for k in style["fields"]
                if a.get(k) and b.get(k) and not (k == "发病部位" and set(a.get(k)) == set(b.get(k)))
            ]
            if pair in seen_pairs or not shared:
                continue
            seen_pairs.add(pair)
            key = rng.choice(shared)
            made = comparison_question(style, a, b, key, rng)
            if made is None:
                p.counts["comparison: lists share no value but one contains another (no question)"] += 1
                continue
            tasks.append(p.task("comparison", [a, b], key, *made))
    return tasks


def verdict(av: list[str], bv: list[str]) -> str | None:
    """same / overlap / different, on the FULL lists (a verdict on cut lists called lists that share values
    different). None when the lists share no value but a value of one contains one of the other (咳嗽 /
    持续性咳嗽): neither "different" nor "the same" would be honest."""
    if set(av) == set(bv):
        return "same"
    if set(av) & set(bv):
        return "overlap"
    if any(x in y or y in x for x in av for y in bv):
        return None
    return "different"


def comparison_question(style: dict, a: Entry, b: Entry, key: str, rng: random.Random):
    """The question on ``key`` of the pair and its answer (text, facts) by the verdict; None when
    no verdict is honest."""
    kind = verdict(a.get(key), b.get(key))
    if kind is None:  # counted by the caller
        return None
    common = [v for v in a.get(key) if v in b.get(key)]
    av, bv = a.get(key)[:MAX_VALUES], b.get(key)[:MAX_VALUES]
    if kind == "same":
        common = a.get(key)  # the whole list: "都是" must not hide a value
    depts = [d for d in a.get("所属科室") if d in b.get("所属科室")]
    dept_facts = (
        field_slot(a, "所属科室", depts, tag_entity=True)[1] + field_slot(b, "所属科室", depts, tag_entity=True)[1]
    )
    shown_common = common[:MAX_VALUES]
    slots = {
        "a": (a.name, []),
        "b": (b.name, []),
        "label": (rng.choice(style["fields"][key]["label"]), []),
        "dept": ("、".join(depts), dept_facts),
        "a_values": field_slot(a, key, av, tag_entity=True),
        "b_values": field_slot(b, key, bv, tag_entity=True),
        "common": (
            "、".join(shown_common),
            field_slot(a, key, shown_common, tag_entity=True)[1] + field_slot(b, key, shown_common, tag_entity=True)[1],
        ),
    }
    question = fill(rng.choice(style["questions"]), slots)[0]
    return question, fill(rng.choice(style[kind]), slots)


def drug_tasks(p: Planner, e: Entry) -> list[dict]:
    """What a drug is for and how it is used, its adverse reactions and contraindications."""
    slots = {"name": (e.name, [])}
    for key, slot, sep in (
        ("药物分类", "class", "、"),
        ("适应症", "indication", "、"),
        ("用法用量", "usage", "，"),
        ("不良反应", "adverse", "、"),
        ("禁忌", "contra", "、"),
        ("禁忌例外", "exception", "；"),
    ):
        if e.get(key):
            slots[slot] = field_slot(e, key, sep=sep)
    plans = [
        ("drug_usage", "usage", "questions", "answers"),
        ("drug_usage", "indication", "indication_questions", "indication_answers"),
        ("drug_side_effects", "adverse", "questions", "answers"),
        ("drug_contraindication", "contra", "questions", "answers"),
    ]
    tasks = []
    for style, variant, qkey, akey in plans:
        rng = p.rng(style, e.name, variant)
        answers = usable(p.styles[style][akey], slots, must=("exception",))  # an exception is never left out
        if answers:
            tasks.append(
                p.task(
                    style,
                    [e],
                    variant,
                    fill(rng.choice(p.styles[style][qkey]), slots)[0],
                    fill(rng.choice(answers), slots),
                )
            )
    return tasks


# ============================================================================ task -> record


def task_record(task: dict, instruction: str, output: str, facts: list[dict]) -> dict:
    """A record in HuaTuo's llama_data.json format ({"instruction", "input", "output"}) plus the task's provenance."""
    return {
        "instruction": instruction,
        "input": "",
        "output": output,
        "style": task["style"],
        "entity": task["entity"],
        "source": task["source"],
        "facts": facts,
        "id": task["id"],
    }


def offline_record(task: dict, seed: int) -> dict:
    """The offline backend's record: the templated question and answer inside voice and reply wrappers
    (utils/knowledge/phrasing.py). The core is kept verbatim, so every fact stays checked; the wrappers hold no
    medical content (no urgency, no facts)."""
    rng = random.Random(f"{seed}:phrasing:{task['id']}")
    instruction = wrap_question(task["instruction"], rng, voice=task.get("voice"))
    output = wrap_answer(task["output"], rng, describes_symptoms=task["style"] in ("vignette", "triage"))
    return task_record(task, instruction, output, task["facts"])
