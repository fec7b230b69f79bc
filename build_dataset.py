"""Build instruction-tuning data from the medical knowledge bases: cMeKG (HuaTuo's source) + ours.

knowledge (data/knowledge/*.jsonl, plus the cMeKG diseases of the installed `pycmekg` package, see
utils/knowledge/cmekg.py)  ->  JSON Lines of {"instruction", "input": "", "output"} in HuaTuo's
llama_data.json format, plus provenance fields the trainer ignores: "style", "entity" (the 中心词,
or [a, b] for a comparison), "source" (ours | cmekg, per entity), "facts" ([{"field", "value",
"source"[, "entity"]}, ...]: every value appears verbatim in "output" and is a value of that field
of its entry) and "id" (a deterministic task id).

    # offline: deterministic templates, no network (what data/llama_data*.json were built with)
    python build_dataset.py
    python build_dataset.py --cmekg False            # our hand-written KB only
    python build_dataset.py --max_records 3000 --output_path /tmp/kb/llama_data.json

    # any OpenAI-compatible endpoint (the openai client); the key comes from the environment only
    OPENAI_API_KEY=... python build_dataset.py --backend openai \\
        --base_url https://api.openai.com/v1 --model gpt-4o-mini --num_workers 8

Styles (phrasings in data/knowledge/styles.json), one function each below: single_fact, overview,
vignette, triage, comparison (related diseases only), drug_usage, drug_side_effects,
drug_contraindication. Records are drawn per style family by STYLE_WEIGHTS, so single facts do not
dominate.

Split rule: entities (中心词) are split per kind (diseases, drugs) into test / valid / train by
sorting them on sha256("<seed>:<中心词>") (utils.knowledge.schema.split_entities, shared with the exam), so the split does not depend on
--max_records. A record goes to the split of its entity; comparison pairs are only drawn between
two entities of the same split, so no entity ever appears in two splits.

Beside the train file: .valid/.test.json, .meta.json (flags, input hashes, pycmekg version and
pickle sha256, statistics), .card.md (the data card), .lengths.png and, when cMeKG is used,
.cmekg_import.md/.json (what the import dropped and why).

The openai backend checkpoints every finished record to <output_path>.partial.jsonl (append,
flush, fsync); rerunning the same command after a crash, Ctrl-C or SIGKILL resumes from it. Final
files are written atomically and the checkpoint is then removed. Records whose retries ran out are
listed and make the exit status 2 (the checkpoint is kept; rerun to retry just those).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import sys
import time
import unicodedata
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field

from utils.files import write_atomic
from utils.knowledge import audit, clinical
from utils.knowledge.cmekg import ImportReport, load_all, report_markdown
from utils.knowledge.datacard import data_card, plot_lengths, statistics_of
from utils.knowledge.exam import answer_blind_scores, build_exam, exam_paths
from utils.knowledge.phrasing import wrap_answer, wrap_question
from utils.knowledge.review import write_review
from utils.knowledge.schema import (
    DEFAULT_STYLES_PATH,
    NAME_FIELD,
    NOT_TREATMENT_PHRASES,
    PLACEHOLDER,
    TREATMENT_FIELDS,
    Entry,
    KnowledgeError,
    display_path,
    load_styles,
    resolve_kb_paths,
    split_entities,
)
from utils.llm import ReplyError, api_errors, ask_json, json_objects, make_client
from utils.model.runinfo import file_sha256

REPO_ROOT = os.path.dirname(os.path.abspath(__file__))
SPLITS = ("train", "valid", "test")
MAX_VALUES = 6  # at most this many values of one field in one answer (typicality order, see utils/knowledge/cmekg.py)
TYPICAL_VALUES = 8  # a patient's findings are drawn from this many of the most typical symptoms
MIN_FINDINGS = 3  # a vignette or triage question states at least this many findings ...
MIN_SPECIFIC = 2  # ... of which this many are specific (see is_specific)
SPECIFIC_MAX_DISEASES = 30  # a specific finding is listed by at most this many diseases (发热: 1,111) ...
GENERIC_MIN_DISEASES = 100  # ... and is more than a generic complaint (one listed by more diseases than this) ...
# ... with qualifiers that say nothing of where or what: 剧痛 is pain, 神疲乏力 fatigue, 肢体疼痛 pain, 发热畏寒 fever
QUALIFIERS = re.compile(
    r"剧烈|剧|轻度|轻微|稍感|稍|略|明显|严重|腹部|胸部|头部|背部|持续性|持续|反复|间歇性|间歇|阵发性|阵发|全身|周身|肢体|四肢|局部|神疲"
    r"|身体|患处|慢性|急性|突发|突然"
)
GENERIC_COMPLAINTS = ("僵硬", "不适", "疼", "痛", "酸", "胀", "麻", "冷", "热", "软", "累")
SPECIFIC_MAX_SITES = 25  # a body site two diseases share makes them comparable unless more list it (心脏 140, 肾 57,
# 皮肤 90, 胃 39: a xanthogranuloma and a purpura both "of the skin" are no pair worth comparing) or a whole system
BROAD_SITE = re.compile(r"系统$|^全身|^周身|^体表")  # 神经系统: Omsk haemorrhagic fever and strychnine poisoning
MIN_RELATEDNESS = (
    2  # a pair shares an uncommon site (2) or two specific findings (1 each): one shared finding is chance
)
# A disease whose name is an exposure, an injury or a pregnancy state is not diagnosed from findings alone: the
# question cannot state the drinking, burn, radiation, poisoning, trauma or fracture (the knowledge base records no
# history), and "最可能是酒精性肝硬化" from 肝掌 and 鼻出血 in a 27-year-old is what the review called unjustified.
HISTORY_NAMES = re.compile(
    r"酒精|酒中毒|饮酒|烧伤|灼伤|烫伤|冻伤|冻僵|放射|辐射|中毒|药物|药源|药疹|医源|术后|手术|外伤|创伤"
    r"|损伤|骨折|脱位|咬伤|蜇伤|电击|触电|淹溺|溺水|输血|物质|吸入|职业|尘肺|矽肺|石棉|脂肪栓塞|双胎"
    r"|多胎|异物|化妆品|引起的|治疗后|挫伤|复苏"
)
# findings only one sex can have (淋菌性尿道炎 lists 阴囊红肿 and 子宫颈红肿): kept out of a patient of the other sex
OTHER_SEX = {
    "女": re.compile(r"阴囊|睾丸|阴茎|前列腺|精索|包皮|龟头|遗精|阳痿|早泄|射精"),
    "男": re.compile(r"阴道|子宫|宫颈|外阴|阴唇|月经|闭经|痛经|经期|白带|乳房|乳腺|泌乳|溢乳|停经|妊娠|孕"),
}
NOTHING = re.compile(r"(?!)")
# what a test shows, not what a patient or a parent tells (右心室肥厚, 胰管内充盈缺损, 胰岛素受体障碍, 酸碱平衡失调)
NOT_TOLD = re.compile(r"心室|心房|心脏增大|肥厚|充盈缺损|腺泡|受体|潴留|酸碱|电解质|串珠|胰管|胰头|阳性|阴性|升高|降低")
# what only the patient can feel: a baby or toddler does not tell of 头昏 or 耳鸣
FELT = re.compile(r"头昏|头晕|头痛|头疼|乏力|疲劳|疲乏|麻木|刺痛|异物感|耳鸣|眩晕|心悸|胸闷|恶心|幻觉|记忆")
TELLS_OF_FEELINGS = 3  # years
MAX_DIFFERENTIAL = 3  # findings that fit more other diseases than this name no "most likely" disease
# name parts that do not identify a disease: 小儿肠套叠's core is 肠套叠 (a finding 儿童肠套叠 gives it away)
NAME_QUALIFIERS = re.compile(
    r"^(小儿|儿童|婴儿|婴幼儿|新生儿|老年|老年性|妊娠期|妊娠|产后|急性|慢性|亚急性|原发性|继发性|先天性|"
    r"特发性|复发性|难治性|重症|重型|轻型|单纯性|家族性|遗传性|获得性)+"
)
# share of the records each style family gets (a family with too few tasks leaves its share to the others)
STYLE_WEIGHTS = {
    "single_fact": 0.26,
    "overview": 0.18,
    "vignette": 0.24,
    "triage": 0.10,
    "comparison": 0.14,
    "drug": 0.08,
}

log = logging.getLogger("build_dataset")


def main(
    kb_path: str = "data/knowledge",  # our knowledge base: a .jsonl file, a directory, a glob, or a comma list
    cmekg: bool = True,  # add the cMeKG diseases of the installed pycmekg package (ours win on a shared name)
    output_path: str = "data/llama_data.json",  # train file; .valid/.test/.meta.json, the data card ... beside it
    backend: str = "offline",  # offline (templates) | openai (any OpenAI-compatible chat endpoint)
    max_records: int = 9000,  # records in all splits together (before LLM-side de-duplication)
    seed: int = 42,  # sampling, phrasing and split seed
    valid_frac: float = 0.1,  # fraction of entities (per kind) held out for validation
    test_frac: float = 0.1,  # fraction of entities (per kind) held out for test
    styles_path: str = "",  # question styles JSON; empty = data/knowledge/styles.json
    base_url: str = "https://api.openai.com/v1",  # openai: API root (…/v1)
    model: str = "gpt-4o-mini",  # openai: model name
    num_workers: int = 8,  # openai: concurrent requests
    max_retries: int = 5,  # openai: transport retries per call (in the client), and re-asks per unusable answer
    timeout: float = 60.0,  # openai: seconds per HTTP request
    temperature: float = 0.7,  # openai: sampling temperature
    min_fact_coverage: float = 0.6,  # openai: reject answers stating fewer than this fraction of the facts
    progress: bool = True,  # openai: tqdm progress bar on stderr
    review: int = 0,  # also write <stem>.review.md/.html: this many random records beside their entries, to audit
    review_seed: int = 7,  # which records the review sheet draws (another seed, another sample)
):
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    flags = {k: v for k, v in locals().items() if k != "log"}
    if backend not in ("offline", "openai"):
        raise SystemExit(f"--backend must be offline or openai, got {backend!r}")
    if not (0 <= valid_frac < 1 and 0 <= test_frac < 1 and valid_frac + test_frac < 1):
        raise SystemExit(
            f"--valid_frac and --test_frac must be in [0, 1) and sum below 1, got {valid_frac}, {test_frac}"
        )
    kb_path, output_path = _repo_path(kb_path), _repo_path(output_path)
    styles_path = _repo_path(styles_path) if styles_path else DEFAULT_STYLES_PATH
    t0 = time.perf_counter()

    kb = load_kb(kb_path, styles_path, cmekg)
    split_of = split_entities(kb.entries, seed, valid_frac, test_frac)
    planned, left_out = plan_tasks(kb.entries, kb.styles, split_of, seed)
    tasks, n_dup = select_tasks(planned, max_records, seed)
    log.info(
        "planned %d tasks (%d duplicate instructions skipped) in %.2fs", len(tasks), n_dup, time.perf_counter() - t0
    )

    if backend == "offline":
        records = [task_record(t, *wrapped(t, seed), t["facts"]) for t in tasks]
    else:
        records = generate_openai(
            tasks,
            kb.entries,
            output_path,
            base_url,
            model,
            num_workers,
            max_retries,
            timeout,
            temperature,
            min_fact_coverage,
            progress,
        )
    by_split = write_outputs(records, tasks, kb, split_of, flags, output_path, t0, left_out)
    if review:
        sheet = write_review(
            [{**r, "split": s} for s, rs in by_split.items() for r in rs],
            kb.entries,
            n=review,
            seed=review_seed,
            out_stem=split_paths(output_path)["review"],
        )
        print(f"review sheet: {', '.join(map(display_path, sheet))}")


# ============================================================================ paths and files


def _repo_path(path: str) -> str:
    """Relative paths that do not exist from the working directory are taken from the repo root."""
    if os.path.isabs(path) or os.path.exists(path) or any(c in path for c in "*?[,"):
        return path
    candidate = os.path.join(REPO_ROOT, path)
    return candidate if os.path.exists(os.path.dirname(candidate) or ".") else path


def _rel(path: str) -> str:
    """Repo-relative path for the meta file, so it does not depend on where the repo lives."""
    rel = os.path.relpath(os.path.abspath(path), REPO_ROOT)
    return path if rel.startswith("..") else rel


def split_paths(output_path: str) -> dict[str, str]:
    stem = output_path[:-5] if output_path.endswith(".json") else output_path
    return {
        "train": output_path,
        "valid": stem + ".valid.json",
        "test": stem + ".test.json",
        "meta": stem + ".meta.json",
        "card": stem + ".card.md",
        "lengths": stem + ".lengths.png",
        "import": stem + ".cmekg_import",
        "review": stem + ".review",
    }


def write_jsonl_atomic(path: str, records: list[dict]) -> str:
    return write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


# ============================================================================ load


@dataclass
class KB:
    entries: list[Entry]
    styles: dict
    files: list[str]
    cmekg_source: dict = field(default_factory=dict)  # package, version, pickle sha256 (empty: not used)
    cmekg_report: ImportReport | None = None


def load_kb(kb_path: str, styles_path: str, use_cmekg: bool) -> KB:
    """Our entries (+ cMeKG's diseases when asked and installed) and the styles; bad input exits with file:line."""
    try:
        files = resolve_kb_paths(kb_path)
        entries, report = load_all(files, use_cmekg)
        styles = load_styles(styles_path)
    except KnowledgeError as e:
        raise SystemExit(f"knowledge base is invalid:\n{e}") from None
    return KB(entries, styles, files, report.source if report else {}, report)


# ============================================================================ rendering helpers


# "{exams}等检查" with exams ending in 检查 would read "血常规检查等检查": the template's word is dropped
DOUBLED = re.compile(r"\{(\w+)\}等(检查|药物治疗|辅助治疗|药物|治疗)")


def fill(template: str, slots: dict[str, tuple[str, list[dict]]]) -> tuple[str, list[dict]]:
    """Fill {placeholders} from slots (text, facts); return the text and the facts it states."""
    template = DOUBLED.sub(
        lambda m: (
            m.group(0)
            if not slots.get(m.group(1), ("",))[0].endswith(("检查", "治疗", "药物"))
            else "{" + m.group(1) + "}等"
        ),
        template,
    )
    facts: list[dict] = []
    for key in PLACEHOLDER.findall(template):
        for fact in slots[key][1]:
            if fact not in facts:
                facts.append(fact)
    return PLACEHOLDER.sub(lambda m: slots[m.group(1)][0], template), facts


def fits(template: str, slots: dict) -> bool:
    return all(k in slots for k in PLACEHOLDER.findall(template))


def usable(templates: list[str], slots: dict, must: tuple[str, ...] = ()) -> list[str]:
    """Templates whose placeholders all have a value and that state every ``must`` slot the entry has."""
    ok = [t for t in templates if fits(t, slots) and all("{" + m + "}" in t for m in must if m in slots)]
    if not ok:
        return []
    most = max(len(set(PLACEHOLDER.findall(t))) for t in ok)
    return [t for t in ok if len(set(PLACEHOLDER.findall(t))) >= most - 1]


def field_slot(entry: Entry, key: str, values: list[str] | None = None, sep: str = "、", tag_entity: bool = False):
    values = entry.get(key)[:MAX_VALUES] if values is None else values
    facts = [
        {"field": key, "value": v, "source": entry.source, **({"entity": entry.name} if tag_entity else {})}
        for v in values
    ]
    return sep.join(values), facts


def compose(parts: list[list[str]], slots: dict, rng: random.Random) -> tuple[str, list[dict]]:
    """Prose joined from one phrasing of every part whose placeholders the slots can fill."""
    text, facts = "", []
    for options in parts:
        ok = [t for t in options if fits(t, slots)]
        if ok:
            piece, piece_facts = fill(rng.choice(ok), slots)
            text += piece
            facts += [f for f in piece_facts if f not in facts]
    return text, facts


def prevention_as_treatment(output: str, facts: list[dict]) -> str | None:
    """A phrase of NOT_TREATMENT_PHRASES in an answer that states treatment (the text of its other facts,
    e.g. the test 动物接种, aside), else None."""
    if not any(f["field"] in TREATMENT_FIELDS for f in facts):
        return None
    for f in sorted(facts, key=lambda f: -len(f["value"])):
        if f["field"] not in TREATMENT_FIELDS:
            output = output.replace(f["value"], "")
    return next((p for p in NOT_TREATMENT_PHRASES if p in output), None)


def urges(output: str, facts: list[dict]) -> bool:
    """The answer tells the reader to act urgently in its own words: a fact it states (our 中暑 is treated in
    急诊科, a test may be an 急诊CT) is knowledge, not advice, and is left out of the check."""
    for f in sorted(facts, key=lambda f: -len(f["value"])):
        output = output.replace(f["value"], "")
    return clinical.states_urgency(output)


def symptoms_of(entry: Entry) -> list[str]:
    """Symptoms that can be put in a patient's mouth (not 'mostly asymptomatic')."""
    return [s for s in entry.get("相关症状") if "无症状" not in s and "无明显症状" not in s]


def names_a_disease(by_symptom: dict[str, set[str]], diseases: list[Entry]) -> set[str]:
    """Symptom values that contain the name of a disease of the knowledge base (慢性阻塞性肺气肿 holds 肺气肿), or are
    one without its 症/病 (腰椎间盘突出): a disease, not a finding, and a question stating it would name that disease
    (held out, perhaps) in its text."""
    names = {n for e in diseases for n in e.names}
    pattern = re.compile("|".join(map(re.escape, sorted((n for n in names if len(n) >= 3), key=len, reverse=True))))
    # 腰椎间盘突出 is 腰椎间盘突出症 without its suffix
    return {s for s in by_symptom if pattern.search(s) or any(s + end in names for end in ("症", "病", "综合征"))}


def specific_findings(by_symptom: dict[str, set[str]]) -> set[str]:
    """Findings that point somewhere: listed by at most SPECIFIC_MAX_DISEASES diseases, and with something left
    once qualifiers (QUALIFIERS) and generic complaints (symptoms of more than GENERIC_MIN_DISEASES diseases,
    GENERIC_COMPLAINTS) are taken out: 午后低热 and 视力突然下降 are specific, 剧痛, 神疲乏力 and 发热畏寒 are not."""
    generic = sorted(
        {s for s, having in by_symptom.items() if len(having) > GENERIC_MIN_DISEASES} | set(GENERIC_COMPLAINTS),
        key=len,
        reverse=True,
    )
    specific = set()
    for finding, having in by_symptom.items():
        if len(having) > SPECIFIC_MAX_DISEASES:
            continue
        rest = QUALIFIERS.sub("", finding)
        for word in generic:
            rest = rest.replace(word, "")
        if len(rest) >= 2:
            specific.add(finding)
    return specific


def name_core(name: str) -> str:
    """The disease name without qualifiers of age, course or origin: 小儿肠套叠 -> 肠套叠."""
    core = NAME_QUALIFIERS.sub("", name)
    return core if len(core) >= 2 else name


def gives_away(finding: str, entry: Entry) -> bool:
    """The finding names the disease (or one of its names): stating it would give the diagnosis away."""
    return any(name_core(n) in finding or finding in n for n in entry.names)


# ============================================================================ planning: one function per style


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
    """The entry has a treatment we can defend: ours, or cMeKG's checked against the curated list (utils/knowledge/cmekg.py)."""
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
        emergency = level.emergency
        treatment = ""
        if style_name == "vignette":
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
            text, facts = compose(parts + [style["answer_close"]], slots, rng)
        else:
            elder = "elder" in person.voices and rng.random() < 0.3  # "家里老人…": only for a patient of that age
            question = rng.choice(answerable(style["questions_elder" if elder else "questions"], e))
            text, facts = fill(rng.choice(style["answers" + ("_emergency" if emergency else differential)]), slots)
            if emergency and others:  # the emergency phrasings name one disease: add the differential
                extra, extra_facts = fill(rng.choice(style["differential_note"]), slots)
                text, facts = text + extra, facts + extra_facts
        if emergency:
            text = level.sentence(rng) + text
        task = p.task(style_name, [e], i, fill(question, slots)[0], (text, facts), urgent=emergency)
        task["rules"] = [f"{style_name}: " + (f"emergency advice (rule {level.rule})" if emergency else "routine")]
        task["rules"] += [f"{style_name}: differential named"] * bool(others) + [f"vignette: {treatment}"] * (
            style_name == "vignette"
        )
        tasks.append(task)
    return tasks


def grounds(e: Entry, sites: set[str], specific: set[str]) -> tuple[set[str], set[str]]:
    """What a comparison pair may share: body sites of at most SPECIFIC_MAX_SITES diseases (``sites``) and specific
    findings (``specific``). Generic shared symptoms (发热, 疼痛, 压痛) and common sites (皮肤, 心脏) do not count."""
    return set(e.get("发病部位")) & sites, set(symptoms_of(e)) & specific


def relatedness(ga: tuple[set[str], set[str]], gb: tuple[set[str], set[str]]) -> int:
    """Shared sites count 2, shared specific findings 1 (0: not worth comparing; a shared department is asked
    for separately)."""
    return 2 * len(ga[0] & gb[0]) + len(ga[1] & gb[1])


def comparable_sites(diseases: list[Entry]) -> set[str]:
    """Body sites listed by at most SPECIFIC_MAX_SITES diseases, whole systems aside."""
    having = Counter(s for e in diseases for s in set(e.get("发病部位")))
    return {s for s, n in having.items() if n <= SPECIFIC_MAX_SITES and not BROAD_SITE.search(s)}


def comparison_tasks(p: Planner, diseases: list[Entry]) -> list[dict]:
    """ "X和Y的病因是否一致？" for related pairs only: same split and department, a shared body site or specific finding."""
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
            made = _comparison(style, a, b, key, rng)
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


def _comparison(style: dict, a: Entry, b: Entry, key: str, rng: random.Random):
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


# ============================================================================ selection and dedup


def family(style: str) -> str:
    return "drug" if style.startswith("drug_") else style


def normalize(text: str) -> str:
    """Instruction text for de-duplication: NFKC, no whitespace or punctuation, lower case."""
    text = unicodedata.normalize("NFKC", text).lower()
    return "".join(c for c in text if not c.isspace() and not unicodedata.category(c).startswith("P"))


def take_unique(tasks: list[dict], limit: int) -> tuple[list[dict], int]:
    seen, kept, dups = set(), [], 0
    for task in tasks:
        key = normalize(task["instruction"])
        if key in seen:
            dups += 1
            continue
        seen.add(key)
        kept.append(task)
        if len(kept) >= limit:
            break
    return kept, dups


def quotas(available: dict[str, int], limit: int) -> dict[str, int]:
    """Records per style family: STYLE_WEIGHTS shares of ``limit``, a family's unused share going to the rest."""
    quota = {s: 0 for s in available}
    left, open_ = limit, [s for s in available if available[s] > 0]
    while left > 0 and open_:
        total = sum(STYLE_WEIGHTS.get(s, 0.1) for s in open_)
        share = {s: max(1, int(left * STYLE_WEIGHTS.get(s, 0.1) / total)) for s in open_}
        for s in open_:
            take = min(share[s], available[s] - quota[s], left)
            quota[s] += take
            left -= take
        open_ = [s for s in open_ if quota[s] < available[s]]
    return quota


def select_tasks(tasks: list[dict], limit: int, seed: int) -> tuple[list[dict], int]:
    """Distinct instructions, drawn per style family by STYLE_WEIGHTS, in a seeded order."""
    rng = random.Random(seed)
    rng.shuffle(tasks)
    unique, n_dup = take_unique(tasks, len(tasks))
    pools = defaultdict(list)
    for t in unique:
        pools[family(t["style"])].append(t)
    quota = quotas({s: len(v) for s, v in sorted(pools.items())}, limit)
    chosen = {t["id"] for s, v in pools.items() for t in v[: quota[s]]}
    return [t for t in unique if t["id"] in chosen], n_dup


def dedup_records(records: list[dict]) -> tuple[list[dict], int]:
    seen, kept = set(), []
    for r in records:
        key = normalize(r["instruction"])
        if key not in seen:
            seen.add(key)
            kept.append(r)
    return kept, len(records) - len(kept)


def wrapped(task: dict, seed: int) -> tuple[str, str]:
    """The templated question and answer inside voice and reply wrappers (utils/knowledge/phrasing.py). The core is kept
    verbatim, so every fact stays checked; the wrappers hold no medical content (no urgency, no facts)."""
    rng = random.Random(f"{seed}:phrasing:{task['id']}")
    return (
        wrap_question(task["instruction"], rng, voice=task.get("voice")),
        wrap_answer(task["output"], rng, describes_symptoms=task["style"] in ("vignette", "triage")),
    )


def task_record(task: dict, instruction: str, output: str, facts: list[dict]) -> dict:
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


# ============================================================================ openai backend

SYSTEM_PROMPT = (
    "你是一名医学教育专家，负责根据给定的医学知识编写中文指令微调数据。只使用给定的事实，不要编造资料以外的医学信息。"
)
STYLE_HINTS = {
    "single_fact": "关于一种疾病某一方面的知识问答",
    "overview": "简要介绍一种疾病",
    "vignette": "病例问诊：描述患者年龄、性别和症状，询问可能的诊断和治疗",
    "triage": "根据症状询问应去哪个科室就诊",
    "comparison": "比较两种相关疾病的某一方面是否一致",
    "drug_usage": "药物的用途和用法用量",
    "drug_side_effects": "药物的不良反应",
    "drug_contraindication": "药物的禁忌",
}
# who asks: HuaTuo had GPT-3.5 write questions in several voices; one is picked per task (by its id)
VOICES = (
    "instruction 以患者本人的口吻提问，口语自然",
    "instruction 以患者家属的口吻提问，可以带一点担心的语气",
    "instruction 以医学生向老师请教的口吻提问，用词规范",
    "instruction 像在线问诊平台上的提问，简短直接",
)
RETRY_PROMPT = (
    "上面的输出无法使用：{reason}。请重新只输出一个JSON对象："
    '{{"instruction": "...", "output": "..."}}，output 只能使用资料中的事实。'
)


class MalformedAnswer(ReplyError):
    """The model's message was not the JSON object asked for, left out too many facts, or stated new ones."""


def build_messages(task: dict) -> list[dict]:
    material = {
        "style": task["style"],
        "entity": task["entity"],
        "reference_question": task["instruction"],
        "reference_answer": task["output"],
        "facts": [{k: f[k] for k in ("field", "value")} for f in task["facts"]],
    }
    voice = VOICES[int(task["id"], 16) % len(VOICES)]
    user = (
        "请根据下面的资料写一条“" + STYLE_HINTS[task["style"]] + "”类型的问答。\n"
        "要求：\n"
        '1. 只输出一个JSON对象：{"instruction": "用户的提问", "output": "医生的回答"}，不要输出其他内容；\n'
        f"2. {voice}，可参考 reference_question 改写；\n"
        "3. output 必须逐字包含 facts 中的每一个 value，不得提到资料以外的药物、检查或科室；\n"
        "4. 疫苗和预防措施不是治疗方法，不要写成治疗；\n"
        + (
            "5. 这是急症：output 必须保留 reference_answer 中立即拨打120或急诊就诊的提醒。\n"
            if task.get("urgent")
            else "5. 不要添加“尽快”“立即”“马上”“急诊”等紧急程度的说法。\n"
        )
        + "资料(JSON)："
        + json.dumps(material, ensure_ascii=False)
    )
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


GROUNDED_FIELDS = ("药物治疗", "检查", "所属科室")  # an answer may name only its own entry's drugs, tests, departments


def grounding_vocabulary(entries: list[Entry]) -> set[str]:
    """Every drug, test and department the KB knows (drug entries included), to catch invented ones."""
    vocab = {v for e in entries for k in GROUNDED_FIELDS for v in e.get(k)}
    vocab |= {e.name for e in entries if e.kind == "drug"}
    # 内科/外科 are words inside ordinary prose (外科手术) as much as departments: too short to police
    return {v for v in vocab if len(v) >= 2} - {"内科", "外科"}


def ungrounded(output: str, task: dict, vocabulary: set[str]) -> list[str]:
    """Drugs, tests or departments the output names that are not among the task's facts (or in its reference
    answer: an emergency's advice names 急诊科)."""
    allowed = [f["value"] for f in task["facts"]] + [task["instruction"], task.get("output", "")]
    allowed += task["entity"] if isinstance(task["entity"], list) else [task["entity"]]
    return sorted(v for v in vocabulary if v in output and not any(v in a for a in allowed))


def parse_answer(content: str, task: dict, min_fact_coverage: float, vocabulary: set[str] = frozenset()) -> dict:
    """The record from a model message; raises MalformedAnswer (with the reason) when it is not usable."""
    obj = next(json_objects(content), None)
    if obj is None:
        raise MalformedAnswer(f"not a JSON object: {content[:60]!r}")
    instruction, output = obj.get("instruction"), obj.get("output")
    if not isinstance(instruction, str) or not instruction.strip() or not isinstance(output, str) or not output.strip():
        raise MalformedAnswer(f"'instruction' and 'output' must be non-empty strings: {content[:60]!r}")
    instruction, output = instruction.strip(), output.strip()
    stated = [f for f in task["facts"] if f["value"] in output]
    if task["facts"] and len(stated) / len(task["facts"]) < min_fact_coverage:
        raise MalformedAnswer(f"answer states {len(stated)}/{len(task['facts'])} facts")
    invented = ungrounded(output, task, vocabulary)
    if invented:
        raise MalformedAnswer(f"answer names {'、'.join(invented[:3])}, which the facts do not contain")
    if task["style"] in ("vignette", "single_fact", "overview") and prevention_as_treatment(output, stated):
        raise MalformedAnswer("answer presents prevention (vaccine/prophylaxis) as treatment")
    if urges(output, stated) != bool(task.get("urgent")):  # urgency comes from the red-flag rules only
        raise MalformedAnswer("answer drops the emergency advice" if task.get("urgent") else "answer adds urgency")
    return task_record(task, instruction, output, stated)


def ask(
    client, model: str, task: dict, max_retries: int, temperature: float, min_fact_coverage: float, vocabulary: set[str]
) -> dict:
    """One record from the LLM: unusable answers are asked again with the reason (utils.llm.ask_json)."""
    reply = ask_json(
        client,
        model,
        build_messages(task),
        lambda text: parse_answer(text, task, min_fact_coverage, vocabulary),
        max_attempts=max_retries + 1,
        retry_prompt=RETRY_PROMPT,
        temperature=temperature,
    )
    return reply.value


def load_checkpoint(path: str, wanted: set[str], model: str) -> dict[str, dict]:
    """Finished records from the checkpoint; a torn last line (killed mid-write) is cut off."""
    if not os.path.exists(path):
        return {}
    with open(path, "rb") as f:
        data = f.read()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        log.warning("%s: dropping a torn last line (%d bytes)", display_path(path), len(data) - cut)
        with open(path, "r+b") as f:
            f.truncate(cut)
        data = data[:cut]
    done, ignored = {}, 0
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
            task_id, record = item["id"], item["record"]
        except (json.JSONDecodeError, KeyError, TypeError):
            log.warning("%s:%d: unreadable checkpoint line skipped", display_path(path), lineno)
            continue
        if task_id in wanted and item.get("model") == model and task_id not in done:
            done[task_id] = record
        else:
            ignored += 1
    log.info(
        "resuming from %s: %d records done%s",
        display_path(path),
        len(done),
        f", {ignored} lines for other tasks/models ignored" if ignored else "",
    )
    return done


def generate_openai(
    tasks,
    entries,
    output_path,
    base_url,
    model,
    num_workers,
    max_retries,
    timeout,
    temperature,
    min_fact_coverage,
    progress,
) -> list[dict]:
    """Records rewritten by the LLM, in task order; exits 2 listing the failures when retries ran out."""
    api_key = os.environ.get("OPENAI_API_KEY", "")
    if not api_key:
        log.warning("OPENAI_API_KEY is not set; sending requests with a placeholder key")
    client = make_client(base_url, api_key=api_key or None, timeout=timeout, max_retries=max_retries)
    checkpoint = output_path + ".partial.jsonl"
    done, failures = run_requests(
        tasks,
        client,
        model,
        checkpoint,
        num_workers,
        max_retries,
        temperature,
        min_fact_coverage,
        grounding_vocabulary(entries),
        progress,
    )
    if failures:
        for task_id, why in sorted(failures.items()):
            log.error("record %s failed: %s", task_id, why)
        log.error(
            "%d of %d records failed after retries; %d are saved in %s. "
            "Rerun the same command to retry the failed ones.",
            len(failures),
            len(tasks),
            len(done),
            display_path(checkpoint),
        )
        raise SystemExit(2)
    records, n_llm_dup = dedup_records([done[t["id"]] for t in tasks])
    if n_llm_dup:
        log.warning("%d LLM answers repeated an earlier instruction and were dropped", n_llm_dup)
    return records


def run_requests(
    tasks, client, model, checkpoint, num_workers, max_retries, temperature, min_fact_coverage, vocabulary, progress
):
    from tqdm import tqdm

    done = load_checkpoint(checkpoint, {t["id"] for t in tasks}, model)
    pending = [t for t in tasks if t["id"] not in done]
    failures: dict[str, str] = {}
    os.makedirs(os.path.dirname(os.path.abspath(checkpoint)), exist_ok=True)
    with (
        open(checkpoint, "a", encoding="utf-8") as ckpt,
        tqdm(total=len(tasks), initial=len(done), desc="records", file=sys.stderr, disable=not progress) as bar,
    ):
        pool = ThreadPoolExecutor(max_workers=max(1, num_workers))
        try:
            futures = {
                pool.submit(ask, client, model, t, max_retries, temperature, min_fact_coverage, vocabulary): t
                for t in pending
            }
            for future in as_completed(futures):
                task = futures[future]
                try:
                    record = future.result()
                except (*api_errors(), ReplyError) as e:
                    failures[task["id"]] = f"{task['style']} {task['entity']}: {type(e).__name__}: {e}"
                else:
                    # only the main thread writes, one whole line at a time, durable before counting
                    ckpt.write(
                        json.dumps({"id": task["id"], "model": model, "record": record}, ensure_ascii=False) + "\n"
                    )
                    ckpt.flush()
                    os.fsync(ckpt.fileno())
                    done[task["id"]] = record
                bar.update(1)
        except KeyboardInterrupt:
            log.error(
                "interrupted: %d records are saved in %s; rerun the same command to resume",
                len(done),
                display_path(checkpoint),
            )
            raise
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
    return done, failures


# ============================================================================ outputs, statistics, data card


def write_outputs(
    records: list[dict],
    tasks: list[dict],
    kb: KB,
    split_of: dict,
    flags: dict,
    output_path: str,
    t0: float,
    left_out: Counter,
) -> dict[str, list[dict]]:
    by_split = {s: [] for s in SPLITS}
    split_of_task = {t["id"]: t["split"] for t in tasks}
    for record in records:
        by_split[split_of_task[record["id"]]].append(record)
    paths = split_paths(output_path)
    outputs = {}
    for split in SPLITS:
        sha = write_jsonl_atomic(paths[split], by_split[split])
        outputs[split] = {"path": _rel(paths[split]), "records": len(by_split[split]), "sha256": sha}
    stats = statistics_of(by_split, {e.name: e for e in kb.entries})
    kept = {r["id"] for r in records}
    meta = {
        "flags": {
            **flags,
            "kb_path": _rel(flags["kb_path"] if os.path.isabs(flags["kb_path"]) else flags["kb_path"]),
            "output_path": _rel(output_path),
            "styles_path": _rel(flags["styles_path"] or DEFAULT_STYLES_PATH),
        },
        "kb_files": [{"path": _rel(p), "sha256": file_sha256(p)} for p in kb.files],
        "styles_file": {
            "path": _rel(flags["styles_path"] or DEFAULT_STYLES_PATH),
            "sha256": file_sha256(_repo_path(flags["styles_path"]) if flags["styles_path"] else DEFAULT_STYLES_PATH),
        },
        "cmekg": kb.cmekg_source or None,
        "entities": {s: sum(v == s for v in split_of.values()) for s in SPLITS},
        "split_rule": "entities split per kind by sha256('<seed>:<中心词>'); comparison pairs drawn within one split",
        "outputs": outputs,
        "stats": stats,
        "cmekg_import": {
            k: v
            for k, v in kb.cmekg_report.as_dict().items()
            if k in ("entities", "diseases_imported", "entities_skipped", "rules", "rule_meaning")
        }
        if kb.cmekg_report
        else None,
        "clinical_rules": clinical.rules_table(),
        "builder_rules": {
            "candidates_left_out": dict(sorted(left_out.items())),
            "records": dict(
                sorted(Counter(rule for t in tasks if t["id"] in kept for rule in t.get("rules", [])).items())
            ),
        },
        "python": sys.version.split()[0],
    }
    # kb-mcq: 4-option questions per split (utils/knowledge/exam.py), options matched to the key on the training records
    exam = build_exam(kb.entries, split_of, flags["seed"], train_records=by_split["train"])
    meta["exam"] = {
        s: {"path": _rel(str(p)), "questions": len(exam[s]), "sha256": write_jsonl_atomic(str(p), exam[s])}
        for s, p in exam_paths(output_path).items()
    }
    meta["exam"]["answer_blind"] = answer_blind_scores(exam["test"], by_split["train"])
    # the review's 12 causes counted over this build, by detectors independent of the rules above (utils/knowledge/audit.py)
    every = [{**r, "split": s} for s, rs in by_split.items() for r in rs]
    found = audit.audit(audit.Build(every, kb.entries, audit.cmekg_aliases() if kb.cmekg_report else {}))
    meta["audit"] = {cause: {"title": r["title"], "metrics": r["metrics"]} for cause, r in found.items()}
    write_atomic(paths["meta"], json.dumps(meta, ensure_ascii=False, indent=2) + "\n")
    if kb.cmekg_report is not None:
        write_atomic(
            paths["import"] + ".json", json.dumps(kb.cmekg_report.as_dict(), ensure_ascii=False, indent=2) + "\n"
        )
        write_atomic(paths["import"] + ".md", report_markdown(kb.cmekg_report))
    plot_lengths(by_split, paths["lengths"])
    write_atomic(paths["card"], data_card(meta, paths))
    if os.path.exists(output_path + ".partial.jsonl"):
        os.remove(output_path + ".partial.jsonl")
    print_stats(stats, outputs, time.perf_counter() - t0)
    print(
        "exam answer-blind accuracy on the test split (chance 25%): "
        + ", ".join(f"{k} {v:.1%}" for k, v in meta["exam"]["answer_blind"].items())
    )
    return by_split


def print_stats(stats: dict, outputs: dict, seconds: float) -> None:
    print(
        f"built {stats['records']} records from {stats['diseases']} diseases and {stats['drugs']} drugs "
        f"in {seconds:.2f}s"
    )
    for split, info in outputs.items():
        print(f"  {split:5s} {info['records']:6d}  {info['path']}")
    print("per source: " + ", ".join(f"{k} {v}" for k, v in stats["per_source"].items()))
    print("per style:")
    for style, n in stats["per_style"].items():
        per = " ".join(f"{s}={stats['per_style_split'][s].get(style, 0)}" for s in SPLITS)
        print(f"  {style:22s} {n:6d}  ({per})")
    print("per department (top 12): " + ", ".join(f"{d} {n}" for d, n in list(stats["per_department"].items())[:12]))
    print(
        f"masked patterns: {stats['instruction_patterns']} instruction, {stats['answer_patterns']} answer "
        f"(top 10 answer patterns cover {stats['top10_answer_pattern_share']:.0%})"
    )
    print(f"instruction chars: {stats['instruction_chars']}")
    print(f"output chars:      {stats['output_chars']}")


if __name__ == "__main__":
    import fire

    fire.Fire(main)
