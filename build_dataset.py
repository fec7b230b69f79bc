"""Build instruction-tuning data from the medical knowledge base (the seed's unreleased pipeline).

knowledge base (data/knowledge/*.jsonl)  ->  JSON Lines of {"instruction", "input": "", "output"}
in the seed's llama_data.json format, plus provenance fields the trainer ignores: "style",
"entity" (the 中心词, or [a, b] for a comparison), "facts" ([{"field", "value"}, ...]: every value
appears verbatim in "output") and "id" (a deterministic task id).

    # offline: deterministic templates, no network (what data/llama_data*.json were built with)
    python build_dataset.py
    python build_dataset.py --max_records 3000 --output_path /tmp/kb/llama_data.json

    # any OpenAI-compatible endpoint; the key comes from the environment only
    OPENAI_API_KEY=... python build_dataset.py --backend openai \\
        --base_url https://api.openai.com/v1 --model gpt-4o-mini --num_workers 8

Styles (phrasings in data/knowledge/styles.json): single_fact, vignette, triage, comparison,
drug_usage, drug_side_effects, drug_contraindication.

Split rule: entities (中心词) are split per kind (diseases, drugs) into test / valid / train by
sorting them on sha256("<seed>:<中心词>"), so the split does not depend on --max_records. A record
goes to the split of its entity; comparison pairs are only drawn between two entities of the same
split, so no entity ever appears in two splits.

--max_records defaults to 2000: the committed train file (about 1,600 records, ~0.8 MB) then stays below 1 MiB; the offline
backend can produce about 3,000 distinct records (--max_records 3000).

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
import statistics
import sys
import time
import unicodedata
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed

from utils.knowledge import (DEFAULT_STYLES_PATH, NAME_FIELD, Entry, KnowledgeError, PLACEHOLDER,
                             display_path, load_knowledge, load_styles, resolve_kb_paths)
from utils.exam import build_exam, exam_paths
from utils.llm_client import ChatClient, LLMError

REPO_ROOT = os.path.dirname(os.path.abspath(__file__))
SPLITS = ("train", "valid", "test")
MAX_VALUES = 6  # at most this many values of one field in one answer (KB order: most typical first)

log = logging.getLogger("build_dataset")


def main(
    kb_path: str = "data/knowledge",  # knowledge base: a .jsonl file, a directory, a glob, or a comma list
    output_path: str = "data/llama_data.json",  # train file; .valid/.test/.meta.json are written beside it
    backend: str = "offline",  # offline (templates) | openai (any OpenAI-compatible chat endpoint)
    max_records: int = 2000,  # records in all splits together (before LLM-side de-duplication)
    seed: int = 42,  # sampling, phrasing and split seed
    valid_frac: float = 0.1,  # fraction of entities (per kind) held out for validation
    test_frac: float = 0.1,  # fraction of entities (per kind) held out for test
    styles_path: str = "",  # question styles JSON; empty = data/knowledge/styles.json
    base_url: str = "https://api.openai.com/v1",  # openai: API root (…/v1)
    model: str = "gpt-4o-mini",  # openai: model name
    num_workers: int = 8,  # openai: concurrent requests
    max_retries: int = 5,  # openai: retries per record (transport errors and malformed answers alike)
    timeout: float = 60.0,  # openai: seconds per HTTP request
    backoff_base: float = 1.0,  # openai: seconds; retry n waits about backoff_base * 2**n (plus jitter)
    backoff_max: float = 30.0,  # openai: seconds; cap on one wait (Retry-After included)
    temperature: float = 0.7,  # openai: sampling temperature
    min_fact_coverage: float = 0.6,  # openai: reject answers stating fewer than this fraction of the facts
    progress: bool = True,  # openai: tqdm progress bar on stderr
):
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    flags = {k: v for k, v in locals().items() if k != "log"}
    if backend not in ("offline", "openai"):
        raise SystemExit(f"--backend must be offline or openai, got {backend!r}")
    if not (0 <= valid_frac < 1 and 0 <= test_frac < 1 and valid_frac + test_frac < 1):
        raise SystemExit(f"--valid_frac and --test_frac must be in [0, 1) and sum below 1, got {valid_frac}, {test_frac}")
    kb_path, output_path = _repo_path(kb_path), _repo_path(output_path)
    styles_path = _repo_path(styles_path) if styles_path else DEFAULT_STYLES_PATH
    t0 = time.perf_counter()

    # ------------------------------------------------------------------ load
    try:
        kb_files = resolve_kb_paths(kb_path)
        entries = load_knowledge(kb_files)
        styles = load_styles(styles_path)
    except KnowledgeError as e:
        raise SystemExit(f"knowledge base is invalid:\n{e}") from None

    # ------------------------------------------------------------------ plan: split entities, render tasks
    split_of = split_entities(entries, seed, valid_frac, test_frac)
    tasks = plan_tasks(entries, styles, split_of, seed)
    rng = random.Random(seed)
    rng.shuffle(tasks)
    tasks, n_dup = take_unique(tasks, max_records)
    log.info("planned %d tasks (%d duplicate instructions skipped) in %.2fs",
             len(tasks), n_dup, time.perf_counter() - t0)

    # ------------------------------------------------------------------ generate
    failures: dict[str, str] = {}
    if backend == "offline":
        records = [task_record(t, t["instruction"], t["output"], t["facts"]) for t in tasks]
    else:
        api_key = os.environ.get("OPENAI_API_KEY", "")
        if not api_key:
            log.warning("OPENAI_API_KEY is not set; sending requests without an Authorization header")
        client = ChatClient(base_url, model, api_key=api_key or None, timeout=timeout, max_retries=max_retries,
                            backoff_base=backoff_base, backoff_max=backoff_max, seed=seed)
        checkpoint = output_path + ".partial.jsonl"
        done, failures = generate_openai(tasks, client, checkpoint, num_workers, max_retries, temperature,
                                         min_fact_coverage, progress)
        if failures:
            for task_id, why in sorted(failures.items()):
                log.error("record %s failed: %s", task_id, why)
            log.error("%d of %d records failed after retries; %d are saved in %s. "
                      "Rerun the same command to retry the failed ones.",
                      len(failures), len(tasks), len(done), display_path(checkpoint))
            raise SystemExit(2)
        records = [done[t["id"]] for t in tasks]
        records, n_llm_dup = dedup_records(records)
        if n_llm_dup:
            log.warning("%d LLM answers repeated an earlier instruction and were dropped", n_llm_dup)

    # ------------------------------------------------------------------ split, write, report
    by_split = {s: [] for s in SPLITS}
    split_of_task = {t["id"]: t["split"] for t in tasks}
    for record in records:
        by_split[split_of_task[record["id"]]].append(record)
    paths = split_paths(output_path)
    outputs = {}
    for split in SPLITS:
        sha = write_jsonl_atomic(paths[split], by_split[split])
        outputs[split] = {"path": _rel(paths[split]), "records": len(by_split[split]), "sha256": sha}
    stats = statistics_of(by_split, {e.name: e for e in entries})
    meta = {
        "flags": {**flags, "kb_path": _rel(kb_path), "output_path": _rel(output_path), "styles_path": _rel(styles_path)},
        "kb_files": [{"path": _rel(p), "sha256": sha256_file(p)} for p in kb_files],
        "styles_file": {"path": _rel(styles_path), "sha256": sha256_file(styles_path)},
        "entities": {s: sum(v == s for v in split_of.values()) for s in SPLITS},
        "split_rule": "entities split per kind by sha256('<seed>:<中心词>'); comparison pairs drawn within one split",
        "outputs": outputs,
        "stats": stats,
        "python": sys.version.split()[0],
    }
    exam = build_exam(entries, split_of, seed)  # kb-mcq: 4-option questions per split (utils/exam.py)
    meta["exam"] = {s: {"path": _rel(str(p)), "questions": len(exam[s]), "sha256": write_jsonl_atomic(str(p), exam[s])}
                    for s, p in exam_paths(output_path).items()}
    write_text_atomic(paths["meta"], json.dumps(meta, ensure_ascii=False, indent=2) + "\n")
    if backend == "openai" and os.path.exists(output_path + ".partial.jsonl"):
        os.remove(output_path + ".partial.jsonl")
    print_stats(stats, outputs, time.perf_counter() - t0)


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
    return {"train": output_path, "valid": stem + ".valid.json", "test": stem + ".test.json", "meta": stem + ".meta.json"}


def sha256_file(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def write_text_atomic(path: str, text: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    data = text.encode("utf-8")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return hashlib.sha256(data).hexdigest()


def write_jsonl_atomic(path: str, records: list[dict]) -> str:
    return write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


# ============================================================================ split


def split_entities(entries: list[Entry], seed: int, valid_frac: float, test_frac: float) -> dict[str, str]:
    """中心词 -> split. Per kind, sorted by a seeded hash: the first test_frac go to test, then valid."""
    split_of = {}
    for kind in sorted({e.kind for e in entries}):
        names = sorted((e.name for e in entries if e.kind == kind),
                       key=lambda n: hashlib.sha256(f"{seed}:{n}".encode()).hexdigest())
        n_test, n_valid = round(len(names) * test_frac), round(len(names) * valid_frac)
        for i, name in enumerate(names):
            split_of[name] = "test" if i < n_test else "valid" if i < n_test + n_valid else "train"
    return split_of


# ============================================================================ rendering


def _join(values: list[str], sep: str = "、") -> str:
    return sep.join(values)


def fill(template: str, slots: dict[str, tuple[str, list[dict]]]) -> tuple[str, list[dict]]:
    """Fill {placeholders} from slots (text, facts); return the text and the facts it states."""
    facts: list[dict] = []
    for key in PLACEHOLDER.findall(template):
        for fact in slots[key][1]:
            if fact not in facts:
                facts.append(fact)
    return PLACEHOLDER.sub(lambda m: slots[m.group(1)][0], template), facts


def usable(templates: list[str], slots: dict) -> list[str]:
    """Templates whose placeholders all have a value; among those, the most informative ones."""
    ok = [t for t in templates if all(k in slots for k in PLACEHOLDER.findall(t))]
    if not ok:
        return []
    most = max(len(set(PLACEHOLDER.findall(t))) for t in ok)
    return [t for t in ok if len(set(PLACEHOLDER.findall(t))) >= most - 1]


def field_slot(entry: Entry, key: str, values: list[str] | None = None, sep: str = "、", tag_entity: bool = False):
    values = entry.get(key)[:MAX_VALUES] if values is None else values
    facts = [{"field": key, "value": v, **({"entity": entry.name} if tag_entity else {})} for v in values]
    return _join(values, sep), facts


def symptoms_of(entry: Entry) -> list[str]:
    """Symptoms that can be put in a patient's mouth (not 'mostly asymptomatic')."""
    return [s for s in entry.get("相关症状") if "无症状" not in s and "无明显症状" not in s]


def make_person(entry: Entry, rng: random.Random) -> str:
    """'一名45岁男性' etc., drawn from the entry's 多发人群 so the vignette is plausible."""
    groups = entry.get("多发人群") or ["成人"]
    group = rng.choice(groups)
    if "新生儿" in group:
        return f"一名出生{rng.randint(2, 7)}天的新生儿"
    sex = "女" if any(w in group for w in ("女", "孕妇", "哺乳")) else "男" if "男" in group else rng.choice("男女")
    ranges = [("婴幼儿", 1, 3), ("5岁以下", 1, 4), ("6个月至5岁", 1, 4), ("学龄儿童", 6, 11), ("儿童", 3, 11),
              ("青少年", 12, 17), ("孕妇", 24, 36), ("哺乳", 24, 34), ("育龄", 22, 40), ("绝经后", 52, 70),
              ("中老年", 45, 72), ("老年", 65, 85), ("中年", 40, 60), ("50岁左右", 48, 55), ("青年", 18, 30),
              ("青壮年", 20, 40), ("中青年", 25, 45)]
    low, high = 20, 65
    for word, lo, hi in ranges:
        if word in group:
            low, high = lo, hi
            break
    age = rng.randint(low, high)
    if "孕妇" in group:
        return f"一名{age}岁孕妇"
    if "哺乳" in group:
        return f"一名{age}岁哺乳期女性"
    noun = ("男孩" if sex == "男" else "女孩") if age < 12 else ("男生" if sex == "男" else "女生") if age < 18 else \
        ("男性" if sex == "男" else "女性")
    return f"一名{age}岁{noun}"


def _task(style: str, entity, kind: str, split: str, variant: str, question: str, answer: tuple[str, list[dict]]) -> dict:
    output, facts = answer
    for fact in facts:  # the evaluation relies on this; templates are data, so check rather than trust
        if fact["value"] not in output:
            raise AssertionError(f"{style} {entity}: fact {fact['value']!r} not in output {output!r}")
    key = json.dumps([style, entity, variant], ensure_ascii=False)
    return {"id": hashlib.sha1(key.encode("utf-8")).hexdigest()[:16], "style": style, "entity": entity,
            "kind": kind, "split": split, "instruction": question, "output": output, "facts": facts}


def plan_tasks(entries: list[Entry], styles: dict, split_of: dict[str, str], seed: int) -> list[dict]:
    """Every candidate task, in a deterministic order; each phrasing drawn from a per-task RNG."""
    def rng_for(*parts) -> random.Random:
        return random.Random(f"{seed}:" + ":".join(map(str, parts)))

    tasks = []
    diseases = [e for e in entries if e.kind == "disease"]
    drugs = [e for e in entries if e.kind == "drug"]

    for e in diseases:
        name = (e.name, [])  # the name in a question or an answer it does not state as a fact
        # -- single facts: one record per (disease, field)
        for key, style in styles["single_fact"]["fields"].items():
            if not e.get(key):
                continue
            rng = rng_for("single_fact", e.name, key)
            slots = {"name": name, "values": field_slot(e, key)}
            question, answer = rng.choice(style["questions"]), rng.choice(style["answers"])
            tasks.append(_task("single_fact", e.name, "disease", split_of[e.name], key,
                               fill(question, slots)[0], fill(answer, slots)))

        symptoms = symptoms_of(e)
        whole = {"name": (e.name, [{"field": NAME_FIELD, "value": e.name}]), "dept": field_slot(e, "所属科室")}
        for key, slot in (("检查", "exams"), ("药物治疗", "drugs"), ("辅助治疗", "aux")):
            if e.get(key):
                whole[slot] = field_slot(e, key, e.get(key)[:4])
        def patients(style: str, count: int, max_symptoms: int, answers) -> None:
            """``count`` patients showing 2..max_symptoms of the disease's symptoms (same RNG order as before)."""
            for i in range(count):
                rng = rng_for(style, e.name, i)
                k = rng.randint(2, min(max_symptoms, len(symptoms)))
                chosen = set(rng.sample(symptoms, k))
                picked = [s for s in symptoms if s in chosen]
                slots = {**whole, "person": (make_person(e, rng), []), "symptoms": (_join(picked), [])}
                question = rng.choice(styles[style]["questions"])
                answer = rng.choice(answers(slots))
                tasks.append(_task(style, e.name, "disease", split_of[e.name], i,
                                   fill(question, slots)[0], fill(answer, slots)))

        if len(symptoms) >= 2:  # one symptom alone rarely points to one disease or department
            # -- vignettes: three patients per disease with different symptom subsets
            patients("vignette", 3, 4, lambda slots: usable(styles["vignette"]["answers"], slots))
            # -- triage: two per disease
            patients("triage", 2, 3, lambda slots: styles["triage"]["answers"])

    # -- comparisons: pairs drawn within one split (see the split rule in the docstring)
    cmp_style = styles["comparison"]
    seen_pairs = set()
    for split in SPLITS:
        pool = [e for e in diseases if split_of[e.name] == split]
        for a in pool:
            rng = rng_for("comparison", a.name)
            same_dept = [b for b in pool if b is not a and set(b.get("所属科室")) & set(a.get("所属科室"))]
            others = [b for b in pool if b is not a]
            partners = ([rng.choice(same_dept)] if same_dept else []) + ([rng.choice(others)] if others else [])
            for b in partners:
                pair = tuple(sorted((a.name, b.name)))
                shared = [k for k in cmp_style["fields"] if a.get(k) and b.get(k)]
                if pair in seen_pairs or not shared:
                    continue
                seen_pairs.add(pair)
                key = rng.choice(shared)
                av, bv = a.get(key)[:MAX_VALUES], b.get(key)[:MAX_VALUES]
                common = [v for v in av if v in bv]
                kind = "same" if set(av) == set(bv) else "overlap" if common else "different"
                slots = {"a": (a.name, []), "b": (b.name, []), "label": (rng.choice(cmp_style["fields"][key]["label"]), []),
                         "a_values": field_slot(a, key, av, tag_entity=True),
                         "b_values": field_slot(b, key, bv, tag_entity=True), "common": (_join(common), [])}
                if kind == "same":
                    slots["common"] = (_join(av), field_slot(a, key, av, tag_entity=True)[1] + field_slot(b, key, bv, tag_entity=True)[1])
                question = rng.choice(cmp_style["questions"])
                answer = rng.choice(cmp_style[kind])
                tasks.append(_task("comparison", [a.name, b.name], "disease", split, key,
                                   fill(question, slots)[0], fill(answer, slots)))

    for e in drugs:
        slots = {"name": (e.name, [])}
        for key, slot, sep in (("药物分类", "class", "、"), ("适应症", "indication", "、"), ("用法用量", "usage", "，"),
                               ("不良反应", "adverse", "、"), ("禁忌", "contra", "、")):
            if e.get(key):
                slots[slot] = field_slot(e, key, sep=sep)
        plans = [("drug_usage", "usage", "questions", "answers"),
                 ("drug_usage", "indication", "indication_questions", "indication_answers"),
                 ("drug_side_effects", "adverse", "questions", "answers"),
                 ("drug_contraindication", "contra", "questions", "answers")]
        for style, variant, qkey, akey in plans:
            rng = rng_for(style, e.name, variant)
            answers = usable(styles[style][akey], slots)
            if not answers:
                continue
            tasks.append(_task(style, e.name, "drug", split_of[e.name], variant,
                               fill(rng.choice(styles[style][qkey]), slots)[0], fill(rng.choice(answers), slots)))
    return tasks


# ============================================================================ dedup


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


def dedup_records(records: list[dict]) -> tuple[list[dict], int]:
    seen, kept = set(), []
    for r in records:
        key = normalize(r["instruction"])
        if key not in seen:
            seen.add(key)
            kept.append(r)
    return kept, len(records) - len(kept)


def task_record(task: dict, instruction: str, output: str, facts: list[dict]) -> dict:
    return {"instruction": instruction, "input": "", "output": output, "style": task["style"],
            "entity": task["entity"], "facts": facts, "id": task["id"]}


# ============================================================================ openai backend

SYSTEM_PROMPT = ("你是一名医学教育专家，负责根据给定的医学知识编写中文指令微调数据。"
                 "只使用给定的事实，不要编造资料以外的医学信息。")
STYLE_HINTS = {
    "single_fact": "关于一种疾病某一方面的知识问答",
    "vignette": "病例问诊：描述患者年龄、性别和症状，询问可能的诊断和治疗",
    "triage": "根据症状询问应去哪个科室就诊",
    "comparison": "比较两种疾病的某一方面是否一致",
    "drug_usage": "药物的用途和用法用量",
    "drug_side_effects": "药物的不良反应",
    "drug_contraindication": "药物的禁忌",
}


class MalformedAnswer(ValueError):
    """The model's message was not the JSON object asked for, or left out too many facts."""


def build_messages(task: dict) -> list[dict]:
    material = {"style": task["style"], "entity": task["entity"], "reference_question": task["instruction"],
                "facts": task["facts"]}
    user = ("请根据下面的资料写一条“" + STYLE_HINTS[task["style"]] + "”类型的问答。\n"
            "要求：\n"
            "1. 只输出一个JSON对象：{\"instruction\": \"用户的提问\", \"output\": \"医生的回答\"}，不要输出其他内容；\n"
            "2. instruction 口语自然，可参考 reference_question 改写；\n"
            "3. output 必须逐字包含 facts 中的每一个 value，不得编造资料以外的医学事实。\n"
            "资料(JSON)：" + json.dumps(material, ensure_ascii=False))
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def parse_answer(content: str, task: dict, min_fact_coverage: float) -> dict:
    """The record from a model message; raises MalformedAnswer when it is not usable."""
    text = content.strip()
    if text.startswith("```"):
        text = text.strip("`")
        text = text[4:] if text.lower().startswith("json") else text
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        start, end = text.find("{"), text.rfind("}")
        try:
            obj = json.loads(text[start:end + 1]) if 0 <= start < end else None
        except json.JSONDecodeError:
            obj = None
    if not isinstance(obj, dict):
        raise MalformedAnswer(f"not a JSON object: {content[:60]!r}")
    instruction, output = obj.get("instruction"), obj.get("output")
    if not isinstance(instruction, str) or not instruction.strip() or not isinstance(output, str) or not output.strip():
        raise MalformedAnswer(f"'instruction' and 'output' must be non-empty strings: {content[:60]!r}")
    instruction, output = instruction.strip(), output.strip()
    stated = [f for f in task["facts"] if f["value"] in output]
    if task["facts"] and len(stated) / len(task["facts"]) < min_fact_coverage:
        raise MalformedAnswer(f"answer states {len(stated)}/{len(task['facts'])} facts")
    return task_record(task, instruction, output, stated)


def ask(client: ChatClient, task: dict, max_retries: int, temperature: float, min_fact_coverage: float) -> dict:
    """One record from the LLM; malformed answers are retried (transport retries live in the client)."""
    last = None
    for attempt in range(max_retries + 1):
        content = client.chat(build_messages(task), temperature=temperature)
        try:
            return parse_answer(content, task, min_fact_coverage)
        except MalformedAnswer as e:
            last = e
            if attempt < max_retries:
                time.sleep(client.backoff(attempt))
    raise MalformedAnswer(f"{max_retries + 1} malformed answer(s); last: {last}")


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
    log.info("resuming from %s: %d records done%s", display_path(path), len(done),
             f", {ignored} lines for other tasks/models ignored" if ignored else "")
    return done


def generate_openai(tasks, client, checkpoint, num_workers, max_retries, temperature, min_fact_coverage, progress):
    from tqdm import tqdm

    done = load_checkpoint(checkpoint, {t["id"] for t in tasks}, client.model)
    pending = [t for t in tasks if t["id"] not in done]
    failures: dict[str, str] = {}
    os.makedirs(os.path.dirname(os.path.abspath(checkpoint)), exist_ok=True)
    with open(checkpoint, "a", encoding="utf-8") as ckpt, \
            tqdm(total=len(tasks), initial=len(done), desc="records", file=sys.stderr, disable=not progress) as bar:
        pool = ThreadPoolExecutor(max_workers=max(1, num_workers))
        try:
            futures = {pool.submit(ask, client, t, max_retries, temperature, min_fact_coverage): t for t in pending}
            for future in as_completed(futures):
                task = futures[future]
                try:
                    record = future.result()
                except (LLMError, MalformedAnswer) as e:
                    failures[task["id"]] = f"{task['style']} {task['entity']}: {e}"
                else:
                    # only the main thread writes, one whole line at a time, durable before counting
                    ckpt.write(json.dumps({"id": task["id"], "model": client.model, "record": record},
                                          ensure_ascii=False) + "\n")
                    ckpt.flush()
                    os.fsync(ckpt.fileno())
                    done[task["id"]] = record
                bar.update(1)
        except KeyboardInterrupt:
            log.error("interrupted: %d records are saved in %s; rerun the same command to resume",
                      len(done), display_path(checkpoint))
            raise
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
    return done, failures


# ============================================================================ statistics


def _lengths(values: list[int]) -> dict:
    if not values:
        return {}
    values = sorted(values)
    return {"min": values[0], "mean": round(statistics.mean(values), 1), "median": statistics.median(values),
            "p95": values[min(len(values) - 1, int(0.95 * len(values)))], "max": values[-1]}


def statistics_of(by_split: dict[str, list[dict]], entry_of: dict[str, Entry]) -> dict:
    every = [r for s in SPLITS for r in by_split[s]]
    depts = Counter()
    for r in every:
        names = r["entity"] if isinstance(r["entity"], list) else [r["entity"]]
        for d in sorted({d for n in names for d in (entry_of[n].get("所属科室") or ["药物"])}):
            depts[d] += 1
    return {
        "records": len(every),
        "per_split": {s: len(by_split[s]) for s in SPLITS},
        "per_style": dict(sorted(Counter(r["style"] for r in every).items())),
        "per_style_split": {s: dict(sorted(Counter(r["style"] for r in by_split[s]).items())) for s in SPLITS},
        "per_department": dict(depts.most_common()),
        "instruction_chars": _lengths([len(r["instruction"]) for r in every]),
        "output_chars": _lengths([len(r["output"]) for r in every]),
    }


def print_stats(stats: dict, outputs: dict, seconds: float) -> None:
    print(f"built {stats['records']} records in {seconds:.2f}s")
    for split, info in outputs.items():
        print(f"  {split:5s} {info['records']:6d}  {info['path']}")
    print("per style:")
    for style, n in stats["per_style"].items():
        per = " ".join(f"{s}={stats['per_style_split'][s].get(style, 0)}" for s in SPLITS)
        print(f"  {style:22s} {n:6d}  ({per})")
    print("per department (top 12): " + ", ".join(f"{d} {n}" for d, n in list(stats["per_department"].items())[:12]))
    print(f"instruction chars: {stats['instruction_chars']}")
    print(f"output chars:      {stats['output_chars']}")


if __name__ == "__main__":
    import fire

    fire.Fire(main)
