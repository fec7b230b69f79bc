"""Audit of a built instruction set: how often each of issue #19's twelve systematic defects occurs.

The detectors here are written from the issue's descriptions, not from the builder's cleaning code
(nothing is imported from build_dataset.py or the cMeKG cleaning rules), so one script gives the
"before" numbers of a committed build and the "after" numbers of a rebuilt one:

    python -m utils.knowledge.audit                                  # data/llama_data{,.valid,.test}.json
    python -m utils.knowledge.audit data/llama_data.json --json audit.json

Input: the build's records (train, valid and test JSON Lines beside each other) and the knowledge
entries the build used (``utils.knowledge.cmekg.load_all``: the entries of the code of the checkout that runs
this, so audit a committed build with that commit's code). Each ``cause_*`` function takes an
:class:`Build` and returns ``{"title": str, "metrics": {name: number}, "examples": {name: [str]}}``;
``audit`` runs them all and ``markdown`` renders one table.

The word lists below are a detector's, not a physician's: they find candidates to count, and a
count is an upper or lower bound as each docstring says, never a medical verdict.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from utils.knowledge.datacard import PERSON, masked_pattern
from utils.knowledge.schema import REPO_ROOT, Entry

logger = logging.getLogger(__name__)

DEFAULT_TRAIN = os.path.join(REPO_ROOT, "data", "llama_data.json")
SPLITS = ("train", "valid", "test")
SYMPTOM = "相关症状"
TREATMENT_FIELDS = ("药物治疗", "辅助治疗")
EXAMPLES = 8  # examples kept per metric

# a finding carried by more than this many diseases of the knowledge base does not point to one
# disease (疼痛 1767, 发热 1111, 压痛 787, 休克 478 in cMeKG 0.2.5's 5,356 diseases; 黄疸 316)
NONSPECIFIC_DISEASES = 100
MIN_FINDINGS = 3  # a vignette/triage question needs this many findings

# ----------------------------------------------------------------------------- the build


@dataclass
class Build:
    records: list[dict]  # every record, each with "split" added
    entries: list[Entry]
    aliases_of: dict[str, set[str]] = field(default_factory=dict)  # name -> other names (cMeKG 别称/又称/同义词)

    def __post_init__(self):
        self.entry_of = {e.name: e for e in self.entries}
        self.diseases = [e for e in self.entries if e.kind == "disease"]
        self.carriers = Counter(v for e in self.diseases for v in set(e.get(SYMPTOM)))


def names_of(record: dict) -> list[str]:
    return record["entity"] if isinstance(record["entity"], list) else [record["entity"]]


def split_paths(train_path: str) -> dict[str, str]:
    stem, ext = os.path.splitext(train_path)
    return {"train": train_path, "valid": f"{stem}.valid{ext}", "test": f"{stem}.test{ext}"}


def load_records(train_path: str = DEFAULT_TRAIN) -> list[dict]:
    """Records of the train file and its .valid/.test siblings (those present), each with "split"."""
    records = []
    for split, path in split_paths(train_path).items():
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    records.append({**json.loads(line), "split": split})
    return records


def cmekg_aliases() -> dict[str, set[str]]:
    """name -> its 别称/又称/同义词 in the installed cMeKG (empty without pycmekg)."""
    import unicodedata

    from utils.knowledge.cmekg import CmekgError, find_pickle, load_graph

    try:
        graph = load_graph(find_pickle().path)
    except CmekgError:
        return {}
    out: dict[str, set[str]] = defaultdict(set)
    for raw, preds in graph.items():
        name = unicodedata.normalize("NFKC", raw).strip()
        for p in ("别称", "又称", "同义词"):
            for v in preds.get(p) or []:
                if isinstance(v, str):
                    out[name] |= {
                        unicodedata.normalize("NFKC", a).strip() for a in re.split(r"[、；;，,]", v) if a.strip()
                    }
    return dict(out)


def load_build(train_path: str = DEFAULT_TRAIN) -> Build:
    from utils.knowledge.cmekg import load_all

    entries, _ = load_all()
    return Build(records=load_records(train_path), entries=entries, aliases_of=cmekg_aliases())


def mentions(text: str, values) -> list[str]:
    """The values that occur in text, longest first, each span counted once (流泪及眼痛 hides 眼痛)."""
    found = []
    for v in sorted(set(values), key=len, reverse=True):
        if v and v in text:
            found.append(v)
            text = text.replace(v, "\0")
    return found


def question_findings(record: dict, entry: Entry) -> list[str]:
    """Symptom values of the entry that a vignette/triage question states (they are not in its facts)."""
    return mentions(record["instruction"], entry.get(SYMPTOM))


def symptom_lists(record: dict, build: Build) -> list[tuple[str, list[str]]]:
    """(entity, symptom values) the record quotes: its facts, and the findings of a patient question."""
    out = []
    for name in names_of(record):
        quoted = [f["value"] for f in record["facts"] if f["field"] == SYMPTOM and f.get("entity", name) == name]
        if not quoted and record["style"] in ("vignette", "triage") and name in build.entry_of:
            quoted = question_findings(record, build.entry_of[name])
        if quoted:
            out.append((name, quoted))
    return out


def _result(title: str, metrics: dict, examples: dict | None = None) -> dict:
    return {
        "title": title,
        "metrics": metrics,
        "examples": {k: list(dict.fromkeys(v))[:EXAMPLES] for k, v in (examples or {}).items()},
    }


def is_code_point_sorted(values: list[str]) -> bool:
    return len(values) >= 2 and values == sorted(values)


# ----------------------------------------------------------------------------- 1 lists cut in code-point order


def cause_1_code_point_order(build: Build) -> dict:
    """cMeKG symptom lists sorted by code point (len >= 4), and answers quoting the first k of such a
    list (k >= 2, the list longer than k: a cut); which symptom values answers quote most."""
    cm = [e for e in build.diseases if e.source == "cmekg" and len(e.get(SYMPTOM)) >= 4]
    sorted_lists = {e.name for e in cm if is_code_point_sorted(e.get(SYMPTOM))}
    prefix_records, quoted_values, ks = [], Counter(), Counter()
    for r in build.records:
        hit = False
        for name, quoted in symptom_lists(r, build):
            quoted_values.update(set(quoted))
            full = build.entry_of[name].get(SYMPTOM) if name in build.entry_of else []
            k = len(quoted)
            if name in sorted_lists and 2 <= k < len(full) and set(quoted) == set(full[:k]):
                hit = True
                ks[k] += 1
        if hit:
            prefix_records.append(r["id"])
    top = quoted_values.most_common(5)
    every = [e.get(SYMPTOM) for e in build.diseases if e.source == "cmekg" and len(e.get(SYMPTOM)) >= 2]
    return _result(
        "1 symptom lists cut in code-point order",
        {
            "cmekg symptom lists (>= 2 values)": len(every),
            "  of them sorted by code point": sum(map(is_code_point_sorted, every)),
            "cmekg symptom lists (>= 4 values)": len(cm),
            "sorted by code point": len(sorted_lists),
            "records quoting a code-point prefix": len(prefix_records),
            "prefix lengths": dict(sorted(ks.items())),
            "answers quoting 休克": quoted_values["休克"],
            "answers quoting 黄疸": quoted_values["黄疸"],
            "most quoted": dict(top),
        },
        {"records quoting a code-point prefix": prefix_records},
    )


# ----------------------------------------------------------------------------- 2 comparison verdicts

VERDICT_OVERLAP = re.compile(r"部分|有相同之处|重叠|都涉及|都包括|相同点|共同|共有|交叉|不完全")
VERDICT_NO_DIFFERENCE = re.compile(r"没有区别|没有差异|无区别|无差异")
VERDICT_DIFFERENT = re.compile(r"不一致|不同|不相同|并不|区别|差异")
VERDICT_SAME = re.compile(r"一致|相同|均为|都是|一样")


def comparison_verdict(output: str) -> str | None:
    """ "overlap" / "different" / "same" as the answer words it (styles.json comparison answers)."""
    if VERDICT_OVERLAP.search(output):
        return "overlap"
    if VERDICT_NO_DIFFERENCE.search(output):
        return "same"
    if VERDICT_DIFFERENT.search(output):
        return "different"
    if VERDICT_SAME.search(output):
        return "same"
    return None


def full_verdict(a: list[str], b: list[str]) -> str:
    common = set(a) & set(b)
    return "same" if common and set(a) == set(b) else "overlap" if common else "different"


def cause_2_comparisons(build: Build) -> dict:
    """Comparisons whose verdict disagrees with the two entries' full lists of the compared field;
    pairs that share no body site and only non-specific symptoms (each carried by > NONSPECIFIC_DISEASES)."""
    wrong, said_different_but_share, generic_pairs, pairs, total = [], [], set(), set(), 0
    for r in build.records:
        if r["style"] != "comparison" or len(names_of(r)) != 2:
            continue
        a, b = (build.entry_of.get(n) for n in names_of(r))
        if a is None or b is None:
            continue
        total += 1
        fields = [f["field"] for f in r["facts"] if f["field"] != "所属科室"] or ["所属科室"]
        key = Counter(fields).most_common(1)[0][0]
        said, truth = comparison_verdict(r["output"]), full_verdict(a.get(key), b.get(key))
        if said and said != truth:
            wrong.append(f"{a.name}/{b.name} {key}: says {said}, full lists {truth}")
            if said == "different":
                said_different_but_share.append(r["id"])
        pair = tuple(sorted((a.name, b.name)))
        pairs.add(pair)
        shared = set(a.get(SYMPTOM)) & set(b.get(SYMPTOM))
        if not set(a.get("发病部位")) & set(b.get("发病部位")) and all(
            build.carriers[v] > NONSPECIFIC_DISEASES for v in shared
        ):
            generic_pairs.add(pair)
    return _result(
        "2 comparison verdicts and pairs",
        {
            "comparisons": total,
            "verdict disagrees with full lists": len(wrong),
            "says 不一致 but full lists share values": len(said_different_but_share),
            "distinct pairs": len(pairs),
            "pairs sharing only non-specific symptoms, no site": len(generic_pairs),
        },
        {
            "verdict disagrees with full lists": wrong,
            "pairs sharing only non-specific symptoms, no site": ["/".join(p) for p in sorted(generic_pairs)],
        },
    )


# ----------------------------------------------------------------------------- 3 symptoms that are not symptoms

# Each pattern is a kind of thing that a symptom list should not hold; the first that matches names it.
NOT_SYMPTOM_PATTERNS: tuple[tuple[str, re.Pattern], ...] = (
    # Ⅲ度, IV, 浆膜型(III型): stages and grades cut out of a sentence
    ("roman numeral", re.compile(r"[ⅠⅡⅢⅣⅤⅥⅦⅧⅨⅩ]|(?<![A-Za-z])(?:I{1,3}|IV|V|VI{1,3})(?![A-Za-z])")),
    # 撞击试验, 体格检查, 肛门指诊, Kussmaul征阳性: a test or its result, not what the patient has
    ("test", re.compile(r"试验|实验|检查|指诊|检测|测定|造影|活检|穿刺|化验|阳性|阴性")),
    # 糖尿, 蛋白尿, 高钾血症, 白细胞减少: found in blood or urine, not felt or seen by the patient
    (
        "lab value",
        re.compile(
            r"^(?:糖尿|蛋白尿|管型尿|菌尿|脓尿|酮尿|氨基酸尿|血红蛋白尿)$|血症$|"
            r"(?:血|尿液|血清|血浆|细胞|血小板|酶|蛋白|胆红素|肌酐|尿素|转氨酶|抗体|血糖|血钾|血钠|血钙)"
            r".{0,4}(?:升高|降低|增高|减低|增多|减少|异常|增加|下降)$"
        ),
    ),
    # 轻者头痛, 反复, 婴儿肠套叠多, 心跳加快以及少尿: pieces of a sentence
    ("fragment", re.compile(r"者|^反复$|(?<![增过较繁])多$|^(?:伴|或|及|和|以|可|有|为|如)|等$|以及|之后|之前")),
    # 表面光滑, 质硬, 大小不等, 单发: describes a lesion or the course, not a complaint
    ("descriptor", re.compile(r"光滑|质硬|质软|质地|边界|边缘|大小不|单发|多发|形态|无症状|不明显|[色形期]$|程度")),
    # 气胸, 感冒, 心肌梗死, 肺炎, 结核: a disease (or pathogen) listed as a symptom
    (
        "disease name",
        re.compile(
            r"(?:病|炎|癌|瘤|综合征|综合症|结核|骨折|畸形|梗死|梗塞|中毒|感冒|气胸|疝|脱位|结石|栓塞|"
            r"病毒|杆菌|球菌|真菌)$"
        ),
    ),
)
BODY_SITES = tuple(
    """
    头 颈 胸 腹 背 腰 四肢 上肢 下肢 关节 皮肤 肝脏 脾脏 肾脏 心脏 肺 胃 肠 眼 耳 鼻 口腔 咽 喉 骨
    脑 脊柱 淋巴结 全身
    """.split()
)
SITE_ENDING = re.compile(
    r"(?:肌|关节|神经|动脉|静脉|韧带|肌腱|筋膜|[^软]骨)$"
)  # 旋后肌, 掌跖关节: anatomy, not a complaint


def not_a_symptom(value: str, sites: set[str] = frozenset()) -> str | None:
    """Why a symptom-list value is not a symptom or sign (a kind from NOT_SYMPTOM_PATTERNS, or "body
    site" for a 发病部位 value of the KB or a bare organ word), or None. Another entity's name is not a
    reason by itself: cMeKG imports symptom pages (低血压, 肛门疼痛) as entities. Candidates, not
    verdicts: 结膜炎 in a symptom list counts as a disease though a clinician might accept it as a sign."""
    if value in sites or value in BODY_SITES or SITE_ENDING.search(value):
        return "body site"
    for kind, pattern in NOT_SYMPTOM_PATTERNS:
        if pattern.search(value):
            return kind
    return None


def cause_3_not_symptoms(build: Build) -> dict:
    """Symptom mentions (facts, and findings stated in patient questions) that are not symptoms."""
    sites = {v for e in build.diseases for v in e.get("发病部位")}
    total, kinds, examples = 0, Counter(), defaultdict(list)
    for r in build.records:
        for _name, quoted in symptom_lists(r, build):
            for v in quoted:
                total += 1
                kind = not_a_symptom(v, sites)
                if kind:
                    kinds[kind] += 1
                    examples[kind].append(v)
    flagged = sum(kinds.values())
    return _result(
        "3 symptom mentions that are not symptoms",
        {
            "symptom mentions": total,
            "not a symptom": flagged,
            "share": round(flagged / max(1, total), 3),
            **{f"  {k}": n for k, n in kinds.most_common()},
        },
        {f"  {k}": v for k, v in examples.items()},
    )


# ----------------------------------------------------------------------------- 4 near duplicates


def near_duplicates(values: list[str]) -> list[tuple[str, str]]:
    """Pairs in one list where one value holds another (咳嗽 / 持续性咳嗽, 眼痛 / 流泪及眼痛)."""
    return [(a, b) for a in values for b in values if a != b and len(a) >= 2 and a in b]


def cause_4_near_duplicates(build: Build) -> dict:
    """Records whose quoted list (symptoms, or any field's values of one entity) holds near duplicates."""
    flagged, unsplit = [], Counter()
    for r in build.records:
        lists = defaultdict(list)
        for f in r["facts"]:
            lists[(f.get("entity", names_of(r)[0]), f["field"])].append(f["value"])
        for name, quoted in symptom_lists(r, build):
            lists[(name, SYMPTOM)] = list(dict.fromkeys(lists.get((name, SYMPTOM), []) + quoted))
        pairs = [p for vs in lists.values() for p in near_duplicates(vs)]
        if pairs:
            flagged.append(f"{r['id']}: " + "; ".join(f"{a} ⊂ {b}" for a, b in pairs))
        unsplit.update(v for vs in lists.values() for v in vs if re.search(r".及.", v))
    return _result(
        "4 near-duplicate values in one answer",
        {
            "records with a near-duplicate pair": len(flagged),
            "values with an unsplit 及": sum(unsplit.values()),
        },
        {"records with a near-duplicate pair": flagged, "values with an unsplit 及": list(unsplit)},
    )


# ----------------------------------------------------------------------------- 5 diagnosis given away

NAME_PREFIXES = re.compile(
    r"^(?:小儿|儿童|婴幼儿|婴儿|新生儿|幼儿|老年|成人|急性|慢性|亚急性|先天性|原发性|继发性|复发性|"
    r"获得性|遗传性|特发性|家族性|良性|恶性|重症|轻型|重型)+"
)


def name_core(name: str) -> str:
    """The name without the age/course prefixes (小儿肠套叠 -> 肠套叠), or the name itself."""
    core = NAME_PREFIXES.sub("", name)
    return core if len(core) >= 2 else name


def cause_5_diagnosis_in_question(build: Build) -> dict:
    """Vignette/triage questions that contain the diagnosis: a name of the entity, its core, or a
    finding that contains the core (儿童肠套叠 listed as a symptom of 小儿肠套叠)."""
    flagged, total = [], 0
    for r in build.records:
        if r["style"] not in ("vignette", "triage"):
            continue
        total += 1
        name = names_of(r)[0]
        names = {name, name_core(name)} | build.aliases_of.get(name, set())
        if name in build.entry_of:
            names |= set(build.entry_of[name].names)
        hit = next((n for n in sorted(names, key=len, reverse=True) if len(n) >= 2 and n in r["instruction"]), None)
        if hit:
            flagged.append(f"{name}: {hit} in {r['instruction']}")
    return _result(
        "5 diagnosis given away in the question",
        {
            "vignette/triage questions": total,
            "name or core in the question": len(flagged),
        },
        {"name or core in the question": flagged},
    )


# ----------------------------------------------------------------------------- 6 not diseases, wrong field kinds

NOT_DISEASE_NAME = re.compile(r"康复|检查|待查|高危|证$|术$|术后$|筛查|护理|疗法")
PEOPLE_WORD = re.compile(r"人|者|儿|童|女|男|妇|婴|孕|产|老|青|少|幼|岁|员|工|民|族|群|生|患|胎|龄|母|性")
UNKNOWN_CAUSE = re.compile(r"不清|不明|未明|不详|未知|定论|(?:尚未|未完全)(?:完全)?(?:了解|明确|阐明|清楚|确定|知晓)")
# a 检查 value that names a disease, a finding or a stage (溶血性贫血, 硬脑膜下血肿, 尿镍明显增高, 急性期),
# unless it also names a test (血清胆固醇测定)
FINDING_NOT_TEST = re.compile(
    r"(?:病|炎|癌|瘤|综合征|血症|中毒|贫血|血肿|积水|积脓|畸胎|出血|损伤|缺乏|期|者)$|"
    r"增高|升高|降低|减低|增加|减少|异常"
)
TEST_WORD = re.compile(
    r"检|查|试验|实验|测|造影|扫描|超声|CT|MRI|X线|镜|活检|穿刺|化验|常规|图|片|培养|分析|功能|"
    r"诊|监测|染色|显像|评估|评分|成像"
)


def field_kind_problem(key: str, value: str) -> str | None:
    """Why a value is not of its field's kind, for the fields the issue names (多发人群, 病因, 检查)."""
    if key == "多发人群" and not PEOPLE_WORD.search(value):
        return "多发人群 without a people word"
    if key == "病因" and UNKNOWN_CAUSE.search(value):
        return "病因 says the cause is unknown"
    if key == "检查" and FINDING_NOT_TEST.search(value) and not TEST_WORD.search(value):
        return "检查 holds a finding, not a test"
    return None


def cause_6_not_diseases(build: Build) -> dict:
    """Records about entities that are not diseases (procedures, rehabilitation, 待查, risk groups, TCM
    patterns), field-kind violations among quoted facts, values with an unbalanced bracket."""
    entities, records, problems, brackets = set(), [], defaultdict(list), []
    for r in build.records:
        for name in names_of(r):
            if NOT_DISEASE_NAME.search(name):
                entities.add(name)
                records.append(r["id"])
        for f in r["facts"]:
            why = field_kind_problem(f["field"], f["value"])
            if why:
                problems[why].append(f["value"])
            if f["value"].count("（") + f["value"].count("(") != f["value"].count("）") + f["value"].count(")"):
                brackets.append(f["value"])
    return _result(
        "6 not diseases, values of the wrong kind",
        {
            "entities that are not diseases": len(entities),
            "records about them": len(set(records)),
            **{f"facts: {k}": len(v) for k, v in problems.items()},
            "facts with an unbalanced bracket": len(brackets),
        },
        {
            "entities that are not diseases": sorted(entities),
            **{f"facts: {k}": v for k, v in problems.items()},
            "facts with an unbalanced bracket": brackets,
        },
    )


# ----------------------------------------------------------------------------- 7 alias twins

BRACKETED = re.compile(r"^(.+?)[（(](.+?)[）)]$")


def names_of_entity(name: str, build: Build) -> set[str]:
    names = {name} | build.aliases_of.get(name, set())
    if name in build.entry_of:
        names |= set(build.entry_of[name].names)
    m = BRACKETED.match(name)
    if m:
        names |= {m.group(1).strip(), m.group(2).strip()}
    return {n for n in names if len(n) >= 2}


def cause_7_alias_twins(build: Build) -> dict:
    """Pairs of entities in the build that are names of each other (cMeKG 别称/又称/同义词, Entry.aliases,
    a bracketed name), and the pairs whose records lie in different splits."""
    splits = defaultdict(set)
    for r in build.records:
        for n in names_of(r):
            splits[n].add(r["split"])
    owner = defaultdict(set)
    for n in splits:
        for alias in names_of_entity(n, build):
            owner[alias].add(n)
    twins = {tuple(sorted(group)) for group in owner.values() if len(group) >= 2}
    pairs = {(a, b) for group in twins for a in group for b in group if a < b}
    straddle = {p for p in pairs if splits[p[0]] != splits[p[1]]}
    return _result(
        "7 alias twins as separate entities",
        {
            "twin pairs": len(pairs),
            "pairs straddling splits": len(straddle),
        },
        {
            "twin pairs": ["/".join(p) for p in sorted(pairs)],
            "pairs straddling splits": [
                f"{a} ({'/'.join(sorted(splits[a]))}) / {b} ({'/'.join(sorted(splits[b]))})"
                for a, b in sorted(straddle)
            ],
        },
    )


# ----------------------------------------------------------------------------- 8 impossible patients

FEMALE_ONLY = re.compile(
    r"妊娠|子宫|宫颈|宫角|宫腔|宫外|宫内|卵巢|阴道|外阴|输卵管|产后|产褥|流产|早产|难产|分娩|胎盘|"
    r"羊水|葡萄胎|绒毛膜|月经|痛经|闭经|盆腔炎|孕|前庭大腺|绝经|更年期"
)
MALE_ONLY = re.compile(r"前列腺|睾丸|阴茎|阴囊|精索|附睾|包皮|精液|精子|勃起|早泄|遗精|阳痿|男性不育")
CHILD_DISEASE = re.compile(r"小儿|新生儿|婴儿|婴幼儿|儿童|幼儿|胎儿|早产儿|先天性")
NEONATAL = re.compile(r"新生儿|胎儿|胎粪|早产儿|婴儿")
ADULT_ONLY = re.compile(r"老年|更年期|绝经|妊娠|产后|产褥|流产|分娩|前列腺增生|阳痿|勃起|早泄|阿尔茨海默|围绝经")
FEMALE_DEPARTMENTS = {"妇科", "产科", "妇产科"}
AGE = re.compile(r"(\d+)\s*岁")
INFANT = re.compile(r"\d+\s*(?:个月|天|周)|新生儿|婴儿")
ADULT_AGE, CHILD_AGE = 18, 14


def patient_of(question: str) -> tuple[str | None, int | None]:
    """(sex "M"/"F"/None, age in years or None) of the 一名… patient of a question."""
    m = PERSON.search(question)
    if not m:
        return None, None
    text = m.group(0)
    sex = "M" if re.search(r"男", text) else "F" if re.search(r"女|孕妇|产妇", text) else None
    age = AGE.search(text)
    return sex, int(age.group(1)) if age else 0 if INFANT.search(text) else None


def impossible_patient(question: str, entry: Entry) -> str | None:
    """Why the question's patient cannot have the disease, or None."""
    name, depts = entry.name, set(entry.get("所属科室"))
    female = (bool(FEMALE_ONLY.search(name)) or bool(depts) and depts <= FEMALE_DEPARTMENTS) and not NEONATAL.search(
        name
    )
    child_disease = bool(CHILD_DISEASE.search(name) and not re.search(r"先天性", name)) or "新生儿科" in depts
    if "老人" in question and (female and not MALE_ONLY.search(name) or NEONATAL.search(name) or child_disease):
        return "家里老人 for an obstetric/neonatal/paediatric disease"
    sex, age = patient_of(question)
    if sex == "M" and female:
        return "male with an obstetric/gynaecological disease"
    if sex == "F" and MALE_ONLY.search(name):
        return "female with a male-only disease"
    if age is not None and age >= ADULT_AGE and child_disease:
        return "adult with a paediatric disease"
    if age is not None and age < CHILD_AGE and ADULT_ONLY.search(name):
        return "child with an adult-only disease"
    return None


def cause_8_impossible_patients(build: Build) -> dict:
    """Vignette/triage patients who cannot have the disease (sex, age, 家里老人)."""
    kinds, examples, total = Counter(), defaultdict(list), 0
    for r in build.records:
        if r["style"] not in ("vignette", "triage") or names_of(r)[0] not in build.entry_of:
            continue
        total += 1
        why = impossible_patient(r["instruction"], build.entry_of[names_of(r)[0]])
        if why:
            kinds[why] += 1
            examples[why].append(f"{names_of(r)[0]}: {r['instruction']}")
    return _result(
        "8 impossible patients",
        {
            "vignette/triage questions": total,
            "impossible patient": sum(kinds.values()),
            **{f"  {k}": n for k, n in kinds.most_common()},
        },
        {f"  {k}": v for k, v in examples.items()},
    )


# ----------------------------------------------------------------------------- 9 treatment asked, none given

ASKS_TREATMENT = re.compile(r"治疗|怎么治|如何治|怎样治|怎么办|如何处理|怎么处理|怎样处理|用什么药|吃什么药|该如何")


def cause_9_treatment_unanswered(build: Build) -> dict:
    """Vignettes whose question asks how to treat and whose answer states no treatment fact."""
    asked, unanswered = 0, []
    for r in build.records:
        if r["style"] != "vignette" or not ASKS_TREATMENT.search(r["instruction"]):
            continue
        asked += 1
        if not any(f["field"] in TREATMENT_FIELDS for f in r["facts"]):
            unanswered.append(f"{names_of(r)[0]}: {r['instruction']}")
    with_treatment = {
        names_of(r)[0]
        for r in build.records
        if any(f["field"] in TREATMENT_FIELDS for f in r["facts"])
        and build.entry_of.get(names_of(r)[0], None) is not None
        and build.entry_of[names_of(r)[0]].source == "cmekg"
    }
    return _result(
        "9 treatment asked, none given",
        {
            "vignettes asking how to treat": asked,
            "answer states no treatment": len(unanswered),
            "cmekg diseases with a treatment fact in some record": len(with_treatment),
        },
        {"answer states no treatment": unanswered},
    )


# ----------------------------------------------------------------------------- 10 weak findings, red flags

RED_FLAG_DISEASE = re.compile(
    r"破裂|休克|腹膜炎|大出血|出血性|心肌梗死|心梗|卒中|中风|脑出血|脑梗死|蛛网膜下腔出血|夹层|栓塞|"
    r"窒息|中毒|异位妊娠|宫外孕|宫角妊娠|输卵管妊娠|胎盘早剥|前置胎盘|子痫|扭转|绞窄|嵌顿|穿孔|"
    r"坏死性筋膜炎|脑膜炎|脓毒症|败血症|呼吸窘迫|气胸|急性心力衰竭|癫痫持续|昏迷|中暑|溺水|电击|烧伤"
)
RED_FLAG_FINDING = re.compile(
    r"^(?:休克|昏迷|抽搐|惊厥|呕血|大出血|胸痛|偏瘫|口角歪斜|言语不清|意识障碍|意识丧失|呼吸停止|窒息|"
    r"剧烈头痛|剧烈腹痛|腹膜刺激征)$"
)
NOT_ACUTE = re.compile(r"慢性|陈旧性|复发性")  # a chronic or recurrent course takes a disease off RED_FLAG_DISEASE
EMERGENCY = re.compile(r"急诊|120|急救")
URGENCY = re.compile(r"尽快|立即|马上|紧急|立刻|及早|尽早")


def is_red_flag(entry: Entry, findings: list[str]) -> bool:
    return bool(
        RED_FLAG_DISEASE.search(entry.name)
        and not NOT_ACUTE.search(entry.name)
        or any(RED_FLAG_FINDING.match(v) for v in findings)
    )


def cause_10_findings_and_urgency(build: Build) -> dict:
    """Vignette/triage questions with < MIN_FINDINGS findings or only non-specific ones; red-flag
    records (disease or stated finding) that route to a department without 急诊/120; urgency words in
    answers about non-red-flag diseases."""
    total, few, nonspecific, no_emergency, random_urgency = 0, [], [], [], []
    routed = 0
    for r in build.records:
        name = names_of(r)[0]
        entry = build.entry_of.get(name)
        if entry is None or entry.kind != "disease" or r["style"] == "comparison":
            continue
        findings = question_findings(r, entry) if r["style"] in ("vignette", "triage") else []
        if r["style"] in ("vignette", "triage"):
            total += 1
            if len(findings) < MIN_FINDINGS:
                few.append(f"{name}: {r['instruction']}")
            if findings and all(build.carriers[v] > NONSPECIFIC_DISEASES for v in findings):
                nonspecific.append(f"{name}: {'、'.join(findings)}")
        red = is_red_flag(entry, findings)
        if red and any(f["field"] == "所属科室" for f in r["facts"]):
            routed += 1
            if not EMERGENCY.search(r["output"]):
                no_emergency.append(f"{name}: {r['output']}")
        if not red and URGENCY.search(r["output"]):
            random_urgency.append(f"{name}: {r['output']}")
    return _result(
        "10 weak findings, red flags, urgency",
        {
            "vignette/triage questions": total,
            f"fewer than {MIN_FINDINGS} findings": len(few),
            f"all findings non-specific (> {NONSPECIFIC_DISEASES} diseases)": len(nonspecific),
            "red-flag records routed to a department": routed,
            "red flag without 急诊/120": len(no_emergency),
            "urgency word, not a red flag": len(random_urgency),
        },
        {
            f"fewer than {MIN_FINDINGS} findings": few,
            f"all findings non-specific (> {NONSPECIFIC_DISEASES} diseases)": nonspecific,
            "red flag without 急诊/120": no_emergency,
            "urgency word, not a red flag": random_urgency,
        },
    )


# ----------------------------------------------------------------------------- 11 departments

GENERIC_DEPARTMENTS = {"内科", "外科"}
PAEDIATRIC_DEPARTMENT = re.compile(r"儿|新生儿")
PAEDIATRIC_NAME = re.compile(r"小儿|新生儿|婴儿|婴幼儿|儿童|幼儿|早产儿")


def cause_11_departments(build: Build) -> dict:
    """Diseases of the build with only 内科/外科; paediatric entities (by name) without a paediatric department."""
    in_build = {n for r in build.records for n in names_of(r) if n in build.entry_of}
    diseases = [build.entry_of[n] for n in sorted(in_build) if build.entry_of[n].kind == "disease"]
    generic = [e.name for e in diseases if set(e.get("所属科室")) <= GENERIC_DEPARTMENTS]
    paediatric = [e for e in diseases if PAEDIATRIC_NAME.search(e.name)]
    no_paed = [
        f"{e.name} ({'、'.join(e.get('所属科室'))})"
        for e in paediatric
        if not any(PAEDIATRIC_DEPARTMENT.search(d) for d in e.get("所属科室"))
    ]
    return _result(
        "11 departments",
        {
            "diseases in the build": len(diseases),
            "only 内科/外科": len(generic),
            "paediatric entities": len(paediatric),
            "paediatric without a paediatric department": len(no_paed),
        },
        {"only 内科/外科": generic, "paediatric without a paediatric department": no_paed},
    )


# ----------------------------------------------------------------------------- 12 cMeKG treatments


def cause_12_cmekg_treatments(build: Build) -> dict:
    """Treatment facts (药物治疗/辅助治疗) whose source is cMeKG, and the diseases they belong to."""
    facts, records, diseases = 0, set(), Counter()
    for r in build.records:
        for f in r["facts"]:
            if f["field"] in TREATMENT_FIELDS and f["source"] == "cmekg":
                facts += 1
                records.add(r["id"])
                diseases[f.get("entity", names_of(r)[0])] += 1
    return _result(
        "12 treatment facts from cMeKG",
        {
            "facts": facts,
            "records": len(records),
            "diseases": len(diseases),
        },
        {"diseases": [f"{d} ({n})" for d, n in diseases.most_common()]},
    )


# ----------------------------------------------------------------------------- diversity


def diversity(build: Build) -> dict:
    """Distinct masked instruction and answer patterns and answer openings (first 6 masked characters)."""
    usable = [r for r in build.records if all(n in build.entry_of for n in names_of(r))]
    instructions = {masked_pattern(r["instruction"], r, build.entry_of) for r in usable}
    answers = [masked_pattern(r["output"], r, build.entry_of) for r in usable]
    return _result(
        "diversity after masking",
        {
            "records": len(usable),
            "instruction patterns": len(instructions),
            "answer patterns": len(set(answers)),
            "answer openings": len({a[:6] for a in answers}),
        },
    )


CAUSES = (
    cause_1_code_point_order,
    cause_2_comparisons,
    cause_3_not_symptoms,
    cause_4_near_duplicates,
    cause_5_diagnosis_in_question,
    cause_6_not_diseases,
    cause_7_alias_twins,
    cause_8_impossible_patients,
    cause_9_treatment_unanswered,
    cause_10_findings_and_urgency,
    cause_11_departments,
    cause_12_cmekg_treatments,
    diversity,
)


def audit(build: Build) -> dict[str, dict]:
    """Every cause's result, keyed by its function name."""
    return {f.__name__: f(build) for f in CAUSES}


def markdown(results: dict[str, dict]) -> str:
    lines = ["| cause | metric | count |", "| --- | --- | ---: |"]
    for res in results.values():
        for i, (metric, value) in enumerate(res["metrics"].items()):
            shown = ", ".join(f"{k} {v}" for k, v in value.items()) if isinstance(value, dict) else value
            lines.append(f"| {res['title'] if i == 0 else ''} | {metric.strip()} | {shown} |".replace("\n", " "))
    return "\n".join(lines) + "\n"


def main(train_path: str = DEFAULT_TRAIN, json_path: str = "", clinical: bool = False) -> None:
    """`python -m utils.knowledge.audit [train_path] [--json out.json]`: print the table, optionally write JSON;
    `--clinical`: the red-flag and patient counts over the knowledge base instead (utils.knowledge.clinical.measure)."""
    if clinical:
        from utils.knowledge.clinical import measure
        from utils.knowledge.cmekg import load_all

        print(json.dumps(measure(load_all()[0]), ensure_ascii=False, indent=1))
        return
    results = audit(load_build(train_path))
    print(markdown(results))
    if json_path:
        with open(json_path, "w", encoding="utf-8") as f:
            f.write(json.dumps(results, ensure_ascii=False, indent=2) + "\n")
        logger.info("wrote %s", json_path)


if __name__ == "__main__":
    import argparse

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("train_path", nargs="?", default=DEFAULT_TRAIN, help="train JSON Lines; .valid/.test beside it")
    parser.add_argument("--json", dest="json_path", default="", help="also write every result (with examples) here")
    parser.add_argument("--clinical", action="store_true", help="red-flag and patient counts over the knowledge base")
    main(**vars(parser.parse_args()))
