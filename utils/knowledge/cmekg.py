"""cMeKG (HuaTuo's own knowledge source) from the `pycmekg` package: safe reading, import, cleaning.

The package ships cMeKG as one pickle (`pyCMeKG/model/cmekg.pkl`: a dict 实体 -> {谓词: [值, ...]}).
It is read here only through :class:`RestrictedUnpickler`, which refuses every global, so the file
can hold nothing but plain containers and strings; the package itself is never imported (its
``__init__`` would ``pickle.load`` the file unrestricted).

    # import, then write <stem>.md/.json (default data/llama_data.cmekg_import)
    python -m utils.knowledge.cmekg report [stem]

Import = map cMeKG predicates onto our disease fields (PREDICATES), then clean every value
(clean_values; each rule is named in RULES and counted in the report), then keep the entities that
still look like a disease (a whitelisted department and at least MIN_SYMPTOMS symptoms). Drug
products are not imported: their cMeKG fields are unreliable (OTC labels on injections, brand lists,
approval numbers as names), see the report's "not imported" section.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import pickle
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field, replace
from importlib import metadata

from utils.files import write_atomic
from utils.knowledge import clinical, lexicon
from utils.knowledge.clinical import EMERGENCY_DEPARTMENT
from utils.knowledge.schema import (
    NAME_FIELD,
    NOT_TREATMENT_PHRASES,
    TREATMENT_FIELDS,
    Entry,
    KnowledgeError,
    load_knowledge,
    validate_record,
)

logger = logging.getLogger(__name__)

SOURCE = "cmekg"
PACKAGE = "pycmekg"
PICKLE_IN_PACKAGE = "pyCMeKG/model/cmekg.pkl"
MAX_CHARS = 16  # a cMeKG value longer than this is a sentence, not a fact phrase
MIN_SYMPTOMS = 2  # a disease needs this many clean symptoms to be imported

# our field -> cMeKG predicates, merged in this order. Never: 治疗 (section headers such as
# 手术治疗/药物治疗), 相关药物 (brand lists), OTC类型 / 药品监管分级 (product labels).
PREDICATES: dict[str, tuple[str, ...]] = {
    "所属科室": ("就诊科室", "所属科室"),
    "发病部位": ("常见发病部位", "发病部位"),
    "相关症状": ("临床症状及体征", "常见症状", "相关症状"),
    "并发症": ("并发症",),
    "高危因素": ("高危因素",),
    "检查": ("检查", "实验室检查", "影像学检查", "辅助检查", "内窥镜检查"),
    "组织学检查": ("组织学检查",),
    "药物治疗": ("药物治疗",),
    "辅助治疗": ("辅助治疗",),
    "预防": ("预防",),
    "病因": ("病因", "常见病因"),
    "传播途径": ("传播途径",),
    "多发人群": ("多发群体",),
    "相关疾病": ("相关疾病",),
}
DRUG_PREDICATES = frozenset({"成份", "OTC类型", "药品类型", "规格", "性状", "通用名", "贮藏"})

# ----------------------------------------------------------------------------- cleaning vocabulary

SEPARATORS = "、；;"  # split a value on these, and only outside brackets
OPEN_BRACKETS, CLOSE_BRACKETS = "（([［【", "）)]］】"
# "流泪及眼痛" is two symptoms: split on a conjunction when both sides have >= 2 characters
CONJUNCTION = re.compile(r"(?<=..)(?:以及|及|与|和)(?=..)")
TRAILING = re.compile(r"(等等|等|及)$")
SENTENCE_PUNCT = re.compile(r"[，,。.！!？?：:\"“”‘’]")
BAD_START = ("或", "及", "以", "可", "常")
CLAUSE_START = ("有", "为", "因", "与", "在", "但", "并", "且")  # also fragments, in CLAUSE_FIELDS
# words that only occur inside a clause of running text ("如恶心", "重者可发生...", "由于...所致"); from 可由 on,
# clauses the issue-#19 review met: 五氯酚钠可由呼吸道…进入人体, 金葡菌致病性最强, 假脑瘤综合征又名…,
# 直肠指诊可触, 提物等均感到困难, 初为阵发性疼痛恶心, 愈后多不留瘢痕, 肾脏受累早期有血尿, 发病缓慢
CLAUSE_WORDS = tuple(
    """
    患者 病人 主要 有时 可见 甚至 重者 如 除 由于 所致 引起 出现 直径 厘米 导致 造成 表现为 伴 并发
    之一 或 的 受到 而 向 即 比 率 多于 高于 有关 相关 时 累及 还可 仍然 不能明确 可由 最强 又名
    可触 等均 均感 初为 愈后 受累 早期有 等症状 不痛不痒 发病缓慢 特别是 尤以 为甚 起病缓慢
    """.split()
)
CLAUSE_FIELDS = ("相关症状", "并发症", "检查", "病因", "发病部位", "药物治疗", "辅助治疗", "预防", "多发人群")
CODE = re.compile(r"[A-Za-z]{0,3}\d[\d\-./]{3,}[A-Za-z]?")
NEAR_DUP_DROP = re.compile(r"[\s\-—–－_·•'\"()（）\[\]［］]|^(轻度|轻微|稍感|稍|略|明显)")  # 轻度瘙痒 = 轻微瘙痒
# values that name a section of a record, not a fact
HEADERS = {
    "检查": set(
        """
        检查 实验室检查 辅助检查 影像学检查 体格检查 其他检查 其他辅助检查 特殊检查 一般检查
        常规检查 相关检查
        """.split()
    ),
    "药物治疗": {"药物治疗", "药物", "对症治疗", "一般治疗", "病因治疗", "静脉药物治疗", "治疗原则"},
    "辅助治疗": {"辅助治疗", "一般治疗", "治疗原则", "对症治疗", "其他治疗"},
    "病因": {"病因", "其他"},
    "相关症状": {"症状", "临床表现", "临床特点", "其他", "体征", "主要症状", "早期症状", "典型症状"},
}
# a cMeKG entity whose name is used this often as a symptom elsewhere, and has no disease suffix, is a
# symptom page (腹痛, 水肿), not a disease
SYMPTOM_PAGE_USES = 5
DISEASE_NAME_SUFFIXES = lexicon.DISEASE_SUFFIXES + ("出血", "积液", "溃疡")
# names of entities that are not diseases -> why (procedures, tests, rehabilitation, work-ups, risk groups,
# TCM patterns, nursing). A TCM pattern (证, not 症) such as 肝郁气滞证 is a way of reasoning, not a disease
# a patient has in our departments' sense.
NON_DISEASE_ENDINGS = {
    "检查": "a procedure or test",
    "检测": "a procedure or test",
    "测定": "a procedure or test",
    "试验": "a procedure or test",
    "造影": "a procedure or test",
    "术": "a procedure or test",
    "疗法": "a procedure or test",
    "治疗": "a procedure or test",
    "扫描": "a procedure or test",
    "康复": "rehabilitation",
    "待查": "a work-up (待查), not a diagnosis",
    "护理": "nursing",
    "证": "a TCM pattern (证)",
    "高危儿": "a risk group",
    "高危妊娠": "a risk group",
}
NON_DISEASE_WORDS = {
    "计数": "a procedure or test",
    "窗口期": "a stage, not a disease",
    "康复": "rehabilitation",
    "护理": "nursing",
    "计算器": "a procedure or test",
}
DISEASE_VARIANT = re.compile(r"(病|症)$")  # X病 / X症 / X name one disease (never 综合征: 库欣病 ≠ 库欣综合征)
SYNDROME_SPELLING = re.compile(r"综合症$")  # a misspelling of 综合征
# an alias predicate is trusted when it names one disease; 同义词 is not (HELLP综合征 同义词 妊娠期急性脂肪肝,
# 儿童期哮喘 同义词 慢性呼吸道疾病): it links two entities only when they also share an ICD10 code
TRUSTED_ALIAS_PREDICATES = ("别称", "又称")
CHECKED_ALIAS_PREDICATE = "同义词"
# prefixes dropped to find the core of a disease name (小儿肠套叠 -> 肠套叠) for "gives away the diagnosis"
NAME_PREFIXES = re.compile(
    r"^(小儿|儿童|新生儿|婴幼儿|婴儿|幼儿|成人|老年|老年性|急性|慢性|先天性|原发性|继发性|获得性|"
    r"特发性|遗传性|妊娠期|妊娠)+"
)
# typicality score (see typicality): a value listed by several predicates / twins of one entity is typical
SUPPORT_WEIGHT = 2.0
SPECIFIC_DF = 3  # values carried by <= this many entities are all equally specific
ESTABLISHED_BONUS = 0.5
SPECIFIC_FIELDS = (
    "相关症状",
    "发病部位",
    # ordered by specificity; the others by how established a value is  # a term carried by >= 2 entities, or one of our
    # own, is not a one-off spelling
)

# department whitelist (ours use the same names) and the synonyms cMeKG spells them with
DEPARTMENTS = tuple(
    """
    心血管内科 呼吸内科 消化内科 神经内科 内分泌科 肾内科 血液科 风湿免疫科 感染科 普外科 肝胆外科
    胸外科 心胸外科 神经外科 泌尿外科 骨科 血管外科 乳腺外科 肛肠科 甲状腺外科 烧伤整形科 小儿外科
    妇科 产科 妇产科 儿科 新生儿科 眼科 耳鼻咽喉科 口腔科 皮肤科 皮肤性病科 精神科 儿童精神科 肿瘤科
    急诊科 内科 外科 男科 中医科 康复科 营养科 变态反应科
    """.split()
)
DEPARTMENT_SYNONYMS = {
    "心内科": "心血管内科",
    "心血管科": "心血管内科",
    "呼吸科": "呼吸内科",
    "消化科": "消化内科",
    "神经科": "神经内科",
    "普通外科": "普外科",
    "基本外科": "普外科",
    "腹部外科": "普外科",
    "腹外科": "普外科",
    "胃肠外科": "普外科",
    "心外科": "心胸外科",
    "心脏外科": "心胸外科",
    "心血管外科": "心胸外科",
    "胸心血管外科": "心胸外科",
    "耳鼻喉科": "耳鼻咽喉科",
    "耳鼻咽喉头颈外科": "耳鼻咽喉科",
    "耳鼻咽喉-头颈外科": "耳鼻咽喉科",
    "头颈外科": "耳鼻咽喉科",
    "传染科": "感染科",
    "传染病科": "感染科",
    "感染和临床微生物科": "感染科",
    "感染和微生物科": "感染科",
    "肝炎科": "感染科",
    "精神心理科": "精神科",
    "临床心理科": "精神科",
    "心理科": "精神科",
    "心理医学科": "精神科",
    "血液内科": "血液科",
    "口腔颌面外科": "口腔科",
    "口腔修复科": "口腔科",
    "口腔颌面科": "口腔科",
    "烧伤外科": "烧伤整形科",
    "烧伤科": "烧伤整形科",
    "整形外科": "烧伤整形科",
    "整形科": "烧伤整形科",
    "儿外科": "小儿外科",
    "小儿内科": "儿科",
    "肿瘤内科": "肿瘤科",
    "肿瘤外科": "肿瘤科",
    "急诊室": "急诊科",
    "急诊": "急诊科",
    "康复理疗科": "康复科",
    "康复医学科": "康复科",
    "乳腺科": "乳腺外科",
    "乳腺中心": "乳腺外科",
    "乳腺肿瘤科": "乳腺外科",
    "免疫科": "风湿免疫科",
    "中医内科": "中医科",
    "骨伤科": "骨科",
    "脊柱外科": "骨科",
    "手外科": "骨科",
    "泌尿科": "泌尿外科",
    "泌尿外科学": "泌尿外科",
    "临床营养科": "营养科",
}

RULES = {
    "split": "a value packing several items joined by 、；; outside brackets was split (never inside （…） (…) ［…］)",
    "split_conjunction": "two items joined by 及/以及/与/和 were split (流泪及眼痛 -> 流泪, 眼痛)",
    "trailing_deng": "a trailing 等/及 was stripped",
    "sentence_punct": "holds sentence punctuation (a clause, not a phrase)",
    "bad_start": "starts with 或/及/以/可/常 (in symptoms, causes, tests, ... also 有/为/因/与/在): a sentence "
    "fragment",
    "code": "an approval number or other code, or (in a symptom list) a measurement with digits",
    "too_long": f"longer than {MAX_CHARS} characters",
    "too_short": "a single character (except a one-character organ in 发病部位: 肺, 肝, 肾 ...)",
    "header": "a section header word (实验室检查, 药物治疗, ...), not a fact",
    "clause": "words of running text (患者, 如, 由于, 甚至, 出现, ...) in a symptom, cause, test or treatment",
    "own_name": "the entity's own name (or an alias)",
    "gives_away_diagnosis": "names the disease or a variant of its name (儿童肠套叠 as a symptom of 小儿肠套叠)",
    # the positive symptom lexicon (utils/knowledge/lexicon.py): a symptom needs a head or a known term, and no
    # disqualifier
    "symptom_no_head": "in a symptom list but neither a known symptom term nor a symptom head (皮下组织, 神经, 骨)",
    "symptom_disease": "in a symptom list but a disease (气胸, 感冒, 心肌梗死, 肠梗阻, 腹膜炎, a disease of the graph)",
    "symptom_lab_value": "in a symptom list but a lab value (糖尿, 蛋白尿, AST水平小幅升高)",
    "symptom_test": "in a symptom list but a test (撞击试验, 肛门指诊)",
    "symptom_fragment": "in a symptom list but a fragment (轻者头痛, 反复, 婴儿肠套叠多, 不适)",
    "symptom_roman": "in a symptom list but a Roman numeral (a stage or type)",
    "descriptor": "a description, not a symptom (表面光滑, 多数无症状, 大小不一, 病程较长)",
    "merged_synonym": "a synonym spelling mapped onto one term (发烧 -> 发热, 恶心呕吐 -> 恶心 + 呕吐)",
    "merged_twin": "one character away from a more typical value of the same symptom list (咳黏液脓痰 / 咳黏脓痰): "
    "one item spelled twice",
    "merged_substring": "contained in a more specific value of the same list (咳嗽 in 持续性咳嗽): the specific one "
    "kept",
    "near_duplicate": "same normalised key as an earlier value (心悸/心悸等, β 受体阻滞剂/β—受体阻滞剂)",
    "cause_unknown": "a 病因 saying the cause is unknown (病因尚不清楚, 原因未明)",
    "cause_is_symptom": "a 病因 that is a known symptom term, not a cause",
    "population_not_people": "a 多发人群 that is not a group of people (头皮)",
    "test_not_a_test": "a 检查 that is a finding or not a test (血小板减少, X线示阴影)",
    "site_not_a_site": "a 发病部位 that is not a body site (a disease, a symptom, a clause)",
    "drug_unchecked": "a cMeKG 药物治疗/辅助治疗 value not checked against our drugs (ours, whose 适应症 names the "
    "disease or one of its names): dropped (安慰剂, CMV -> 阿昔洛韦, 结肠癌 -> 叶酸)",
    "drug_checked": "a cMeKG drug kept: one of our drugs, whose 适应症 names this disease or one of its names",
    "department_synonym": "a department spelled differently, mapped onto the whitelist",
    "department_unknown": "a department not on the whitelist (门诊, 男性, 功能检查科, ...)",
    "department_emergency_routine": "急诊科 dropped from a disease the red-flag rules (utils/knowledge/clinical.py) "
    "do not call "
    "an emergency (cMeKG lists 急诊科 for 宿醉 and 尘肺; a routine answer never says 急诊)",
    "department_paediatric": "a paediatric entity routed to 儿科/新生儿科/小儿外科 (adult 内科/外科 departments "
    "dropped)",
    "department_from_organ": "a generic 内科/外科 refined from the entity's organ (肺 -> 呼吸内科, 骨 -> 骨科)",
    "prevention_moved": "a vaccine or prophylaxis listed as treatment, moved to 预防",
    "typicality_order": "a field whose values were reordered by typicality (cMeKG lists are in code-point order)",
}


class CmekgError(RuntimeError):
    """pycmekg is missing, or its pickle is not the plain data it should be."""


class RestrictedUnpickler(pickle.Unpickler):
    """Loads plain containers and strings only: every global (class, function) is refused."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"refused to load global {module}.{name}: only plain data is allowed")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError(f"refused persistent id {pid!r}: only plain data is allowed")


def restricted_loads(data: bytes):
    return RestrictedUnpickler(io.BytesIO(data)).load()


# ----------------------------------------------------------------------------- the package's pickle


@dataclass
class Source:
    path: str
    version: str
    sha256: str


def find_pickle() -> Source:
    """The installed package's pickle, found through its metadata (the package is not imported)."""
    try:
        dist = metadata.distribution(PACKAGE)
    except metadata.PackageNotFoundError:
        raise CmekgError(f"{PACKAGE} is not installed (pip install {PACKAGE})") from None
    path = str(dist.locate_file(PICKLE_IN_PACKAGE))
    if not os.path.isfile(path):
        raise CmekgError(f"{PACKAGE} {dist.version} is installed but {path} is missing")
    with open(path, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    return Source(path=path, version=dist.version, sha256=sha)


def load_graph(path: str) -> dict[str, dict[str, list[str]]]:
    """实体 -> {谓词: [值]} from the pickle at ``path``, through the restricted unpickler, checked for shape."""
    with open(path, "rb") as f:
        try:
            graph = RestrictedUnpickler(f).load()
        except pickle.UnpicklingError as e:
            raise CmekgError(f"{path}: {e}") from None
    if not isinstance(graph, dict):
        raise CmekgError(f"{path}: expected a dict of entities, got {type(graph).__name__}")
    for name, preds in graph.items():
        if not isinstance(name, str) or not isinstance(preds, dict):
            raise CmekgError(f"{path}: entity {name!r}: expected str -> dict")
    return graph


# ----------------------------------------------------------------------------- cleaning


def near_key(value: str) -> str:
    """Key under which two spellings of one item collide: NFKC, lower case, no spaces, dashes, brackets."""
    return NEAR_DUP_DROP.sub("", unicodedata.normalize("NFKC", value).lower())


def split_outside_brackets(text: str, separators: str = SEPARATORS) -> list[str]:
    """``text`` split on ``separators`` at bracket depth 0 ("A（B、C）、D" -> ["A（B、C）", "D"])."""
    parts, depth, current = [], 0, []
    for c in text:
        if c in OPEN_BRACKETS:
            depth += 1
        elif c in CLOSE_BRACKETS:
            depth = max(depth - 1, 0)
        if c in separators and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(c)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def core_names(names) -> set[str]:
    """The cores of a disease's names (小儿肠套叠 -> 肠套叠): a value containing one gives the diagnosis away."""
    cores = set()
    for n in names:
        core = NAME_PREFIXES.sub("", DISEASE_VARIANT.sub("", n))
        if len(core) >= 2:
            cores.add(core)
    return cores


def _reject_reason(
    value: str, key: str, own_names: set[str], symptoms: lexicon.SymptomLexicon, cores: set[str]
) -> str | None:
    if SENTENCE_PUNCT.search(value):
        return "sentence_punct"
    if value.startswith(BAD_START) or (key in CLAUSE_FIELDS and value.startswith(CLAUSE_START)):
        return "bad_start"
    if key in CLAUSE_FIELDS and any(w in value for w in CLAUSE_WORDS):
        return "clause"
    if CODE.fullmatch(value) or ((value.isascii() or key == "相关症状") and any(c.isdigit() for c in value)):
        return "code"
    if len(value) > MAX_CHARS:
        return "too_long"
    if len(value) < 2 and not (key == "发病部位" and lexicon.is_site(value)):
        return "too_short"
    if value in HEADERS.get(key, ()):
        return "header"
    if value in own_names:
        return "own_name"
    if key in ("相关症状", "病因") and any(c in value for c in cores):
        return "gives_away_diagnosis"
    if key == "相关症状":
        return symptoms.why_not(value)
    if key == "病因":
        if lexicon.is_unknown_cause(value):
            return "cause_unknown"
        if value in symptoms.known:
            return "cause_is_symptom"
    if key == "多发人群" and not lexicon.is_people(value):
        return "population_not_people"
    if key == "检查" and not lexicon.is_test(value):
        return "test_not_a_test"
    if key == "发病部位" and not lexicon.is_site(value):
        return "site_not_a_site"
    return None


def _parts(text: str, key: str, note) -> list[str]:
    """One raw value as the items it packs: split outside brackets, on conjunctions, synonyms applied."""
    parts = split_outside_brackets(text)
    if len(parts) > 1:
        note("split", text)
    if key in ("相关症状", "检查", "发病部位"):  # never in disease-name fields (骨与关节结核 is one disease)
        split = []
        for p in parts:
            pieces = [q.strip() for q in CONJUNCTION.split(p)] if not any(b in p for b in OPEN_BRACKETS) else [p]
            if len(pieces) > 1:
                note("split_conjunction", p)
            split.extend(q for q in pieces if q)
        parts = split
    out = []
    for part in parts:
        stripped = TRAILING.sub("", part).strip()
        if stripped != part:
            note("trailing_deng", part)
        if key == "相关症状" and stripped in lexicon.PACKED:
            note("merged_synonym", stripped)
            out.extend(lexicon.PACKED[stripped])
        elif key == "相关症状" and stripped in lexicon.SYNONYMS:
            note("merged_synonym", stripped)
            out.append(lexicon.SYNONYMS[stripped])
        elif stripped:
            out.append(stripped)
    return out


def clean_values(
    raw: list,
    key: str,
    own_names: set[str],
    note,
    symptoms: lexicon.SymptomLexicon | None = None,
    cores: set[str] = frozenset(),
) -> list[str]:
    """Cleaned values of one field; every change or rejection is reported as ``note(rule, value)``.

    ``own_names``: the entity's names (its alias group); ``symptoms``: the positive symptom lexicon of the
    whole graph; ``cores``: :func:`core_names` of the entity (a symptom or cause holding one is dropped).
    """
    symptoms = symptoms or lexicon.SymptomLexicon()
    kept, seen = [], set()
    for item in raw:
        if not isinstance(item, str):
            continue
        text = unicodedata.normalize("NFKC", item).strip()
        for part in _parts(text, key, note):
            if key == "所属科室":
                part = _department(part, note)
                if part is None:
                    continue
            rule = _reject_reason(part, key, own_names, symptoms, cores)
            if rule:
                note(rule, part)
                continue
            nk = near_key(part)
            if nk in seen:
                note("near_duplicate", part)
                continue
            seen.add(nk)
            kept.append(part)
    return kept


def _department(value: str, note) -> str | None:
    value = value.replace("—", "-")
    if value in DEPARTMENTS:
        return value
    if value in DEPARTMENT_SYNONYMS:
        note("department_synonym", value)
        return DEPARTMENT_SYNONYMS[value]
    note("department_unknown", value)
    return None


def one_edit_apart(a: str, b: str) -> bool:
    """``a`` and ``b`` differ by one inserted, deleted or replaced character (咳黏液脓痰 / 咳黏脓痰)."""
    if abs(len(a) - len(b)) > 1 or a == b:
        return False
    if len(a) > len(b):
        a, b = b, a
    i = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), len(a))
    return a[i + (len(a) == len(b)) :] == b[i + 1 :]


def merge_twins(values: list[str], note) -> list[str]:
    """A value one character away from a kept, more typical value of the same list is the same item spelled
    twice (咳黏液脓痰 / 咳黏脓痰, 胸骨后痛 / 胸骨后疼痛): the first is kept. Values under 4 characters are left alone
    (咳痰 / 咯痰 are two findings)."""
    kept = []
    for v in values:
        if len(v) >= 4 and any(len(w) >= 4 and one_edit_apart(v, w) for w in kept):
            note("merged_twin", v)
        else:
            kept.append(v)
    return kept


def merge_substrings(values: list[str], note) -> list[str]:
    """Values contained in a more specific value of the same list are merged into it (咳嗽 into 持续性咳嗽, 疼痛
    into 左上腹疼痛, 遗传 into 遗传因素, CT into CT扫描): the specific one is kept, as it says more and implies the
    other. Not for lists of diseases (并发症, 相关疾病), where 肝炎 and 慢性肝炎 are two entries."""
    kept = []
    for v in values:
        if any(v != w and v in w for w in values):
            note("merged_substring", v)
        else:
            kept.append(v)
    return kept


def typicality(support: int, df: int, entities: int, known: bool, specific: bool = True) -> float:
    """How typical a value is for one entity; fields are ordered by it (highest first).

    ``support``: how many predicate lists of the entity and its alias twins carry the value (停经 in both
    常见症状 and 临床症状及体征 of 异位妊娠); ``df``: how many entities of the graph carry it in this field;
    ``entities``: how many entities have the field. Score = SUPPORT_WEIGHT * (support - 1)
    + min(ln(entities / df), ln(entities / SPECIFIC_DF))   (specificity: 疼痛, 发热, 休克 carried by hundreds
    of diseases say little; values of <= SPECIFIC_DF entities count as equally specific)
    + ESTABLISHED_BONUS if df >= 2 or ``known`` (an established term, not a one-off spelling).
    Symptoms and sites (``specific``) are ranked so because a finding that singles the disease out is what a
    clinician lists first; for the other fields (tests, complications, causes, risk factors) a value many
    entities carry is the established one, so there the middle term is + ln(df) instead (血常规 before PT/PTT).
    """
    df = max(df, 1)
    if not specific:
        return SUPPORT_WEIGHT * (support - 1) + math.log(df) + (ESTABLISHED_BONUS if known else 0.0)
    specificity = min(math.log(entities / df), math.log(entities / SPECIFIC_DF))
    return SUPPORT_WEIGHT * (support - 1) + specificity + (ESTABLISHED_BONUS if df >= 2 or known else 0.0)


def split_prevention(fields: dict[str, list[str]], note) -> None:
    """Vaccines and prophylaxis listed under a treatment field move to 预防 (never shown as treatment)."""
    for key in TREATMENT_FIELDS:
        moved = [v for v in fields.get(key, []) if any(p in v for p in NOT_TREATMENT_PHRASES)]
        if not moved:
            continue
        for v in moved:
            note("prevention_moved", v)
        fields[key] = [v for v in fields[key] if v not in moved]
        fields["预防"] = fields.get("预防", []) + [v for v in moved if v not in fields.get("预防", [])]
    for key in [k for k, v in fields.items() if not v]:
        del fields[key]


# ----------------------------------------------------------------------------- import

ALIAS_KEY = "别名"  # an imported record's other names (to_entries moves them to Entry.aliases; not a field)


@dataclass
class Curated:
    """What our own knowledge base vouches for: the import checks cMeKG values against it."""

    names: set[str] = field(default_factory=set)  # our diseases' names and aliases (ours win)
    symptoms: set[str] = field(default_factory=set)  # our diseases' 相关症状 values (known symptom terms)
    drugs: dict[str, set[str]] = field(default_factory=dict)  # our drug -> its 适应症 values

    @classmethod
    def from_entries(cls, entries: list[Entry]) -> Curated:
        diseases = [e for e in entries if e.kind == "disease"]
        return cls(
            names={n for e in diseases for n in e.names},
            symptoms={v for e in diseases for v in e.get("相关症状")},
            drugs={e.name: set(e.get("适应症")) for e in entries if e.kind == "drug"},
        )


@dataclass
class ImportReport:
    source: dict = field(default_factory=dict)  # package version, pickle path and sha256
    entities: int = 0
    diseases: int = 0  # imported
    skipped: Counter = field(default_factory=Counter)  # why an entity was not imported
    rules: Counter = field(default_factory=Counter)  # cleaning rule -> values affected
    examples: dict = field(default_factory=dict)  # rule -> a few values
    per_field: dict = field(default_factory=dict)  # field -> {"raw": n, "kept": n}
    per_department: Counter = field(default_factory=Counter)
    counts: Counter = field(default_factory=Counter)  # entity-level counts (alias groups, departments refined)
    own_aliases: dict = field(default_factory=dict)  # our disease's name -> names of its cMeKG twins

    def note(self, rule: str, value: str) -> None:
        self.rules[rule] += 1
        if len(self.examples.setdefault(rule, [])) < 5:
            self.examples[rule].append(value)

    def as_dict(self) -> dict:
        return {
            "source": self.source,
            "entities": self.entities,
            "diseases_imported": self.diseases,
            "entities_skipped": dict(self.skipped.most_common()),
            "rules": {r: self.rules[r] for r in RULES},
            "rule_meaning": RULES,
            "examples": self.examples,
            "counts": dict(sorted(self.counts.items())),
            "per_field": self.per_field,
            "per_department": dict(self.per_department.most_common()),
        }


def _norm(text: str) -> str:
    return unicodedata.normalize("NFKC", text).strip()


def _split_raw(item) -> list[str]:
    """A raw cMeKG value as the items it names, lightly normalised (for counts over the graph), with the
    symptom synonyms applied so that a merged spelling (瘙痒症 -> 瘙痒) keeps its count."""
    if not isinstance(item, str):
        return []
    out = []
    for p in split_outside_brackets(_norm(item)):
        p = TRAILING.sub("", p).strip()
        out.extend(lexicon.PACKED.get(p) or [lexicon.SYNONYMS.get(p, p)])
    return out


def _not_a_disease(name: str) -> str | None:
    for ending, why in NON_DISEASE_ENDINGS.items():
        if name.endswith(ending):
            return why
    for word, why in NON_DISEASE_WORDS.items():
        if word in name:
            return why
    return None


# spellings of one name: 心肌梗塞 / 心肌梗死, II型糖尿病 / 2型糖尿病
SPELLINGS = (("梗塞", "梗死"), ("Ⅱ型", "2型"), ("II型", "2型"), ("Ⅰ型", "1型"), ("I型", "1型"))


def _variant_key(name: str) -> str:
    for old, new in SPELLINGS:
        name = name.replace(old, new)
    return DISEASE_VARIANT.sub("", SYNDROME_SPELLING.sub("综合征", name))


def _bracketed(name: str) -> list[str]:
    """ "X（Y）" names X and Y too."""
    m = re.fullmatch(r"(.+?)[（(]([^（）()]+)[）)]", name)
    return [p for p in m.groups() if len(p) >= 2] if m else []


class _Groups:
    """Union-find over names: one alias group per disease."""

    def __init__(self):
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def components(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for x in sorted(self.parent):
            out.setdefault(self.find(x), []).append(x)
        return out


def alias_groups(graph: dict, candidates: dict[str, str], own_names: set[str]) -> dict[str, list[str]]:
    """Alias groups (root -> names) over the candidate entities and our own names.

    Links: 别称/又称 (trusted), 同义词 only between two entities that share an ICD10 code (cMeKG's
    同义词 is sometimes a different disease: HELLP综合征 同义词 妊娠期急性脂肪肝), bracketed names
    (X（Y）), and 病/症/bare variants of one name (never 病 and 综合征: 库欣病 is not 库欣综合征).
    """
    groups = _Groups()
    by_name = {name: raw for raw, name in candidates.items()}
    for name in list(by_name) + sorted(own_names):
        groups.find(name)
        for part in _bracketed(name):
            groups.union(name, part)
    for name, raw in by_name.items():
        preds = graph[raw]
        for p in TRUSTED_ALIAS_PREDICATES:
            for item in preds.get(p) or []:
                for alias in _split_raw(item):
                    if 2 <= len(alias) <= 30 and not SENTENCE_PUNCT.search(alias):
                        groups.union(name, alias)
        codes = {c for c in preds.get("ICD10") or [] if isinstance(c, str)}
        for item in preds.get(CHECKED_ALIAS_PREDICATE) or []:
            for alias in _split_raw(item):
                other = by_name.get(alias)
                if other and codes & {c for c in graph[other].get("ICD10") or [] if isinstance(c, str)}:
                    groups.union(name, alias)
    by_key: dict[str, str] = {}
    for name in sorted(groups.parent):
        key = _variant_key(name)
        if len(key) >= 2:
            groups.union(by_key.setdefault(key, name), name)
    return groups.components()


def _canonical(members: list[str], graph: dict, candidates_by_name: dict[str, str]) -> str:
    """The group's name: a Chinese name before one with Latin letters (惠普尔病, not Whipple病), then the member
    entity with the most symptom values."""

    def rank(name):
        preds = graph[candidates_by_name[name]]
        n = sum(len(preds.get(p) or []) for p in PREDICATES["相关症状"])
        return (bool(re.search(r"[A-Za-z]", name)), -n, len(name), name)

    best = min(members, key=rank)
    bare = _bracketed(best)
    return bare[0] if bare else best


def _document_frequencies(graph: dict) -> tuple[dict[str, Counter], Counter]:
    """field -> Counter(near_key -> entities carrying it), and field -> entities having the field."""
    df = {key: Counter() for key in PREDICATES}
    having = Counter()
    for preds in graph.values():
        for key, sources in PREDICATES.items():
            keys = {near_key(v) for p in sources for item in (preds.get(p) or []) for v in _split_raw(item)}
            if keys:
                df[key].update(keys)
                having[key] += 1
    return df, having


def _checked_drugs(values: list[str], names: set[str], drugs: dict[str, set[str]], note) -> list[str]:
    """Only drugs we vouch for: one of ours whose 适应症 names this disease (or one of its names)."""
    keys = {_variant_key(n) for n in names}
    kept = []
    for v in values:
        if v in drugs and keys & {_variant_key(i) for i in drugs[v]}:
            note("drug_checked", v)
            kept.append(v)
        else:
            note("drug_unchecked", v)
    return kept


def _route_departments(name: str, fields: dict[str, list[str]], note, counts: Counter) -> None:
    """Paediatric entities to 儿科/新生儿科/小儿外科; a generic 内科/外科 refined from the organ."""
    depts = fields["所属科室"]
    people = fields.get("多发人群", [])
    if lexicon.is_paediatric(name, people):
        counts["paediatric entities"] += 1
        if lexicon.is_neonatal(name, people):
            target = "新生儿科"
        elif any(d in lexicon.SURGICAL_DEPARTMENTS for d in depts):
            target = "小儿外科"
        elif "精神科" in depts or "儿童精神科" in depts:
            target = "儿童精神科"
        else:
            target = "儿科"
        routed = [target] + [
            d for d in depts if d != target and d in lexicon.PAEDIATRIC_DEPARTMENTS + lexicon.ALL_AGE_DEPARTMENTS
        ]
        if routed != depts:
            note("department_paediatric", f"{name}: {'、'.join(depts)} -> {'、'.join(routed)}")
            counts["paediatric entities routed (department changed)"] += 1
        fields["所属科室"] = routed
        return
    if set(depts) <= {"内科", "外科"}:
        counts["内科/外科-only diseases"] += 1
        refined = [lexicon.organ_department(fields.get("发病部位", []), d) or d for d in depts]
        refined = list(dict.fromkeys(refined))
        if refined != depts:
            note("department_from_organ", f"{name}: {'、'.join(depts)} -> {'、'.join(refined)}")
            counts["内科/外科-only diseases refined from the organ"] += 1
            fields["所属科室"] = refined


def _emergency_department_defended(name: str, names: set[str], fields: dict[str, list[str]], note) -> bool:
    """急诊科 stays a department only where the red-flag rules call the disease an emergency by its names;
    False when nothing is left."""
    if EMERGENCY_DEPARTMENT not in fields["所属科室"]:
        return True
    entry = Entry(kind="disease", name=name, fields=fields, path="", line=0, aliases=tuple(sorted(names - {name})))
    if not clinical.urgency(entry).emergency:
        note("department_emergency_routine", name)
        fields["所属科室"] = [d for d in fields["所属科室"] if d != EMERGENCY_DEPARTMENT]
    return bool(fields["所属科室"])


def _disease_candidates(graph: dict, symptom_uses: Counter, report: ImportReport) -> dict[str, str]:
    """The entities that may be diseases (raw name -> normalised name); every other one is counted in
    ``report.skipped`` with the reason."""
    candidates = {}
    for raw_name in sorted(graph):
        preds = graph[raw_name]
        name = _norm(raw_name)
        if DRUG_PREDICATES & set(preds):
            report.skipped["drug product (not imported)"] += 1
        elif not any(p in preds for p in PREDICATES["相关症状"] + PREDICATES["所属科室"]):
            report.skipped["not a disease (no symptoms or department)"] += 1
        elif name in lexicon.SYMPTOM_ENDINGS or (
            symptom_uses[near_key(name)] >= SYMPTOM_PAGE_USES and not name.endswith(DISEASE_NAME_SUFFIXES)
        ):
            report.skipped[f"a symptom page (a symptom head, or listed as a symptom >= {SYMPTOM_PAGE_USES} times)"] += 1
        elif _not_a_disease(name):
            report.skipped[f"not a disease: {_not_a_disease(name)}"] += 1
        elif not name or SENTENCE_PUNCT.search(name) or len(name) > 30:
            report.skipped["unusable name"] += 1
        else:
            candidates[raw_name] = name
    return candidates


def _symptom_lexicon(
    graph: dict, candidates: dict[str, str], symptom_uses: Counter, curated: Curated, own_names: set[str]
) -> lexicon.SymptomLexicon:
    """Known symptom terms: ours, and the symptom pages of the graph that pass the lexicon's disqualifiers;
    every disease name (candidates and ours) that is not one of them is a disease to the cleaning rules."""
    pages = {_norm(n) for n in graph if symptom_uses[near_key(_norm(n))] >= SYMPTOM_PAGE_USES} - set(
        candidates.values()
    )
    symptoms = lexicon.SymptomLexicon(known=set(curated.symptoms))
    symptoms.known |= {p for p in pages if symptoms.why_not(p) is None}
    symptoms.diseases = (set(candidates.values()) | own_names) - symptoms.known - set(lexicon.SYMPTOM_ENDINGS)
    return symptoms


@dataclass
class _GraphIndex:
    """What every alias group's cleaning reads: the graph, its candidate diseases, the field statistics."""

    graph: dict
    by_name: dict[str, str]  # candidate name -> raw graph key
    df: dict[str, Counter]  # field -> near_key -> entities carrying it (see _document_frequencies)
    having: Counter  # field -> entities having it
    symptoms: lexicon.SymptomLexicon
    raw_counts: Counter = field(default_factory=Counter)  # field -> raw values read (for report.per_field)


def _ours_wins(members: list[str], names: set[str], own_names: set[str], report: ImportReport) -> bool:
    """An alias group holding one of our diseases is not imported; our disease is given its other names."""
    ours = sorted(names & own_names)
    if not ours:
        return False
    report.skipped["ours wins (same disease in our KB)"] += len(members)
    for own in ours:
        report.own_aliases.setdefault(own, [])
        report.own_aliases[own] = sorted(set(report.own_aliases[own]) | (names - own_names))
    return True


def _field_values(
    key: str, *, name: str, names: set[str], cores: set[str], members: list[str], index: _GraphIndex, note
) -> list[str]:
    """One field of a group's record: the clean values of every member, one spelling per near-duplicate, merged
    and ordered by typicality (``cores``: :func:`core_names` of ``names``)."""
    support: Counter = Counter()
    spelling: dict[str, str] = {}
    for member in members:
        preds = index.graph[index.by_name[member]]
        for p in PREDICATES[key]:
            raw = preds.get(p) if isinstance(preds.get(p), list) else []
            index.raw_counts[key] += len(raw)
            for v in clean_values(raw, key, names, note, index.symptoms, cores):
                k = near_key(v)
                if k in spelling and support[k] == 0:
                    continue
                support[k] += 1
                spelling.setdefault(k, v)
    values = list(spelling.values())
    if key not in ("所属科室", "相关疾病", "并发症"):  # 遗传 into 遗传因素, CT into CT扫描; diseases stay apart
        values = merge_substrings(values, note)
    if key != "所属科室" and len(values) > 1:
        df = index.df[key]
        score = {
            v: typicality(
                support[near_key(v)],
                df[near_key(v)],
                index.having[key],
                v in index.symptoms.known,
                specific=key in SPECIFIC_FIELDS,
            )
            for v in values
        }
        ordered = sorted(values, key=lambda v: (-score[v], -df[near_key(v)], v))
        if ordered != values:
            note("typicality_order", f"{name}/{key}")
        values = ordered
    if key == "相关症状":
        values = merge_twins(values, note)
    return values


def _checked_fields(
    name: str, names: set[str], fields: dict[str, list[str]], curated: Curated, report: ImportReport
) -> tuple[dict[str, list[str]], str]:
    """The fields we can defend (prevention apart, checked drugs, routed departments) and, when the group is
    still no disease we can import, why not ("" when it is)."""
    note = report.note
    split_prevention(fields, note)  # vaccines move to 预防 first: prevention is kept, never checked as a drug
    for key in TREATMENT_FIELDS:
        if key in fields:
            fields[key] = _checked_drugs(fields[key], names, curated.drugs, note)
    fields = {k: v for k, v in fields.items() if v}
    if not fields.get("所属科室"):
        return fields, "no whitelisted department after cleaning"
    if len(fields.get("相关症状", [])) < MIN_SYMPTOMS:
        return fields, f"fewer than {MIN_SYMPTOMS} symptoms after cleaning"
    _route_departments(name, fields, note, report.counts)
    if not _emergency_department_defended(name, names, fields, note):
        return fields, "only department 急诊科, and not an emergency by the red-flag rules"
    return fields, ""


def import_diseases(
    graph: dict, own_names: set[str] = frozenset(), curated: Curated | None = None
) -> tuple[list[dict], ImportReport]:
    """Disease records in our schema ({"中心词", field: [values], "别名": [other names]}) from a cMeKG graph.

    ``own_names`` are diseases of our own KB (``curated`` adds our symptoms and drugs): those win (an alias
    group holding one of them is not imported; its names are reported in ``report.own_aliases``).
    Without ``curated`` no cMeKG drug can be checked, so none is kept.

    Stages: screen the entities (_disease_candidates), learn the symptom terms (_symptom_lexicon), group
    the names of one disease (alias_groups), then per group merge and clean each field (_field_values) and
    keep what we can defend (_checked_fields).
    """
    curated = curated or Curated()
    own_names = set(own_names) | curated.names
    report = ImportReport(entities=len(graph))
    df, having = _document_frequencies(graph)
    candidates = _disease_candidates(graph, df["相关症状"], report)
    symptoms = _symptom_lexicon(graph, candidates, df["相关症状"], curated, own_names)
    index = _GraphIndex(graph, {name: raw for raw, name in candidates.items()}, df, having, symptoms)
    kept_counts: Counter = Counter()
    records = []
    for members_all in alias_groups(graph, candidates, own_names).values():
        members = [n for n in members_all if n in index.by_name]
        names = set(members_all)
        if not members or _ours_wins(members, names, own_names, report):
            continue
        if len(members) > 1:
            report.counts["alias groups of >= 2 cMeKG entities merged into one"] += 1
            report.counts["cMeKG entities merged into a twin"] += len(members) - 1
        name = _canonical(members, graph, index.by_name)
        names.add(name)
        cores = core_names(names)
        fields = {
            key: _field_values(key, name=name, names=names, cores=cores, members=members, index=index, note=report.note)
            for key in PREDICATES
        }
        fields, why_not = _checked_fields(name, names, {k: v for k, v in fields.items() if v}, curated, report)
        if why_not:
            report.skipped[why_not] += len(members)
            continue
        for key, values in fields.items():
            kept_counts[key] += len(values)
        report.per_department.update(fields["所属科室"])
        aliases = sorted(n for n in names - {name} if len(n) <= 30 and not SENTENCE_PUNCT.search(n))
        records.append({NAME_FIELD: name, **fields, **({ALIAS_KEY: aliases} if aliases else {})})
    records.sort(key=lambda r: r[NAME_FIELD])
    report.diseases = len(records)
    report.counts["our diseases given the names of their cMeKG twins"] = len(report.own_aliases)
    report.per_field = {k: {"raw": index.raw_counts[k], "kept": kept_counts[k]} for k in PREDICATES}
    return records, report


def import_installed(
    own_names: set[str] = frozenset(), curated: Curated | None = None
) -> tuple[list[dict], ImportReport]:
    """:func:`import_diseases` on the installed pycmekg; raises CmekgError when it is not installed."""
    src = find_pickle()
    records, report = import_diseases(load_graph(src.path), own_names, curated)
    report.source = {
        "package": PACKAGE,
        "version": src.version,
        "pickle": PICKLE_IN_PACKAGE,
        "sha256": src.sha256,
        "licence": "MIT (as packaged on PyPI)",
        "upstream": "CMeKG, Peking University (via PyCMeKG)",
    }
    logger.info("cMeKG %s: %d of %d entities imported as diseases", src.version, report.diseases, report.entities)
    return records, report


def to_entries(records: list[dict], where: str) -> list[Entry]:
    """Imported records as KB entries (source "cmekg"), checked by the same validator as our files;
    a record's 别名 become the entry's aliases."""
    entries, errors = [], []
    for r in records:
        r = dict(r)
        aliases = tuple(r.pop(ALIAS_KEY, ()))
        problems = validate_record(r, "disease", f"{where}:{r[NAME_FIELD]}")
        if problems:
            errors.extend(problems)
            continue
        fields = {k: v for k, v in r.items() if k != NAME_FIELD}
        entries.append(
            Entry(kind="disease", name=r[NAME_FIELD], fields=fields, path=where, line=0, source=SOURCE, aliases=aliases)
        )
    if errors:
        raise KnowledgeError(errors)
    return entries


def merge(ours: list[Entry], imported: list[Entry], own_aliases: dict | None = None) -> list[Entry]:
    """Our entries (given the names of their cMeKG twins, ``own_aliases``), then the imported ones whose
    names we do not have (ours win)."""
    own_aliases = own_aliases or {}
    named = []
    for e in ours:
        extra = [a for n in e.names for a in own_aliases.get(n, []) if a not in e.names]
        named.append(replace(e, aliases=tuple(dict.fromkeys(e.aliases + tuple(extra)))) if extra else e)
    taken = {n for e in named for n in e.names}
    return named + [e for e in imported if not taken & set(e.names)]


def load_installed_entries(own: list[Entry]) -> tuple[list[Entry], ImportReport]:
    """Our entries merged with the cMeKG diseases of the installed package; CmekgError if it is absent."""
    records, report = import_installed(curated=Curated.from_entries(own))
    where = f"{PACKAGE}-{report.source['version']}"
    return merge(own, to_entries(records, where), report.own_aliases), report


def load_all(kb_spec=None, use_cmekg: bool = True) -> tuple[list[Entry], ImportReport | None]:
    """Our knowledge base (``kb_spec``: see resolve_kb_paths) merged with cMeKG's diseases when asked and
    installed; without pycmekg, one warning and our entries alone (report None). Raises KnowledgeError
    on bad input. What build_dataset.py trains on, for anything that must see the same entities."""
    own = load_knowledge(kb_spec)
    if not use_cmekg:
        return own, None
    try:
        return load_installed_entries(own)
    except CmekgError as e:
        logger.warning("%s: building from our knowledge base alone", e)
        return own, None


def report_markdown(report: ImportReport) -> str:
    d = report.as_dict()
    rule_rows = [
        (f"`{rule}`", n, RULES[rule], "、".join(d["examples"].get(rule, [])[:3]).replace("|", "/"))
        for rule, n in d["rules"].items()
    ]
    per_field = [(k, v["raw"], v["kept"]) for k, v in d["per_field"].items()]
    return (
        "\n".join(
            [
                "# cMeKG import report",
                "",
                f"Source: `{PACKAGE}` {d['source'].get('version', '?')}, `{d['source'].get('pickle', '')}` "
                f"(sha256 `{d['source'].get('sha256', '')}`), read through a restricted unpickler (no globals).",
                "",
                f"{d['entities']} entities; **{d['diseases_imported']} imported as diseases**.",
                *section("Entities not imported", ("why", "entities"), d["entities_skipped"].items()),
                *section("Entity counts (alias groups, departments)", ("what", "entities"), d["counts"].items()),
                *section("Values changed or dropped, per rule", ("rule", "values", "meaning", "examples"), rule_rows),
                *section(
                    "Values per field (raw cMeKG values -> kept after cleaning)", ("field", "raw", "kept"), per_field
                ),
                *section("Imported diseases per department", ("department", "diseases"), d["per_department"].items()),
            ]
        )
        + "\n"
    )


def section(title: str, header: tuple[str, ...], rows) -> list[str]:
    """A report section: a title, then a Markdown table whose count columns are right-aligned."""
    align = ["---"] + [
        "---:" if name in ("entities", "values", "raw", "kept", "diseases") else "---" for name in header[1:]
    ]
    lines = ["", f"## {title}", "", "| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def write_report(report: ImportReport, stem: str) -> None:
    """``<stem>.json`` and ``<stem>.md``, each written atomically."""
    write_atomic(stem + ".json", json.dumps(report.as_dict(), ensure_ascii=False, indent=2) + "\n")
    write_atomic(stem + ".md", report_markdown(report))


def main(command: str = "report", output_stem: str = "") -> None:
    """`python -m utils.knowledge.cmekg report [stem]`: import the installed cMeKG and write its report."""
    from utils.knowledge.schema import REPO_ROOT

    if command != "report":
        raise SystemExit(f"unknown command {command!r}; usage: python -m utils.knowledge.cmekg report [output_stem]")
    try:  # as the build does it: our diseases win
        _, report = import_installed(curated=Curated.from_entries(load_knowledge()))
    except CmekgError as e:
        raise SystemExit(str(e)) from None
    stem = output_stem or os.path.join(REPO_ROOT, "data", "llama_data.cmekg_import")  # what the build writes too
    write_report(report, stem)
    logger.info("wrote %s.md and %s.json", stem, stem)


if __name__ == "__main__":
    import sys

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    main(*sys.argv[1:])
