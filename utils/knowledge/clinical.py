"""Clinical rules for generated records: who can have a disease, and when a question is an emergency.

Two rule sets, both read from a knowledge entry (name and aliases, departments, 多发人群, 发病部位) and nothing
else, both deterministic:

* **Patients** (issue #19, cause 8): :func:`patient_profile` says which sexes and ages can have the disease, and
  :func:`make_person` draws one such patient ("一名45岁男性", "一名出生5天的新生儿", "一名30岁孕妇") together with
  the voices that may ask about them (the patient, a parent, an adult child for an elderly parent).
* **Red flags** (issue #19, cause 10): :func:`urgency` says whether a record about the disease, showing the given
  findings, must tell the reader to go to the emergency department now (:data:`EMERGENCY_SENTENCES`), or is routine
  (no urgency word at all; :func:`states_urgency` checks an answer). Urgency is never drawn at random.

    python -m utils.knowledge.clinical report     # counts over our entries + the installed cMeKG, per rule

Where a rule would need a physician's judgement it is not made: :data:`LEFT_OUT` lists those cases, and
:func:`rules_table` prints both the rules and that list for the data card.
"""

from __future__ import annotations

import logging
import math
import random
import re
from collections import Counter
from dataclasses import dataclass

from utils.knowledge import lexicon
from utils.knowledge.schema import Entry

logger = logging.getLogger(__name__)

# ============================================================================ patients: who can have the disease

MALE, FEMALE = "男", "女"
BOTH = frozenset({MALE, FEMALE})
NEONATE_MAX = 28 / 365  # years: the neonatal period is the first 28 days
ADULT = (18.0, 75.0)  # the patient when the entry gives no evidence: an adult of either sex
CHILD = (0.0, 13.0)  # paediatrics in China: under 14
CHILDBEARING = (20.0, 42.0)  # a pregnant, postpartum or lactating woman
OLD_AGE = 65  # "家里老人" from this age
SELF_AGE = 14  # from this age a patient may ask in the first person

# Conditions of an obstetric patient (the text of make_person): she knows she is pregnant (孕妇), has just given
# birth (产妇), is breastfeeding, or may not know yet (ectopic pregnancy, miscarriage, mole: "一名28岁女性", the
# 停经 is a finding of the question, not a label of the patient).
PREGNANT, POSTPARTUM, LACTATING, EARLY_PREGNANCY = "pregnant", "postpartum", "lactating", "early_pregnancy"
CONDITION_NOUN = {PREGNANT: "孕妇", POSTPARTUM: "产妇", LACTATING: "哺乳期女性", EARLY_PREGNANCY: "女性"}

# Who may ask: "clinical" = a third-person case ("{person}，出现…"); "self" = the patient in the first person;
# "parent" = a parent about a child ("我家孩子…"); "elder" = an adult child about an elderly parent ("家里老人…").
VOICES = ("clinical", "self", "parent", "elder")


@dataclass(frozen=True)
class Cohort:
    """One group of patients: sexes, an age range in years (fractions for infants), an obstetric condition."""

    sexes: frozenset[str]
    low: float
    high: float
    condition: str = ""

    @property
    def neonatal(self) -> bool:
        return self.high <= NEONATE_MAX

    def voices(self) -> tuple[str, ...]:
        found = ["clinical"]
        if self.high >= SELF_AGE:
            found.append("self")
        if self.low < 18:
            found.append("parent")
        if self.high >= OLD_AGE and not self.condition:
            found.append("elder")
        return tuple(found)


@dataclass(frozen=True)
class Profile:
    """Who can have a disease: one or more cohorts, and the evidence each restriction came from."""

    cohorts: tuple[Cohort, ...]
    evidence: tuple[str, ...] = ()  # "name:小儿", "department:儿科", "多发人群:中老年男性", "site:前列腺", "conflict:…"

    @property
    def sexes(self) -> frozenset[str]:
        return frozenset().union(*(c.sexes for c in self.cohorts))

    @property
    def age_range(self) -> tuple[float, float]:
        return min(c.low for c in self.cohorts), max(c.high for c in self.cohorts)

    @property
    def neonatal(self) -> bool:
        return all(c.neonatal for c in self.cohorts)

    @property
    def paediatric(self) -> bool:
        return all(c.high < 18 for c in self.cohorts)

    @property
    def obstetric(self) -> bool:
        return any(c.condition for c in self.cohorts)

    @property
    def geriatric(self) -> bool:
        """A disease of old age (every cohort 60 or older)."""
        return all(c.low >= 60 for c in self.cohorts)

    @property
    def voices(self) -> tuple[str, ...]:
        found = {v for c in self.cohorts for v in c.voices()}
        return tuple(v for v in VOICES if v in found)

    @property
    def kinds(self) -> tuple[str, ...]:
        """The restrictions, for counting: male/female, neonatal/paediatric/geriatric/age, obstetric."""
        kinds = []
        if self.sexes != BOTH:
            kinds.append("male" if self.sexes == {MALE} else "female")
        if self.neonatal:
            kinds.append("neonatal")
        elif self.paediatric:
            kinds.append("paediatric")
        elif self.geriatric:
            kinds.append("geriatric")
        elif self.age_range != ADULT:
            kinds.append("age")
        if self.obstetric:
            kinds.append("obstetric")
        return tuple(kinds)


@dataclass(frozen=True)
class Person:
    """One drawn patient: the text for a question, and what a template may say about them."""

    text: str  # "一名45岁男性"
    sex: str  # 男 | 女
    age_years: float
    condition: str  # "" or one of CONDITION_NOUN's keys
    voices: tuple[str, ...]  # who may ask about this patient (VOICES)
    pronoun: str  # 他 | 她 ("家里老人…，应该带她去看哪个科？")


# --- evidence from the name. Masked first: words that contain an age or sex word but say nothing about the patient.
NAME_MASK = re.compile(
    r"巨幼|幼虫|幼稚|畸胎|胎记|胎儿乙醇|乳头状|乳头肌|视神经乳头|肛乳头|泌乳素|乳糜|乳糖|乳酸|乳突|迭宫"
)
NAME_AGES: tuple[tuple[str, tuple[float, float]], ...] = (
    (r"新生儿|早产儿|过期产儿|足月小样儿|小于胎龄儿|胎粪|羊水吸入|产瘤", (0.0, NEONATE_MAX)),
    (r"婴幼儿", (0.0, 3.0)),  # from birth: a newborn is an infant too (make_person draws months unless neonatal)
    (r"婴儿", (0.0, 1.0)),
    (r"幼儿", (1.0, 3.0)),
    (r"小儿|患儿|男童|女童|幼女|童年", CHILD),
    (r"儿童|少儿", (1.0, 13.0)),
    (r"幼年", (1.0, 16.0)),
    (r"青少年|少年|青春期", (10.0, 18.0)),
    (r"老年|老人", (60.0, 90.0)),
    (r"绝经后", (50.0, 80.0)),
    (r"围绝经|更年期", (45.0, 58.0)),
    (r"绝经", (45.0, 75.0)),
)
# obstetric names: the patient is the woman (a fetal problem is asked about by the pregnant woman)
NAME_EARLY_PREGNANCY = re.compile(
    r"异位妊娠|宫外孕|输卵管妊娠|卵巢妊娠|腹腔妊娠|宫角妊娠|宫颈妊娠|瘢痕妊娠|葡萄胎|流产|胎儿停育"
    r"|滋养细胞|绒毛膜癌"
)
NAME_POSTPARTUM = re.compile(r"产后|产褥|恶露|席汉|蓐劳")
NAME_PREGNANT = re.compile(
    r"妊娠|孕期|孕妇|早孕|难产|临产|分娩|羊水|胎盘|脐带|胎位|胎儿|胎膜|破水|先露|子痫|围生期|产科"
)
NAME_FEMALE = re.compile(
    r"子宫|宫颈|宫腔|宫角|宫内膜|宫寒|卵巢|输卵管|阴道|外阴|附件炎|盆腔炎|月经|痛经|闭经|经前|经期|绝经"
    r"|排卵|黄体|孕酮|乳腺|乳房|乳晕|积乳|乳头皲裂|前庭大腺|处女膜|阴挺|带下|女性|妇女|幼女|少女"
)
NAME_MALE = re.compile(
    r"前列腺|睾丸|附睾|阴茎|阴囊|精索|精囊|输精管|包皮|龟头|包茎|少精|无精|弱精|血精|遗精|早泄|阳痿|勃起"
    r"|隐睾|男性|男子|男童|男孩"
)
NAME_BREAST = re.compile(r"乳腺|乳房|乳晕|积乳|乳头皲裂")
# Breast diseases are taken as female: male breast cancer is about 1% of breast cancers, a male patient in a
# breast-cancer vignette is atypical, and a name that means men says so (男性乳腺癌, 男性乳房肥大症).

# --- evidence from the departments and the organ
PAEDIATRIC_DEPARTMENTS = frozenset(lexicon.PAEDIATRIC_DEPARTMENTS)
FEMALE_DEPARTMENTS = frozenset({"妇科", "产科", "妇产科"})
MALE_DEPARTMENTS = frozenset({"男科"})
SEX_NEUTRAL_DEPARTMENTS = frozenset({"肿瘤科"})  # an ovarian tumour is in 妇科 + 肿瘤科
SITE_FEMALE = re.compile(r"^(子宫|宫颈|宫腔|卵巢|输卵管|阴道|外阴|乳腺|乳房|乳头|乳晕|胎盘|阴蒂|阴唇|前庭大腺|附件)")
SITE_MALE = re.compile(r"^(前列腺|睾丸|附睾|阴茎|阴囊|精索|精囊|输精管|包皮|龟头)")

# --- 多发人群: each value is split into parts; a part names a sex, an age, an obstetric condition, or nothing
GROUP_SPLIT = re.compile(r"[和及与、,，/;；]|以及")
GROUP_RANGE = re.compile(r"(\d+)\s*(个月|岁)?\s*[~～\-—–至到]\s*(\d+)\s*(个月|岁)")
GROUP_BOUND = re.compile(r"(\d+)\s*(个月|岁)\s*(以上|以后|后|以下|以内|前|左右)")
GROUP_AGES: tuple[tuple[str, tuple[float, float]], ...] = (  # first match wins: longer words first
    ("新生儿", (0.0, NEONATE_MAX)),
    ("早产儿", (0.0, NEONATE_MAX)),
    ("胎儿", (0.0, NEONATE_MAX)),
    ("小婴儿", (0.0, 0.5)),
    ("婴幼儿", (0.0, 3.0)),
    ("婴儿", (0.0, 1.0)),
    ("男婴", (0.0, 1.0)),
    ("女婴", (0.0, 1.0)),
    ("幼儿", (1.0, 3.0)),
    ("学龄前", (3.0, 6.0)),
    ("学龄", (6.0, 12.0)),
    ("小儿", CHILD),
    ("患儿", CHILD),
    ("儿童", (1.0, 14.0)),
    ("男孩", (1.0, 14.0)),
    ("女孩", (1.0, 14.0)),
    ("男童", (1.0, 14.0)),
    ("女童", (1.0, 14.0)),
    ("少儿", (6.0, 14.0)),
    ("低龄", (1.0, 6.0)),
    ("青少年", (12.0, 18.0)),
    ("少年", (10.0, 17.0)),
    ("青春期", (11.0, 18.0)),
    ("少女", (12.0, 18.0)),
    ("青壮年", (18.0, 45.0)),
    ("中青年", (25.0, 50.0)),
    ("青中年", (25.0, 50.0)),
    ("青年", (18.0, 35.0)),
    ("年轻", (18.0, 35.0)),
    ("中老年", (45.0, 80.0)),
    ("中年以上", (40.0, 80.0)),
    ("中年", (40.0, 60.0)),
    ("老年", (60.0, 90.0)),
    ("老人", (60.0, 90.0)),
    ("年老", (65.0, 90.0)),
    ("高龄", (65.0, 90.0)),
    ("成年", ADULT),
    ("成人", ADULT),
    ("育龄", (20.0, 45.0)),
    ("生育年龄", (20.0, 45.0)),
    ("生育期", (20.0, 45.0)),
    ("绝经", (50.0, 75.0)),
    ("闭经后", (50.0, 75.0)),
    ("更年期", (45.0, 58.0)),
)
GROUP_CONDITIONS = ((r"孕|妊娠|初产妇", PREGNANT), (r"(?<!经)产妇|产后", POSTPARTUM), (r"哺乳", LACTATING))


def _years(number: str, unit: str | None) -> float:
    return int(number) / 12 if unit == "个月" else float(int(number))


GroupPart = tuple[frozenset[str] | None, tuple[float, float] | None, str]  # sexes, age range, condition (None: any)


def parse_group(value: str) -> list[GroupPart]:
    """What one 多发人群 value says, part by part ("儿童和老年妇女" is two parts); parts that say nothing are
    skipped."""
    parts = []
    for part in GROUP_SPLIT.split(value):
        if "男女" in part or "各年龄" in part or "普遍" in part:
            continue  # "男女均可发生", "各年龄段人群": no restriction
        sexes = None
        if re.search(r"女|妇|孕|产妇|少女", part):
            sexes = frozenset({FEMALE})
        elif "男" in part:
            sexes = frozenset({MALE})
        condition = next((c for pattern, c in GROUP_CONDITIONS if re.search(pattern, part)), "")
        ages = None
        if m := GROUP_RANGE.search(part):
            a, b = _years(m.group(1), m.group(2) or m.group(4)), _years(m.group(3), m.group(4))
            ages = (min(a, b), max(a, b))
        elif m := GROUP_BOUND.search(part):
            n = _years(m.group(1), m.group(2))
            if m.group(3) in ("以上", "以后", "后"):
                ages = (n, min(n + 30, 90.0))
            elif m.group(3) == "左右":
                ages = (max(0.0, n - 5), n + 5)
            else:
                ages = (0.0 if n <= 18 else 18.0, n)
        else:
            ages = next((r for word, r in GROUP_AGES if word in part), None)
        if condition:
            sexes = frozenset({FEMALE})
        if sexes or ages or condition:
            parts.append((sexes, ages, condition))
    return parts


def _overlap(a: tuple[float, float] | None, b: tuple[float, float] | None) -> tuple[float, float] | None | bool:
    """Intersection of two age ranges (None = unrestricted); False when they do not meet."""
    if a is None or b is None:
        return a or b
    low, high = max(a[0], b[0]), min(a[1], b[1])
    return (low, high) if low <= high else False


def _name_evidence(names: tuple[str, ...]) -> tuple[frozenset[str] | None, tuple[float, float] | None, str, list[str]]:
    """Sex, age range and obstetric condition the disease's names imply, with the words that implied them."""
    sexes, ages, condition, notes = None, None, "", []
    for name in names:
        text = NAME_MASK.sub("_", name)
        for pattern, rng in NAME_AGES:
            if m := re.search(pattern, text):
                ages = rng if ages is None else (min(ages[0], rng[0]), max(ages[1], rng[1]))
                notes.append(f"name:{m.group(0)}")
                text = text.replace(m.group(0), "_")  # 婴幼儿 is not also 幼儿
        for pattern, cond in (
            (NAME_EARLY_PREGNANCY, EARLY_PREGNANCY),
            (NAME_POSTPARTUM, POSTPARTUM),
            (NAME_PREGNANT, PREGNANT),
        ):
            if not condition and ages != (0.0, NEONATE_MAX) and (m := pattern.search(text)):
                condition = cond
                notes.append(f"name:{m.group(0)}")
        female, male = NAME_FEMALE.search(text), NAME_MALE.search(text)
        if female and male and re.search(r"男性|男子", text) and NAME_BREAST.search(text):
            female = None  # 男性乳腺癌: the explicit word wins over the organ
        if condition or (female and not male):
            sexes = frozenset({FEMALE})
            notes += [f"name:{female.group(0)}"] if female else []
        elif male and not female:
            sexes = frozenset({MALE})
            notes.append(f"name:{male.group(0)}")
        if sexes or ages is not None or condition:
            break  # the first name with evidence decides: 小儿脑积水's alias 胎儿脑积水 is no pregnant patient
    return sexes, ages, condition, notes


def patient_profile(entry: Entry) -> Profile:
    """Which patients can have this disease, from its names, departments, organ and 多发人群.

    Precedence: the name, then the organ (发病部位) for sex, then the departments (only when every department
    agrees: 儿科 alone, or 妇科/产科/妇产科 with at most 肿瘤科, or 男科); this is the frame. 多发人群 then narrows
    the frame: each cohort it names is intersected with the frame, and cohorts that contradict it (a neonatal
    disease whose 多发人群 says 老年) are dropped and noted; when all contradict, the frame stands alone. Groups that
    say nothing about sex or age (肥胖者, 农民, 糖尿病) are ignored. No evidence at all: adults of either sex.
    """
    sexes, ages, condition, notes = _name_evidence(entry.names)
    departments = set(entry.get("所属科室"))
    if ages is None and departments and departments <= PAEDIATRIC_DEPARTMENTS:
        ages = (0.0, NEONATE_MAX) if departments == {"新生儿科"} else CHILD
        notes.append("department:" + "/".join(sorted(departments)))
    if sexes is None:
        sites = entry.get("发病部位")
        if sites and all(SITE_FEMALE.match(s) for s in sites):
            sexes = frozenset({FEMALE})
            notes.append(f"site:{sites[0]}")
        elif sites and all(SITE_MALE.match(s) for s in sites):
            sexes = frozenset({MALE})
            notes.append(f"site:{sites[0]}")
    if sexes is None and departments:
        if departments & FEMALE_DEPARTMENTS and departments <= FEMALE_DEPARTMENTS | SEX_NEUTRAL_DEPARTMENTS:
            sexes = frozenset({FEMALE})
            notes.append("department:" + "/".join(sorted(departments & FEMALE_DEPARTMENTS)))
            if departments & FEMALE_DEPARTMENTS == {"产科"} and ages is None:
                condition = PREGNANT
        elif departments & MALE_DEPARTMENTS and departments <= MALE_DEPARTMENTS | {"泌尿外科"}:
            sexes = frozenset({MALE})
            notes.append("department:男科")
    if condition:
        ages = _overlap(ages, CHILDBEARING) or CHILDBEARING

    cohorts: list[Cohort] = []
    dropped: list[str] = []
    for value in entry.get("多发人群"):
        for g_sexes, g_ages, g_condition in parse_group(value):
            c_sexes = (sexes or BOTH) & (g_sexes or BOTH)
            g_ages = g_ages or (CHILDBEARING if g_condition else None)
            c_ages = _overlap(ages, g_ages)
            c_condition = condition or (g_condition if c_sexes == {FEMALE} else "")
            if c_condition and c_ages:
                c_ages = _overlap(c_ages, CHILDBEARING)
            if not c_sexes or c_ages is False:
                dropped.append(value)
                continue
            if c_condition and c_ages is None:
                c_ages = CHILDBEARING
            cohort = Cohort(frozenset(c_sexes), *(c_ages or ADULT), c_condition)
            if cohort not in cohorts:
                cohorts.append(cohort)
                notes.append(f"多发人群:{value}")
    if dropped:
        notes.append("conflict:多发人群 " + "、".join(dict.fromkeys(dropped)) + " contradicts the name/department")
    if not cohorts:
        cohorts = [Cohort(sexes or BOTH, *(ages or ADULT), condition)]
    return Profile(tuple(cohorts), tuple(dict.fromkeys(notes)))


def make_person(profile: Profile, rng: random.Random) -> Person:
    """One patient of the profile: a cohort, then a sex and an age within it, and the text for a question."""
    cohort = rng.choice(profile.cohorts)
    sex = rng.choice(sorted(cohort.sexes))
    one_sex = len(cohort.sexes) == 1
    baby = "男婴" if sex == MALE else "女婴"
    if cohort.neonatal:
        days = rng.randint(max(1, round(cohort.low * 365)), max(1, round(cohort.high * 365)))
        age, text = days / 365, f"一名出生{days}天的{baby if one_sex else '新生儿'}"
    else:
        years = (
            0
            if cohort.high <= 1
            else rng.randint(0 if cohort.low < 1 else math.ceil(cohort.low), math.floor(cohort.high))
        )  # an infant (<= 1 year) in months
        if years == 0:
            months = rng.randint(max(1, math.ceil(cohort.low * 12)), min(11, max(1, math.floor(cohort.high * 12))))
            age, text = months / 12, f"一名{months}个月大的{baby}"
        else:
            if years < 12:
                noun = "男孩" if sex == MALE else "女孩"
            elif years < 18:
                noun = "少年" if sex == MALE else "少女"
            else:
                noun = CONDITION_NOUN.get(cohort.condition) or ("男性" if sex == MALE else "女性")
            age, text = float(years), f"一名{years}岁{noun}"
    voices = ["clinical"]
    if age >= SELF_AGE:
        voices.append("self")
    if age < 18:
        voices.append("parent")
    if age >= OLD_AGE and not cohort.condition:
        voices.append("elder")
    return Person(text, sex, age, cohort.condition, tuple(voices), "他" if sex == MALE else "她")


# ============================================================================ red flags: when to say 立即急诊

EMERGENCY, ROUTINE = "emergency", "routine"
EMERGENCY_SENTENCES = (  # each says 立即 and 急诊 (states_urgency holds for every one)
    "这可能是急症，请立即拨打120或到最近的医院急诊就诊。",
    "情况可能危急，请立即拨打120或马上到医院急诊科就诊。",
    "这属于需要紧急处理的情况，应立即到医院急诊就诊，必要时拨打120。",
)
ROUTINE_SENTENCES = (  # no urgency word at all (states_urgency is False for every one)
    "建议到医院相关科室门诊就诊，由医生面诊后明确诊断。",
    "可以到医院门诊就诊，医生会结合检查结果明确诊断。",
)
EMERGENCY_DEPARTMENT = "急诊科"
# Words that make an answer urgent. A routine record contains none of them; an emergency record contains at least
# 立即 and 急诊 or 120. 尽早 is not one: "早期诊断、尽早治疗" is advice about a chronic disease, not triage.
EMERGENCY_WORDS = ("立即", "立刻", "马上", "尽快", "赶快", "赶紧", "即刻", "紧急", "急诊", "急救", "120")
PHONE_120 = r"(?<![\d.])120(?![\d./]|\s*(mg|ml|mmHg|次|天|分钟|毫))"  # the number to call, not 120/80mmHg or 120mg
URGENCY_PATTERN = re.compile("|".join(w for w in EMERGENCY_WORDS if w != "120") + "|" + PHONE_120)


def states_urgency(text: str) -> bool:
    """Whether the text tells the reader to act urgently (any of EMERGENCY_WORDS; 120 only as the phone number)."""
    return bool(URGENCY_PATTERN.search(text))


@dataclass(frozen=True)
class Rule:
    """One red flag: a disease whose name matches `disease` (and not `disease_not`), or findings shown in the
    question of which, for some alternative in `findings`, every pattern matches at least one finding."""

    name: str
    label: str  # for the data card
    disease: str = ""
    disease_not: str = ""
    findings: tuple[tuple[str, ...], ...] = ()
    neonate_only: bool = False  # findings count only when the patient is a newborn
    level: str = EMERGENCY


# A finding that negates itself ("无意识障碍", "一过性意识丧失") never fires.
FINDING_NOT = re.compile(r"^(无|不伴|没有|否认)|一过性|短暂")
NEONATAL_NAMES = r"新生儿|早产儿"

RULES: tuple[Rule, ...] = (
    Rule(
        "neonatal_distress",
        "新生儿危重表现",
        disease=r"新生儿.{0,6}(窒息|呼吸窘迫|败血症|坏死性小肠结肠炎|化脓性脑膜炎|惊厥|休克|呼吸暂停|胃穿孔|肺出血|颅"
        r"内出血"
        r"|胆红素脑病|破伤风|硬肿|寒冷损伤|持续性肺动脉高压|呕血)|胎粪吸入|羊水.{0,3}吸入",
        findings=(
            (
                r"呼吸困难|呼吸急促|气促|呻吟|青紫|发绀|紫绀|拒奶|不吃奶|吸吮无力|呼吸暂停|惊厥|抽搐|嗜睡|反应差|反应"
                r"低下"
                r"|体温不升|发热|高热|呕血|便血|面色发灰",
            ),
            (r"呕吐|吐奶", r"腹胀|腹部.{0,2}膨胀|脱水"),
        ),  # a newborn's bowel obstruction
        neonate_only=True,
    ),
    Rule(
        "anaphylaxis",
        "过敏性休克 / 喉头水肿",
        disease=r"过敏性休克|喉头水肿|喉水肿",
        findings=((r"过敏性休克|喉头水肿|喉水肿|喉头发紧|喉头紧缩|舌咽肿|舌肿|咽喉肿|咽部水肿",),),
    ),  # the airway
    Rule(
        "shock",
        "休克",
        disease=r"休克",
        findings=(
            (r"休克|血压骤降|急骤血压下降|血压急剧下降",),
            (r"血压下降|低血压|血压降低|血压测不到", r"意识|神志|烦躁|淡漠|湿冷|厥冷|脉搏细|脉细|少尿|无尿"),
        ),
    ),
    Rule(
        "cardiac_arrest",
        "心跳呼吸骤停、致命性心律失常、急性心衰",
        disease=r"心脏骤停|心搏骤停|心跳骤停|呼吸骤停|猝死|阿[-—–]?斯综合征|心室颤动|室颤|尖端扭转|急性心力衰竭|急性左"
        r"心衰"
        r"|急性肺水肿|心脏压塞|心包填塞",
        findings=((r"心脏骤停|心跳骤停|心搏骤停|呼吸心跳停止|呼吸骤停|呼吸停止",), (r"粉红色泡沫[样状]?痰|端坐呼吸",)),
    ),  # acute pulmonary oedema
    Rule(
        "acute_chest_pain",
        "急性胸痛（心肌梗死、主动脉夹层、肺栓塞）",
        disease=r"心肌梗死|心肌梗塞|心梗|急性冠脉综合征|急性冠状动脉综合征|不稳定型心绞痛|主动脉夹层|夹层动脉瘤|肺栓塞"
        r"|肺动脉栓塞"
        r"|肺梗死",
        disease_not=r"梗死后|陈旧|室壁瘤",
        findings=(
            (r"胸痛|胸骨后.{0,4}痛|心前区.{0,4}痛|胸部.{0,4}痛", r"大汗|冷汗|出汗|濒死|呼吸困难|气促|晕厥|放射"),
            (r"剧烈胸痛|压榨[样性].{0,2}痛|撕裂样.{0,2}痛",),
        ),
    ),
    Rule(
        "stroke",
        "卒中征象",
        disease=r"卒中|中风|脑梗死|脑梗塞|脑出血|脑栓塞|蛛网膜下腔出血|短暂性脑缺血|脑血管意外|颅内出血|脑室内出血|脑疝"
        r"|颅内血肿|颅后窝血肿|硬膜外血肿|急性硬膜下血肿|脑内血肿|硬脑膜[下外]血肿",
        disease_not=r"后遗症|痴呆|腔隙|无症状|陈旧|恢复期|脑膜脑疝",
        findings=(
            (
                r"(突发|突然).{0,6}(偏瘫|肢体无力|肢体麻木|口角歪斜|口眼歪斜|面瘫|言语不清|说话不清|言语含糊|失语"
                r"|剧烈头痛)|雷击样头痛",
            ),
            (r"剧烈头痛|头痛剧烈", r"颈项强直|颈强直|颈抵抗|脑膜刺激征"),  # subarachnoid haemorrhage
            # meningism with a focal sign or repeated vomiting (a ruptured aneurysm, a brain abscess)
            (r"颈项强直|颈强直|颈抵抗|脑膜刺激征", r"偏瘫|失语|意识障碍|昏迷|喷射性呕吐|频繁呕吐"),
        ),
    ),
    Rule(
        "altered_consciousness",
        "意识障碍、持续抽搐",
        disease=r"昏迷|癫痫持续状态|惊厥持续状态",
        findings=(
            (
                r"昏迷|意识障碍|意识不清|意识丧失|意识模糊|神志不清|神志模糊|神志障碍|不省人事|人事不省|癫痫持续状态"
                r"|惊厥持续"
                r"|持续抽搐|抽搐不止",
            ),
        ),
    ),
    Rule(
        "meningitis",
        "细菌性脑膜炎（发热伴颈项强直）",
        disease=r"脑膜炎",
        disease_not=r"结核|隐球菌|无菌|病毒|莫拉雷|肺炎|脑膜炎症|色素膜|葡萄膜",  # 色素膜—脑膜炎 = VKH
        findings=((r"发热|高热|发烧", r"颈项强直|颈强直|颈抵抗|脑膜刺激征"),),
    ),
    Rule(
        "major_bleeding",
        "大出血",
        disease=r"大出血|消化道出血|产后出血|大咯血|肺出血|胆道出血|腹膜后出血|呕血",
        disease_not=r"肾炎",  # 肺出血-肾炎综合征 (Goodpasture): an autoimmune disease, not a bleed to triage
        findings=(
            (
                r"大出血|大量出血|出血不止|内脏出血|呕血|吐血|大咯血|大量咯血|咯血不止|大量便血|便血量大|阴道大出血"
                r"|大量阴道[出流]血",
            ),
        ),
    ),
    Rule(
        "ectopic_pregnancy",
        "异位妊娠（停经、腹痛、阴道出血）",
        disease=r"异位妊娠|宫外孕|输卵管妊娠|卵巢妊娠|腹腔妊娠|宫角妊娠|宫颈妊娠|瘢痕妊娠|间质部妊娠",
        findings=((r"停经", r"腹痛|腹部疼痛", r"阴道[出流]血"),),
    ),
    Rule("obstetric", "产科急症", disease=r"胎盘早剥|(?<!先兆)子痫(?!前期)|羊水栓塞|脐带脱垂|子宫内翻|胎儿窘迫"),
    Rule(
        "rupture",
        "脏器或血管破裂",
        disease=r"(脾|肝|肾|膀胱|子宫|动脉瘤|窦瘤|食管|胃|肠|心脏|主动脉|黄体|卵巢|囊肿|眼球|巩膜|海绵体|膈肌|胰|胆囊)"
        r".{0,6}破裂",
        disease_not=r"鼓膜|半月板|肩袖|韧带|肌腱|跟腱|椎间盘|纤维环|腘窝|迷路|假体",
    ),
    Rule(
        "peritonitis",
        "腹膜炎",
        disease=r"腹膜炎",
        disease_not=r"结核|慢性|良性|盆腔|淋球菌|包裹|硬化",
        findings=((r"腹膜炎|腹膜刺激征|板状腹|腹肌紧张|腹壁紧张|腹肌强直|反跳痛",),),
    ),
    Rule(
        "acute_abdomen",
        "急腹症（肠套叠、嵌顿疝、肠扭转、肠梗阻、穿孔、急性阑尾炎、急性胰腺炎）",
        disease=r"肠套叠|嵌顿疝|疝.{0,4}嵌顿|嵌顿性.{0,6}疝|嵌顿包茎|包皮嵌顿|绞窄|肠扭转|结肠扭转|盲肠扭转|胃扭转|大"
        r"网膜扭转"
        r"|肠梗阻|急腹症|阑尾炎|急性.{0,4}胰腺炎|梗阻性化脓性胆管炎|急性化脓性胆管炎|肠系膜.{0,6}(栓塞|梗死|血栓|缺血)"
        r"|急性出血.{0,3}坏死性.{0,2}肠炎|(胃|十二指肠|溃疡|肠|食管|消化道).{0,3}穿孔",
        disease_not=r"慢性|假性|麻痹性|痉挛性|神经性|动力性",
    ),
    Rule(
        "torsion", "睾丸/卵巢扭转及男性急症", disease=r"睾丸扭转|精索扭转|卵巢.{0,6}扭转|附件扭转|阴茎异常勃起|阴茎折断"
    ),
    Rule(
        "poisoning",
        "急性中毒",
        disease=r"中毒|肉毒",  # 伤口肉毒症: botulism paralyses the breathing muscles
        # 碱中毒 is alkalosis only as a whole name: 麻黄碱中毒 and 氨茶碱中毒 are poisonings by alkaloids
        disease_not=r"中毒性|酸中毒|^(代谢性|呼吸性)"
        r"?碱中毒|慢性|地方性|迟发|酒中毒|酒精中毒性|维生素|吸烟|氧中毒"
        r"|水中毒"
        r"|(?<!神经型)食物中毒|铅|汞|锰|镉|铍|铋|铜|锑|(?<!羰基)镍|铝|钡|铊|砷|苯中毒|重金属|二硫化碳",
    ),
    Rule(
        "respiratory_failure",
        "急性呼吸衰竭、哮喘持续状态、气道梗阻",
        disease=r"呼吸衰竭|呼吸窘迫综合征|哮喘持续状态|重症哮喘|危重哮喘|急性会厌炎|喉梗阻|呼吸道异物|气管.{0,3}异物"
        r"|支气管异物|窒息|张力性气胸|开放性气胸|创伤性气胸|血气胸|连枷胸",
        disease_not=r"慢性",
        findings=((r"呼吸衰竭|呼吸窘迫|窒息|喉梗阻|三凹征|呼吸道梗阻",),),
    ),
    Rule(
        "trauma_environment",
        "严重创伤、烧伤、电击、淹溺、中暑（热射病）、低体温",
        disease=r"大面积烧伤|重度烧伤|特重度烧伤|烧伤休克|吸入性损伤|喉烧伤|咽喉部烧伤|化学烧伤|化学性烧伤|酸烧伤|碱烧"
        r"伤|酸碱灼伤"
        r"|眼烧伤|电击伤|电损伤|电烧伤|电弧烧伤|电接触烧伤|触电|淹溺|溺水|多发伤|复合伤|火器伤|火器性|热射病|重症中暑"
        r"|冻僵|低温症|毒蛇咬伤",
        disease_not=r"所致",
    ),  # 电击伤所致脊髓病: a late sequela
    Rule(
        "metabolic_crisis",
        "代谢/内分泌危象（酮症酸中毒、高渗昏迷、甲亢危象…）",
        disease=r"酮症酸中毒|高渗性.{0,6}昏迷|高渗状态|乳酸性酸中毒|甲亢危象|甲状腺危象|肾上腺危象|垂体危象|高血压危象"
        r"|高血压急症|高血压脑病|恶性高血压|低血糖昏迷",
    ),
    Rule(
        "sepsis",
        "脓毒症、暴发性感染",
        disease=r"败血症|脓毒症|脓毒血症|感染性休克|多器官功能|多系统器官功能|暴发性肝衰竭|急性肝衰竭|气性坏疽|坏死性"
        r"筋膜炎"
        r"|福尼尔坏疽|破伤风|脑型疟疾|重症疟疾|凶险型疟疾",
        disease_not=r"亚败血症|败血症肾损害|巴斯德菌",
    ),
    Rule(
        "vascular_eye",
        "急性动脉栓塞、急性闭角型青光眼、视网膜中央动脉阻塞",
        disease=r"急性动脉栓塞|(周围|肢体|四肢|下肢|上肢|肾)动脉.{0,4}栓塞|空气栓塞|脂肪栓塞|急性.{0,4}闭角型青光眼"
        r"|急性青光眼|青光眼急性发作|晶状体膨胀.{0,4}青光眼|视网膜中央动脉阻塞|眼球穿通伤"
        r"|眼化学伤",
    ),
)
RULES_BY_NAME = {r.name: r for r in RULES}

# What a physician has to decide, so no rule makes it (the data card quotes this list).
LEFT_OUT: tuple[tuple[str, str], ...] = (
    (
        "胸痛 alone (肋软骨炎, 带状疱疹, 胃食管反流)",
        "emergency only with 大汗/濒死感/呼吸困难/晕厥/放射痛, as 剧烈/压榨样/"
        "撕裂样, or when the disease is an acute coronary syndrome, dissection or pulmonary embolism",
    ),
    (
        "偏瘫, 失语, 言语不清, 口角歪斜/口眼歪斜 without 突发",
        "chronic in 脑性瘫痪, 痴呆, 面神经炎; the knowledge base "
        "records no onset, and only a sudden onset is a stroke sign",
    ),
    (
        "抽搐/惊厥 alone",
        "a single self-limited seizure in known epilepsy or a febrile seizure; only 持续/不止 and "
        "status epilepticus fire (and any seizure in a newborn)",
    ),
    ("呼吸困难, 发绀 alone in a child or an adult", "chronic in COPD, heart failure, congenital heart disease"),
    ("黑便/柏油样便, 咯血 without 大量, 鼻出血, 阴道出血 in pregnancy (先兆流产, 前置胎盘)", "the amount decides"),
    ("晕厥, 一过性意识丧失", "needs a physician's risk assessment"),
    (
        "bacterial food poisoning (胃肠型, 细菌性, 葡萄球菌性, 沙门菌 …), chronic metal/solvent poisoning (铅, 汞, "
        "锰, 砷, "
        "苯 …), 水中毒, 维生素中毒",
        "mostly self-limited or chronic; botulism (神经型食物中毒) and acute poisonings fire",
    ),
    ("鼓膜破裂/穿孔, 迷路窗破裂, 半月板/肌腱/韧带破裂", "urgent specialist care, not 120"),
    ("中暑 (generic), 烧伤 (generic, 中度), 颅脑损伤/脑震荡, 自发性/闭合性气胸, 腔隙性脑梗死", "severity decides"),
    ("先兆子痫, HELLP综合征, 妊娠期急性脂肪肝, 胎膜早破, 前置胎盘, 双胎输血综合征", "obstetric severity decides"),
    (
        "急性胆囊炎, 急性肾衰竭, 肝性脑病, 代谢性酸中毒, 高钾血症, 低血糖症, 弥散性血管内凝血, 视网膜脱离",
        "urgent but severity-dependent",
    ),
    (
        "小儿急性喉炎 (croup), 狂犬病, 出血热, 霍乱, 鼠疫, 病毒性脑炎",
        "severity or exposure history decides "
        "(altered consciousness and fever with neck stiffness still fire as findings)",
    ),
    ("新生儿黄疸", "early (first 24 h) or deep jaundice is urgent; the knowledge base has no onset or level"),
    ("cMeKG's 急诊科 department", "not evidence: it also tags 宿醉, 慢性胰腺炎, 尘肺, 地方性砷中毒"),
    (
        "a disease's 并发症 and its full 相关症状 list",
        "a complication (休克 in 肺炎) is a possibility, not the patient "
        "in the question; symptom red flags count only when the question shows them",
    ),
)


@dataclass(frozen=True)
class Urgency:
    level: str  # EMERGENCY | ROUTINE
    rule: str = ""  # the first rule that fired (RULES_BY_NAME key), "" when routine
    reason: str = ""  # "disease name 脾破裂 (…破裂)" or "finding 呕血": for the data card and the review sheet
    fired: tuple[str, ...] = ()  # every rule that fired

    @property
    def emergency(self) -> bool:
        return self.level == EMERGENCY

    @property
    def advice(self) -> str:
        """The canonical sentence to append (EMERGENCY_SENTENCES[0] or ROUTINE_SENTENCES[0])."""
        return EMERGENCY_SENTENCES[0] if self.emergency else ROUTINE_SENTENCES[0]

    def sentence(self, rng: random.Random) -> str:
        """One of the sentences of the level, drawn with the record's RNG."""
        return rng.choice(EMERGENCY_SENTENCES if self.emergency else ROUTINE_SENTENCES)

    @property
    def department(self) -> str:
        """急诊科 for an emergency (a triage answer sends there first, never "可以先挂外科"), else ""."""
        return EMERGENCY_DEPARTMENT if self.emergency else ""


def _disease_match(rule: Rule, names: tuple[str, ...]) -> str | None:
    """The first name matching the rule's disease pattern, unless any name says otherwise (disease_not): the
    alias 急性CO中毒后续症 of 一氧化碳中毒迟发型脑病 names a poisoning, its name a delayed sequela."""
    if not rule.disease or (rule.disease_not and any(re.search(rule.disease_not, n) for n in names)):
        return None
    return next((n for n in names if re.search(rule.disease, n)), None)


def _findings_match(rule: Rule, findings: list[str]) -> list[str] | None:
    usable = [f for f in findings if not FINDING_NOT.search(f)]
    for alternative in rule.findings:
        hits = [next((f for f in usable if re.search(p, f)), None) for p in alternative]
        if all(hits):
            return list(dict.fromkeys(hits))
    return None


def urgency(entry: Entry, findings: list[str] | tuple[str, ...] = (), person: Person | None = None) -> Urgency:
    """Emergency or routine, for a record about `entry` whose question shows `findings` (about `person`, if drawn).

    A rule fires on a name of the disease (its 中心词 or an alias) or on the findings shown; neonatal findings count
    only for a newborn (the person's age when given, else a neonatal profile). The entry's 并发症 and unshown
    symptoms are not used (see LEFT_OUT).
    """
    names = entry.names
    newborn = (
        person.age_years <= NEONATE_MAX
        if person
        else (patient_profile(entry).neonatal or any(re.search(NEONATAL_NAMES, n) for n in names))
    )
    fired: dict[str, str] = {}  # rule -> reason; the disease's own name first, it is the more specific reason
    for rule in RULES:
        if name := _disease_match(rule, names):
            fired[rule.name] = f"disease name {name} matches {rule.name} ({rule.label})"
    for rule in RULES:
        if (
            rule.name not in fired
            and (not rule.neonate_only or newborn)
            and (hits := _findings_match(rule, list(findings)))
        ):
            fired[rule.name] = f"finding {'、'.join(hits)} matches {rule.name} ({rule.label})"
    if not fired:
        return Urgency(ROUTINE)
    first = next(iter(fired))
    return Urgency(EMERGENCY, first, fired[first], tuple(fired))


# ============================================================================ the data card


def _pattern_text(pattern: str, limit: int = 90) -> str:
    text = pattern.replace("|", " / ")
    return text if len(text) <= limit else text[:limit].rstrip() + " …"


def rules_table() -> str:
    """Markdown: the red-flag rules (name, trigger, level), what is left to a physician, and the patient rules."""
    lines = ["| rule | disease name matches | findings shown | level |", "| --- | --- | --- | --- |"]
    for r in RULES:
        finding = " ; or ".join(" + ".join(_pattern_text(p, 60) for p in alt) for alt in r.findings)
        if r.neonate_only and finding:
            finding = "(newborn) " + finding
        disease = _pattern_text(r.disease) or "—"
        if r.disease_not:
            disease += f" (not: {_pattern_text(r.disease_not, 60)})"
        lines.append(f"| {r.name}: {r.label} | {disease} | {finding or '—'} | {r.level} |")
    lines += [
        "",
        "Every other record is routine: no urgency word (" + "、".join(EMERGENCY_WORDS) + ").",
        "",
        "Left to a physician (no rule):",
        "",
    ]
    lines += [f"- {what}: {why}" for what, why in LEFT_OUT]
    lines += [
        "",
        "Patients: sex and age come from the disease's name (小儿/新生儿/老年/妊娠/子宫/前列腺 …), then its "
        "organ (发病部位), then its departments when all agree (儿科; 妇科/产科/妇产科; 男科); 多发人群 narrows "
        "within that and is dropped where it contradicts it. No evidence: an adult (18–75) of either sex. "
        "Breast diseases are female unless the name says 男性. 家里老人 only for a patient of 65 or more who is "
        "not obstetric; a parent asks for a child; a newborn never asks.",
    ]
    return "\n".join(lines)


# ============================================================================ measurement on the real data


def measure(entries: list[Entry], sample: int = 20, seed: int = 0) -> dict:
    """Counts over the diseases: emergency per rule (name only, and with every listed symptom shown), restrictions."""
    diseases = [e for e in entries if e.kind == "disease"]
    by_name, by_symptoms, kinds, sources = Counter(), Counter(), Counter(), Counter()
    emergencies = []
    for e in diseases:
        u = urgency(e)
        if u.emergency:
            by_name[u.rule] += 1
            sources[e.source] += 1
            emergencies.append((e.name, u.reason))
        w = urgency(e, e.get("相关症状"))
        if w.emergency:
            by_symptoms[w.rule] += 1
        profile = patient_profile(e)
        kinds.update(profile.kinds or ("none",))
        if profile.kinds:
            kinds["any restriction"] += 1
    rng = random.Random(seed)
    return {
        "diseases": len(diseases),
        "emergency_by_name": sum(by_name.values()),
        "emergency_by_name_source": dict(sources),
        "per_rule": dict(by_name.most_common()),
        "emergency_if_every_symptom_shown": sum(by_symptoms.values()),
        "per_rule_if_every_symptom_shown": dict(by_symptoms.most_common()),
        "restrictions": dict(kinds.most_common()),
        "sample": rng.sample(emergencies, min(sample, len(emergencies))),
    }


def main(command: str = "rules") -> None:
    """`python -m utils.knowledge.clinical rules`: the rules table. The counts of `measure` over the
    built knowledge base: `python -m utils.knowledge.audit --clinical` (this module imports nothing that imports it)."""
    if command != "rules":
        raise SystemExit(f"unknown command {command!r}; usage: python -m utils.knowledge.clinical rules")
    print(rules_table())


if __name__ == "__main__":
    import sys

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    main(*sys.argv[1:])
