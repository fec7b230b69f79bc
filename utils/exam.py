"""Four-option single-answer exams: built from the knowledge base (kb-mcq), or read from users' files.

One question, in CMExam's four fields (options as a list; ``answer`` is the correct option's letter)
plus where it came from::

    {"id", "question", "options": ["…", "…", "…", "…"], "answer": "C", "explanation": "…",
     "entity", "kind", "field", "style": "fact" | "reverse", "facts": [{"field", "value"}, ...]}

**Built from the knowledge base** (:func:`build_exam`; ``build_dataset.py`` writes one file per split):

* ``fact``: "下列哪一项是{疾病}的常见症状？" The answer is one value of the entry's field; every value
  of the entry gives one question, so the exam grows with the knowledge base.
* ``reverse``: "常见症状包括A、B、C的疾病是下列哪一种？" The answer is the entry; the other options are
  entries of the same kind *and the same split*.

A distractor must be verifiably not a fact of the asked entry, checked when built:

* a value distractor comes from another entry of the same kind that shares no department (drugs: no
  class) with the asked entry; it is none of the asked entry's values or its name, contains none of
  them and is contained in none of them (``头痛`` is no distractor for an entry with ``剧烈头痛``);
  if it names an entry, that entry does not mention the asked one;
* an entity distractor has the asked field in the knowledge base (so its values are known) and
  shares none of the values shown in the question, and neither entry names the other.

A question without three such distractors is not written. The correct letters are balanced
(each letter within one of a quarter of a split), so a model that always answers the same letter
scores 25%. The explanation states the entry's facts the question is built on, and ``facts`` lists
them. Prevention is not treatment: in treatment questions a vaccination or prophylaxis value is
neither an answer nor a distractor (flu vaccination belongs in COPD care, yet is not a treatment).

**Users' exam files** (:func:`read_exam_file`): CMExam CSV, CMB JSON, MedQA-MCMLE JSON Lines, C-Eval /
CMMLU CSV and this module's own layout are recognised from their field names (``FIELD_PRESETS``); any
other layout is described by a field mapping. A bad row is named by file and line and left out; the
other rows are kept.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import random
import re
from pathlib import Path

from utils.records import DataError, load_records

logger = logging.getLogger(__name__)

LETTERS = "ABCDEFGHIJ"
N_OPTIONS = 4
SPLITS = ("train", "valid", "test")

# Question wording per field: (fact question, reverse question or None). The wording is part of the
# exam's definition, like the task YAML; fields without wording here are not asked (用法用量 holds
# dose fragments that mean little alone, 多发人群 holds overlapping groups such as 成人 / 中老年人).
QUESTIONS: dict[str, dict[str, tuple[str, str | None]]] = {
    "disease": {
        "所属科室": ("{name}通常应到下列哪个科室就诊？", None),
        "相关症状": ("下列哪一项是{name}的常见症状？", "常见症状包括{values}的疾病是下列哪一种？"),
        "发病部位": ("{name}的发病部位是下列哪一项？", None),
        "并发症": ("下列哪一项是{name}可能出现的并发症？", "可能并发{values}的疾病是下列哪一种？"),
        "高危因素": ("下列哪一项是{name}的高危因素？", "高危因素包括{values}的疾病是下列哪一种？"),
        "检查": ("诊断{name}常用的检查是下列哪一项？", "常用{values}检查的疾病是下列哪一种？"),
        "组织学检查": ("{name}的组织学检查是下列哪一项？", None),
        "药物治疗": ("下列哪种药物可用于治疗{name}？", "可用{values}治疗的疾病是下列哪一种？"),
        "辅助治疗": ("下列哪一项是{name}的辅助治疗措施？", None),
        "病因": ("下列哪一项是{name}的病因？", "病因包括{values}的疾病是下列哪一种？"),
        "传播途径": ("{name}的传播途径是下列哪一项？", None),
        "相关疾病": ("下列哪一种疾病与{name}相关？", None),
    },
    "drug": {
        "药物分类": ("{name}属于下列哪一类药物？", None),
        "适应症": ("{name}可用于下列哪种情况？", "适应症包括{values}的药物是下列哪一种？"),
        "不良反应": ("下列哪一项是{name}的不良反应？", "不良反应包括{values}的药物是下列哪一种？"),
        "禁忌": ("下列哪一项属于{name}的禁忌？", None),
    },
}
GROUP_FIELD = {"disease": "所属科室", "drug": "药物分类"}  # value distractors come from other groups
TREATMENT_FIELDS = ("药物治疗", "辅助治疗")
PREVENTION_WORDS = ("疫苗", "接种", "预防")  # prevention is no treatment: neither answer nor distractor
SHOWN_VALUES = 3  # values named in a reverse question (the entry's most typical ones)


# ----------------------------------------------------------------------------------------------
# building from the knowledge base


def _overlaps(value: str, others) -> bool:
    """``value`` equals, contains or is contained in one of ``others``."""
    return any(value == o or value in o or o in value for o in others)


class _Kind:
    """The entries of one kind, indexed for drawing distractors."""

    def __init__(self, entries: list, kind: str):
        self.entries = [e for e in entries if e.kind == kind]
        self.by_name = {e.name: e for e in self.entries}
        self.values = {e.name: {v for vs in e.fields.values() for v in vs} for e in self.entries}
        self.groups = {e.name: set(e.get(GROUP_FIELD[kind])) for e in self.entries}
        self.owners: dict[str, dict[str, list[str]]] = {}  # field -> value -> names of the entries holding it
        for e in self.entries:
            for field, values in e.fields.items():
                for v in values:
                    self.owners.setdefault(field, {}).setdefault(v, []).append(e.name)
        self.pool = {field: sorted(owners) for field, owners in self.owners.items()}

    def mentions(self, name: str, other: str) -> bool:
        """Entry ``name`` lists ``other`` among its values."""
        return other in self.values.get(name, ())

    def value_ok(self, entry, field: str, value: str) -> bool:
        """``value`` is verifiably not a fact of ``entry`` (see the module docstring)."""
        own = self.values[entry.name] | {entry.name}
        if _is_prevention(field, value) or _overlaps(value, own) or self.mentions(value, entry.name):
            return False
        groups = self.groups[entry.name]
        return any(n != entry.name and not groups & self.groups[n] for n in self.owners[field][value])

    def entity_ok(self, entry, field: str, shown: list[str], other) -> bool:
        """``other`` has ``field`` in the knowledge base, none of ``shown``, and no link to ``entry``."""
        values = other.get(field)
        return bool(
            other is not entry and values and not any(_overlaps(v, values) for v in shown)
            and not _overlaps(other.name, shown) and not self.mentions(other.name, entry.name)
            and not self.mentions(entry.name, other.name)
        )  # fmt: skip


def _draw(rng: random.Random, candidates: list, ok, k: int = N_OPTIONS - 1) -> list | None:
    """``k`` distinct candidates passing ``ok``, drawn at random (a few tries, then a full scan), or None."""
    chosen = []
    for _ in range(4 * k):
        if len(chosen) == k or not candidates:
            break
        c = candidates[rng.randrange(len(candidates))]
        if c not in chosen and ok(c):
            chosen.append(c)
    if len(chosen) < k:
        rest = [c for c in candidates if c not in chosen and ok(c)]
        if len(chosen) + len(rest) < k:
            return None
        chosen += rng.sample(rest, k - len(chosen))
    return chosen


def _is_prevention(field: str, value: str) -> bool:
    return field in TREATMENT_FIELDS and any(w in value for w in PREVENTION_WORDS)


def _question(style: str, entry, field: str, question: str, correct: str, distractors: list[str]) -> dict:
    values = entry.get(field)
    key = json.dumps([style, entry.name, field, correct], ensure_ascii=False)
    return {
        "id": hashlib.sha1(key.encode("utf-8")).hexdigest()[:16],
        "question": question, "correct": correct, "distractors": distractors,
        "explanation": f"{entry.name}的{field}：{'、'.join(values)}。",  # the facts the question rests on
        "entity": entry.name, "kind": entry.kind, "field": field, "style": style,
        "facts": [{"field": field, "value": v} for v in values],
    }  # fmt: skip


def _place_answers(questions: list[dict], rng: random.Random) -> list[dict]:
    """Shuffle, then put the answer of the i-th question at letter i mod 4: the letters are balanced."""
    rng.shuffle(questions)
    placed = []
    for i, q in enumerate(questions):
        slot = i % N_OPTIONS
        options = list(q.pop("distractors"))
        rng.shuffle(options)
        options.insert(slot, q.pop("correct"))
        placed.append({"id": q.pop("id"), "question": q.pop("question"), "options": options, "answer": LETTERS[slot], **q})
    return placed


# Questions kept per split (a seeded sample, in build order): the exam stays a few MB and an lm-eval
# pass over the test split takes minutes, not hours; None keeps every question.
MAX_QUESTIONS = {"train": 10000, "valid": 1000, "test": 2000}


def build_exam(entries: list, split_of: dict[str, str], seed: int = 42, max_questions: dict | None = MAX_QUESTIONS) -> dict[str, list[dict]]:
    """Questions per split from knowledge entries (``name``, ``kind``, ``get(field)``) and the entity
    split (name -> split), at most ``max_questions[split]`` of them. Deterministic for a given
    knowledge base, split and seed."""
    kinds = {kind: _Kind(entries, kind) for kind in QUESTIONS}
    by_split: dict[str, list[dict]] = {s: [] for s in SPLITS}
    left_out = 0
    for entry in entries:
        if entry.kind not in kinds:
            continue
        index, split = kinds[entry.kind], split_of[entry.name]
        same_split = [e for e in index.entries if split_of[e.name] == split]
        out = by_split.setdefault(split, [])
        for field, (fact_q, reverse_q) in QUESTIONS[entry.kind].items():
            values = [v for v in entry.get(field) if not _is_prevention(field, v)]
            for value in values:
                rng = random.Random(f"{seed}:exam:fact:{entry.name}:{field}:{value}")
                drawn = _draw(rng, index.pool[field], lambda v: index.value_ok(entry, field, v))
                if drawn is None:
                    left_out += 1
                    continue
                out.append(_question("fact", entry, field, fact_q.format(name=entry.name), value, drawn))
            shown = values[:SHOWN_VALUES]
            if reverse_q and shown:
                rng = random.Random(f"{seed}:exam:reverse:{entry.name}:{field}")
                drawn = _draw(rng, same_split, lambda o: index.entity_ok(entry, field, shown, o))
                if drawn is None:
                    left_out += 1
                    continue
                question = reverse_q.format(values="、".join(shown))
                out.append(_question("reverse", entry, field, question, entry.name, [o.name for o in drawn]))
    for split, questions in by_split.items():
        cap = (max_questions or {}).get(split)
        if cap is not None and len(questions) > cap:
            keep = sorted(random.Random(f"{seed}:exam:cap:{split}").sample(range(len(questions)), cap))
            by_split[split] = [questions[i] for i in keep]
    placed = {s: _place_answers(qs, random.Random(f"{seed}:exam:{s}")) for s, qs in by_split.items()}
    logger.info("exam: %s questions (%d left out: fewer than three verifiable distractors)",
                ", ".join(f"{s} {len(q)}" for s, q in placed.items()), left_out)  # fmt: skip
    return placed


def exam_paths(output_path: str | Path) -> dict[str, Path]:
    """Where build_dataset.py writes the exam: ``kb_mcq/{train,valid,test}.json`` beside its train file."""
    folder = Path(output_path).parent / "kb_mcq"
    return {s: folder / f"{s}.json" for s in SPLITS}


# ----------------------------------------------------------------------------------------------
# users' exam files

# Field names of the layouts people publish exams in. "options" is one field (a list, a dict of
# letter -> text, or CMExam's "A text\nB text" string) or several columns joined with "+".
FIELD_PRESETS: dict[str, dict[str, str]] = {
    "medqa": {"question": "question", "options": "options", "answer": "answer_idx"},  # MedQA-MCMLE (JSON Lines)
    "kb-mcq": {"question": "question", "options": "options", "answer": "answer", "explanation": "explanation"},
    "cmb": {"question": "question", "options": "option", "answer": "answer", "explanation": "explanation"},
    "cmexam": {"question": "Question", "options": "Options", "answer": "Answer", "explanation": "Explanation"},
    "ceval": {"question": "question", "options": "A+B+C+D", "answer": "answer", "explanation": "explanation"},
    "cmmlu": {"question": "Question", "options": "A+B+C+D", "answer": "Answer"},
}
OPTION_LINE = re.compile(r"^\s*([A-J])\s*[\s.．、:：)）]\s*(.*?)\s*$")


def parse_fields(spec: str | dict | None) -> dict[str, str] | None:
    """``"question=题干,options=选项,answer=答案[,explanation=解析]"`` or a preset name -> mapping."""
    if not spec:
        return None
    if isinstance(spec, dict):
        mapping = dict(spec)
    elif spec in FIELD_PRESETS:
        return FIELD_PRESETS[spec]
    else:
        mapping = {}
        for item in spec.split(","):
            key, sep, value = item.partition("=")
            if not sep or not value.strip():
                raise ValueError(f"--exam_fields: expected key=column, got {item!r} (or a preset: {', '.join(FIELD_PRESETS)})")
            mapping[key.strip()] = value.strip()
    unknown = set(mapping) - {"question", "options", "answer", "explanation"}
    missing = {"question", "options", "answer"} - set(mapping)
    if unknown or missing:
        raise ValueError(f"--exam_fields: needs question, options, answer (and optionally explanation); "
                         f"missing {sorted(missing)}, unknown {sorted(unknown)}")  # fmt: skip
    return mapping


def detect_fields(row: dict) -> dict[str, str] | None:
    """The first preset whose question, options and answer fields the row has (MedQA's rows also
    hold the answer's text in "answer", so its letter field "answer_idx" is looked for first)."""
    for mapping in FIELD_PRESETS.values():
        if all(all(c in row for c in mapping[k].split("+")) for k in ("question", "options", "answer")):
            return mapping
    return None


def _options(row: dict, spec: str) -> list[str] | str:
    """The row's options as a list of texts, or a problem."""
    if "+" in spec:
        columns = spec.split("+")
        texts = [row.get(c) for c in columns]
        while texts and texts[-1] in (None, ""):  # C-Eval-like files may leave trailing options empty
            texts.pop()
        bad = next((c for c, t in zip(columns, texts) if not isinstance(t, str) or not t.strip()), None)
        return f"field '{bad}': option missing or empty" if bad else [t.strip() for t in texts]
    value = row.get(spec)
    if isinstance(value, str):
        texts, letters = [], []
        for line in (l for l in value.splitlines() if l.strip()):
            match = OPTION_LINE.match(line)
            if not match:
                return f"field '{spec}': option line {line.strip()[:20]!r} does not start with a letter A-J"
            letters.append(match.group(1))
            texts.append(match.group(2))
        value = dict(zip(letters, texts))
    if isinstance(value, dict):
        items = [(k, v) for k, v in value.items() if v not in (None, "")]  # CMB leaves unused letters empty
        letters = "".join(str(k).strip().upper() for k, _ in items)
        if letters != LETTERS[: len(letters)]:
            return f"field '{spec}': option letters {letters or 'none'} are not A, B, C, ... in order"
        value = [v for _, v in items]
    if not isinstance(value, list):
        return f"field '{spec}': expected a list, a letter -> text object or 'A …' lines, got {type(value).__name__}"
    if not all(isinstance(t, str) and t.strip() for t in value):
        return f"field '{spec}': every option must be a non-empty string"
    return [t.strip() for t in value]


def normalize_row(row, fields: dict[str, str]) -> dict | str:
    """One exam row in this module's layout, or a problem ``"field 'x': ..."``."""
    if not isinstance(row, dict):
        return f"row: expected an object, got {type(row).__name__}"
    question = row.get(fields["question"])
    if not isinstance(question, str) or not question.strip():
        return f"field '{fields['question']}': missing or not a non-empty string"
    options = _options(row, fields["options"])
    if isinstance(options, str):
        return options
    if not 2 <= len(options) <= len(LETTERS):
        return f"field '{fields['options']}': {len(options)} options (expected 2 to {len(LETTERS)})"
    answer = row.get(fields["answer"])
    answer = answer.strip().upper() if isinstance(answer, str) else answer
    if not isinstance(answer, str) or len(answer) != 1 or answer not in LETTERS[: len(options)]:
        several = isinstance(answer, str) and len(answer) > 1 and set(answer) <= set(LETTERS)
        why = "several answers: only single-answer questions are scored" if several else \
            f"expected one letter of {LETTERS[0]}-{LETTERS[len(options) - 1]}"  # fmt: skip
        return f"field '{fields['answer']}': {row.get(fields['answer'])!r}: {why}"
    explanation = row.get(fields.get("explanation", ""), "")
    return {"question": question.strip(), "options": options, "answer": answer,
            "explanation": explanation if isinstance(explanation, str) else ""}  # fmt: skip


def _csv_rows(path: Path):
    """(line, row) per CSV row; the line is where the row starts (options may span several lines)."""
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        start = 2
        for row in reader:
            yield start, row
            start = reader.line_num + 1


def read_exam_file(path: str | Path, fields: str | dict | None = None) -> tuple[list[dict], list[str]]:
    """(questions, problems): every usable row of a JSON, JSON Lines or CSV exam file, and one
    ``path:line: field 'x': problem`` per row left out. ``fields``: a mapping or preset name
    (default: recognised from the first row)."""
    path = Path(path)
    mapping = parse_fields(fields)
    if not path.is_file():
        raise DataError(f"{path}: exam file not found")
    if path.suffix.lower() == ".csv":
        try:
            rows, problems = list(_csv_rows(path)), []
        except (UnicodeDecodeError, csv.Error) as err:
            raise DataError(f"{path}: cannot read as CSV: {err}") from None
    else:  # JSON Lines or a JSON array; rows that are not JSON are named (and logged) by load_records
        loaded = load_records(path, on_bad_record="skip", check=lambda row: None)
        rows, problems = list(zip(loaded.lines, loaded.records)), list(loaded.skipped)
    first = next((row for _, row in rows if isinstance(row, dict)), None)
    mapping = mapping or (detect_fields(first) if first else None)
    if mapping is None:
        raise DataError(f"{path}: cannot tell the exam layout from the fields {sorted(first or [])}; pass "
                        f"--exam_fields question=...,options=...,answer=... or a preset ({', '.join(FIELD_PRESETS)})")  # fmt: skip
    questions = []
    for line, row in rows:
        result = normalize_row(row, mapping)
        if isinstance(result, str):
            problems.append(f"{path}:{line}: {result}")
            logger.warning("row left out: %s", problems[-1])
            continue
        questions.append({"id": f"{path.name}:{line}", **result})
    if not questions:
        raise DataError(f"{path}: no usable questions ({len(problems)} rows left out)")
    return questions, problems
