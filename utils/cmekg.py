"""cMeKG (the seed's own knowledge source) from the `pycmekg` package: safe reading, import, cleaning.

The package ships cMeKG as one pickle (`pyCMeKG/model/cmekg.pkl`: a dict 实体 -> {谓词: [值, ...]}).
It is read here only through :class:`RestrictedUnpickler`, which refuses every global, so the file
can hold nothing but plain containers and strings; the package itself is never imported (its
``__init__`` would ``pickle.load`` the file unrestricted).

    python -m utils.cmekg report [stem]   # import, then write <stem>.md/.json (default data/llama_data.cmekg_import)

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
import os
import pickle
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from importlib import metadata

from utils.knowledge import (NAME_FIELD, NOT_TREATMENT_PHRASES, TREATMENT_FIELDS, Entry, KnowledgeError, load_knowledge,
                             validate_record)

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
ALIAS_PREDICATES = ("别称", "又称", "同义词")
DRUG_PREDICATES = frozenset({"成份", "OTC类型", "药品类型", "规格", "性状", "通用名", "贮藏"})

# ----------------------------------------------------------------------------- cleaning vocabulary

SPLIT = re.compile(r"[、；;]")
TRAILING = re.compile(r"(等等|等|及)$")
SENTENCE_PUNCT = re.compile(r"[，,。.！!？?：:\"“”‘’\[\]]")
BAD_START = ("或", "及", "以", "可", "常")
CLAUSE_START = ("有", "为", "因", "与", "在", "但", "并", "且")  # also fragments, in CLAUSE_FIELDS
AND = re.compile(r"(?<=..)和(?=..)")  # "畏光和流泪" in a symptom list is two symptoms
# words that only occur inside a clause of running text ("如恶心", "重者可发生...", "由于...所致")
CLAUSE_WORDS = ("患者", "病人", "主要", "有时", "可见", "甚至", "重者", "如", "除", "由于", "所致", "引起", "出现",
                "直径", "厘米", "导致", "造成", "表现为", "伴", "并发", "之一", "或", "的", "受到", "而", "向", "即", "比", "率", "多于", "高于", "有关", "相关", "时")
CLAUSE_FIELDS = ("相关症状", "并发症", "检查", "病因", "发病部位", "药物治疗", "辅助治疗", "预防", "多发人群")
CODE = re.compile(r"[A-Za-z]{0,3}\d[\d\-./]{3,}[A-Za-z]?")
NEAR_DUP_DROP = re.compile(r"[\s\-—–－_·•'\"()（）\[\]［］]")
# values that name a section of a record, not a fact
HEADERS = {
    "检查": {"检查", "实验室检查", "辅助检查", "影像学检查", "体格检查", "其他检查", "其他辅助检查", "特殊检查",
             "一般检查", "常规检查", "相关检查"},
    "药物治疗": {"药物治疗", "药物", "对症治疗", "一般治疗", "病因治疗", "静脉药物治疗", "治疗原则"},
    "辅助治疗": {"辅助治疗", "一般治疗", "治疗原则", "对症治疗", "其他治疗"},
    "病因": {"病因", "病因不明", "原因不明", "不明", "未明", "尚不明确", "病因未明", "其他", "未完全明确", "尚未明确",
             "不清楚", "未明确", "不详", "尚不清楚", "不明确"},
    "相关症状": {"症状", "临床表现", "临床特点", "其他", "体征", "主要症状", "早期症状", "典型症状"},
}
NON_SYMPTOM_SUFFIXES = ("病", "炎", "癌", "瘤", "综合征", "综合症", "症", "病毒", "杆菌", "球菌", "菌", "原虫",
                        "支原体", "衣原体", "螺旋体", "寄生虫", "畸形", "衰竭", "梗阻", "失常", "中毒", "骨折")
# a cMeKG entity whose name is used this often as a symptom elsewhere, and has no disease suffix, is a
# symptom page (腹痛, 水肿), not a disease
SYMPTOM_PAGE_USES = 5
DISEASE_NAME_SUFFIXES = NON_SYMPTOM_SUFFIXES + ("血压", "损伤", "结石", "出血", "积液", "囊肿", "脱位", "溃疡")
NON_SYMPTOM_WORDS = {"感染", "肿瘤", "外伤", "质硬", "质软", "粗糙", "不适", "早产", "流产", "死亡", "坏死", "感觉",
                     "反射", "运动", "生长激素"}
NON_SYMPTOM_ENDINGS = ("色", "形", "期", "者", "因子", "激素")  # colours, shapes, stages, people, molecules
DESCRIPTOR_WORDS = ("无症状", "无明显", "大小", "多为", "病程", "早期", "晚期", "可有", "不明显", "多数", "少数",
                    "部分", "一般", "生长缓慢", "单发", "多发")

# department whitelist (ours use the same names) and the synonyms cMeKG spells them with
DEPARTMENTS = (
    "心血管内科", "呼吸内科", "消化内科", "神经内科", "内分泌科", "肾内科", "血液科", "风湿免疫科", "感染科",
    "普外科", "肝胆外科", "胸外科", "心胸外科", "神经外科", "泌尿外科", "骨科", "血管外科", "乳腺外科", "肛肠科",
    "甲状腺外科", "烧伤整形科", "小儿外科", "妇科", "产科", "妇产科", "儿科", "新生儿科", "眼科", "耳鼻咽喉科",
    "口腔科", "皮肤科", "皮肤性病科", "精神科", "儿童精神科", "肿瘤科", "急诊科", "内科", "外科", "男科",
    "中医科", "康复科", "营养科", "变态反应科",
)
DEPARTMENT_SYNONYMS = {
    "心内科": "心血管内科", "心血管科": "心血管内科", "呼吸科": "呼吸内科", "消化科": "消化内科",
    "神经科": "神经内科", "普通外科": "普外科", "基本外科": "普外科", "腹部外科": "普外科", "腹外科": "普外科",
    "胃肠外科": "普外科", "心外科": "心胸外科", "心脏外科": "心胸外科", "心血管外科": "心胸外科",
    "胸心血管外科": "心胸外科", "耳鼻喉科": "耳鼻咽喉科", "耳鼻咽喉头颈外科": "耳鼻咽喉科",
    "耳鼻咽喉-头颈外科": "耳鼻咽喉科", "头颈外科": "耳鼻咽喉科", "传染科": "感染科", "传染病科": "感染科",
    "感染和临床微生物科": "感染科", "感染和微生物科": "感染科", "肝炎科": "感染科", "精神心理科": "精神科",
    "临床心理科": "精神科", "心理科": "精神科", "心理医学科": "精神科", "血液内科": "血液科",
    "口腔颌面外科": "口腔科", "口腔修复科": "口腔科", "口腔颌面科": "口腔科", "烧伤外科": "烧伤整形科",
    "烧伤科": "烧伤整形科", "整形外科": "烧伤整形科", "整形科": "烧伤整形科", "儿外科": "小儿外科",
    "小儿内科": "儿科", "肿瘤内科": "肿瘤科", "肿瘤外科": "肿瘤科", "急诊室": "急诊科", "急诊": "急诊科",
    "康复理疗科": "康复科", "康复医学科": "康复科", "乳腺科": "乳腺外科", "乳腺中心": "乳腺外科",
    "乳腺肿瘤科": "乳腺外科", "免疫科": "风湿免疫科", "中医内科": "中医科", "骨伤科": "骨科", "脊柱外科": "骨科",
    "手外科": "骨科", "泌尿科": "泌尿外科", "泌尿外科学": "泌尿外科", "临床营养科": "营养科",
}

RULES = {
    "split": "a value packing several items joined by 、；; (和, in symptom lists) was split",
    "trailing_deng": "a trailing 等/及 was stripped",
    "sentence_punct": "holds sentence punctuation (a clause, not a phrase)",
    "bad_start": "starts with 或/及/以/可/常 (in symptoms, causes, tests, ... also 有/为/因/与/在): a sentence fragment",
    "code": "an approval number or other code, or (in a symptom list) a measurement with digits",
    "too_long": f"longer than {MAX_CHARS} characters",
    "too_short": "a single character",
    "header": "a section header word (实验室检查, 药物治疗, 病因不明, ...), not a fact",
    "clause": "words of running text (患者, 如, 由于, 甚至, 出现, ...) in a symptom, cause, test or treatment",
    "own_name": "the entity's own name (or an alias)",
    "non_symptom": "in a symptom list but a disease, pathogen, body part, colour/shape/stage or vague word",
    "descriptor": "a description of the course (多数无症状, 大小不一, 病程较长, ...), not a symptom",
    "near_duplicate": "same normalised key as an earlier value (心悸/心悸等, β 受体阻滞剂/β—受体阻滞剂)",
    "department_synonym": "a department spelled differently, mapped onto the whitelist",
    "department_unknown": "a department not on the whitelist (门诊, 男性, 功能检查科, ...)",
    "prevention_moved": "a vaccine or prophylaxis listed as treatment, moved to 预防",
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


def _reject_reason(value: str, key: str, own_names: set[str], not_symptoms: set[str]) -> str | None:
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
    if len(value) < 2:
        return "too_short"
    if value in HEADERS.get(key, ()):
        return "header"
    if value in own_names:
        return "own_name"
    if key == "相关症状":
        if any(w in value for w in DESCRIPTOR_WORDS):
            return "descriptor"
        if value in NON_SYMPTOM_WORDS or value.endswith(NON_SYMPTOM_SUFFIXES + NON_SYMPTOM_ENDINGS) or value in not_symptoms:
            return "non_symptom"
    return None


def clean_values(raw: list, key: str, own_names: set[str], note, not_symptoms: set[str] = frozenset()) -> list[str]:
    """Cleaned values of one field; every change or rejection is reported as ``note(rule, value)``.

    ``own_names``: the entity's name and aliases; ``not_symptoms``: disease names and body sites of the
    whole graph (a symptom list holding one of them is wrong there).
    """
    kept, seen = [], set()
    for item in raw:
        if not isinstance(item, str):
            continue
        text = unicodedata.normalize("NFKC", item).strip()
        parts = [p.strip() for p in SPLIT.split(text) if p.strip()]
        if key == "相关症状":
            parts = [q.strip() for p in parts for q in AND.split(p) if q.strip()]
        if len(parts) > 1:
            note("split", text)
        for part in parts:
            stripped = TRAILING.sub("", part).strip()
            if stripped != part:
                note("trailing_deng", part)
            if not stripped:
                continue
            if key == "所属科室":
                stripped = _department(stripped, note)
                if stripped is None:
                    continue
            rule = _reject_reason(stripped, key, own_names, not_symptoms)
            if rule:
                note(rule, stripped)
                continue
            nk = near_key(stripped)
            if nk in seen:
                note("near_duplicate", stripped)
                continue
            seen.add(nk)
            kept.append(stripped)
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

    def note(self, rule: str, value: str) -> None:
        self.rules[rule] += 1
        if len(self.examples.setdefault(rule, [])) < 5:
            self.examples[rule].append(value)

    def as_dict(self) -> dict:
        return {"source": self.source, "entities": self.entities, "diseases_imported": self.diseases,
                "entities_skipped": dict(self.skipped.most_common()), "rules": {r: self.rules[r] for r in RULES},
                "rule_meaning": RULES, "examples": self.examples, "per_field": self.per_field,
                "per_department": dict(self.per_department.most_common())}


def import_diseases(graph: dict, own_names: set[str] = frozenset()) -> tuple[list[dict], ImportReport]:
    """Disease records in our schema ({"中心词", field: [values]}) from a cMeKG graph, and the report.

    ``own_names`` are diseases of our own KB: those win (a cMeKG entity whose name or alias is one of
    them is skipped).
    """
    report = ImportReport(entities=len(graph))
    raw_counts: Counter = Counter()
    kept_counts: Counter = Counter()
    records = []
    note = report.note

    symptom_uses = Counter(unicodedata.normalize("NFKC", v).strip() for preds in graph.values()
                           for p in PREDICATES["相关症状"] for item in (preds.get(p) or []) if isinstance(item, str)
                           for v in SPLIT.split(item))
    candidates = {}
    for raw_name in sorted(graph):
        preds = graph[raw_name]
        name = unicodedata.normalize("NFKC", raw_name).strip()
        if DRUG_PREDICATES & set(preds):
            report.skipped["drug product (not imported)"] += 1
        elif not any(p in preds for p in PREDICATES["相关症状"] + PREDICATES["所属科室"]):
            report.skipped["not a disease (no symptoms or department)"] += 1
        elif symptom_uses[name] >= SYMPTOM_PAGE_USES and not name.endswith(DISEASE_NAME_SUFFIXES):
            report.skipped[f"a symptom page (listed as a symptom >= {SYMPTOM_PAGE_USES} times)"] += 1
        else:
            candidates[raw_name] = name
    sites = {unicodedata.normalize("NFKC", v).strip() for preds in graph.values() for p in PREDICATES["发病部位"]
             for item in (preds.get(p) or []) if isinstance(item, str) for v in SPLIT.split(item)}
    not_symptoms = set(candidates.values()) | set(own_names) | sites
    for raw_name, name in candidates.items():
        preds = graph[raw_name]
        if not name or SENTENCE_PUNCT.search(name) or len(name) > 30:
            report.skipped["unusable name"] += 1
            continue
        aliases = {name} | {unicodedata.normalize("NFKC", a).strip() for p in ALIAS_PREDICATES
                            for v in preds.get(p, []) if isinstance(v, str) for a in SPLIT.split(v)}
        if aliases & set(own_names):
            report.skipped["ours wins (same disease in our KB)"] += 1
            continue
        fields = {}
        for key, sources in PREDICATES.items():
            raw = [v for p in sources for v in (preds.get(p) or []) if isinstance(preds.get(p), list)]
            raw_counts[key] += len(raw)
            values = clean_values(raw, key, aliases, note, not_symptoms)
            if values:
                fields[key] = values
        split_prevention(fields, note)
        if not fields.get("所属科室"):
            report.skipped["no whitelisted department after cleaning"] += 1
            continue
        if len(fields.get("相关症状", [])) < MIN_SYMPTOMS:
            report.skipped[f"fewer than {MIN_SYMPTOMS} symptoms after cleaning"] += 1
            continue
        for key, values in fields.items():
            kept_counts[key] += len(values)
        report.per_department.update(fields["所属科室"])
        records.append({NAME_FIELD: name, **fields})
    # two cMeKG entities that clean to the same name: keep the first
    unique, seen = [], set()
    for r in records:
        if r[NAME_FIELD] in seen:
            report.skipped["duplicate name after NFKC"] += 1
            continue
        seen.add(r[NAME_FIELD])
        unique.append(r)
    report.diseases = len(unique)
    report.per_field = {k: {"raw": raw_counts[k], "kept": kept_counts[k]} for k in PREDICATES}
    return unique, report


def import_installed(own_names: set[str] = frozenset()) -> tuple[list[dict], ImportReport]:
    """:func:`import_diseases` on the installed pycmekg; raises CmekgError when it is not installed."""
    src = find_pickle()
    records, report = import_diseases(load_graph(src.path), own_names)
    report.source = {"package": PACKAGE, "version": src.version, "pickle": PICKLE_IN_PACKAGE, "sha256": src.sha256,
                     "licence": "MIT (as packaged on PyPI)", "upstream": "CMeKG, Peking University (via PyCMeKG)"}
    logger.info("cMeKG %s: %d of %d entities imported as diseases", src.version, report.diseases, report.entities)
    return records, report


def to_entries(records: list[dict], where: str) -> list[Entry]:
    """Imported records as KB entries (source "cmekg"), checked by the same validator as our files."""
    entries, errors = [], []
    for r in records:
        problems = validate_record(r, "disease", f"{where}:{r[NAME_FIELD]}")
        if problems:
            errors.extend(problems)
            continue
        fields = {k: v for k, v in r.items() if k != NAME_FIELD}
        entries.append(Entry(kind="disease", name=r[NAME_FIELD], fields=fields, path=where, line=0, source=SOURCE))
    if errors:
        raise KnowledgeError(errors)
    return entries


def merge(ours: list[Entry], imported: list[Entry]) -> list[Entry]:
    """Our entries, then the imported ones whose name we do not have (ours win)."""
    names = {e.name for e in ours}
    return ours + [e for e in imported if e.name not in names]


def load_installed_entries(own: list[Entry]) -> tuple[list[Entry], ImportReport]:
    """Our entries merged with the cMeKG diseases of the installed package; CmekgError if it is absent."""
    records, report = import_installed({e.name for e in own if e.kind == "disease"})
    where = f"{PACKAGE}-{report.source['version']}"
    return merge(own, to_entries(records, where)), report


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
    lines = ["# cMeKG import report", "",
             f"Source: `{PACKAGE}` {d['source'].get('version', '?')}, `{d['source'].get('pickle', '')}` "
             f"(sha256 `{d['source'].get('sha256', '')}`), read through a restricted unpickler (no globals).", "",
             f"{d['entities']} entities; **{d['diseases_imported']} imported as diseases**.", "",
             "## Entities not imported", "", "| why | entities |", "| --- | ---: |"]
    lines += [f"| {why} | {n} |" for why, n in d["entities_skipped"].items()]
    lines += ["", "## Values changed or dropped, per rule", "", "| rule | values | meaning | examples |",
              "| --- | ---: | --- | --- |"]
    for rule, n in d["rules"].items():
        ex = "、".join(d["examples"].get(rule, [])[:3]).replace("|", "/")
        lines.append(f"| `{rule}` | {n} | {RULES[rule]} | {ex} |")
    lines += ["", "## Values per field (raw cMeKG values -> kept after cleaning)", "", "| field | raw | kept |",
              "| --- | ---: | ---: |"]
    lines += [f"| {k} | {v['raw']} | {v['kept']} |" for k, v in d["per_field"].items()]
    lines += ["", "## Imported diseases per department", "", "| department | diseases |", "| --- | ---: |"]
    lines += [f"| {k} | {v} |" for k, v in d["per_department"].items()]
    return "\n".join(lines) + "\n"


def write_report(report: ImportReport, stem: str) -> None:
    """``<stem>.json`` and ``<stem>.md``."""
    with open(stem + ".json", "w", encoding="utf-8") as f:
        f.write(json.dumps(report.as_dict(), ensure_ascii=False, indent=2) + "\n")
    with open(stem + ".md", "w", encoding="utf-8") as f:
        f.write(report_markdown(report))


def main(command: str = "report", output_stem: str = "") -> None:
    """`python -m utils.cmekg report [stem]`: import the installed cMeKG and write its report."""
    from utils.knowledge import REPO_ROOT

    if command != "report":
        raise SystemExit(f"unknown command {command!r}; usage: python -m utils.cmekg report [output_stem]")
    try:  # as the build does it: our diseases win
        _, report = import_installed({e.name for e in load_knowledge() if e.kind == "disease"})
    except CmekgError as e:
        raise SystemExit(str(e)) from None
    stem = output_stem or os.path.join(REPO_ROOT, "data", "llama_data.cmekg_import")  # what the build writes too
    write_report(report, stem)
    logger.info("wrote %s.md and %s.json", stem, stem)


if __name__ == "__main__":
    import sys

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    main(*sys.argv[1:])
