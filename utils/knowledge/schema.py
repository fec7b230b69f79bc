"""The medical knowledge base: schema, loading, validation, and the question styles built on it.

The knowledge base (data/knowledge/*.jsonl, described in data/knowledge/SCHEMA.md) is JSON Lines in
the cMeKG-like format of HuaTuo's data: one entity a line, Chinese keys, a string `中心词` and
list-of-strings fields. The kind of entity a file holds is told by its name: `diseases*.jsonl`
holds diseases, `drugs*.jsonl` drugs.

Every problem is reported as `path:line: field 'X': what is wrong`, never as a traceback:

    python -m utils.knowledge.schema validate                      # the shipped knowledge base
    python -m utils.knowledge.schema validate data/knowledge/drugs.jsonl my_kb/
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import re
import sys
from dataclasses import dataclass, field

from utils.cli import UserError
from utils.files import REPO_ROOT

logger = logging.getLogger(__name__)

DEFAULT_KB_DIR = os.path.join(REPO_ROOT, "data", "knowledge")
DEFAULT_STYLES_PATH = os.path.join(DEFAULT_KB_DIR, "styles.json")

NAME_FIELD = "中心词"
MAX_VALUE_CHARS = 40  # values are short factual phrases, not sentences

# kind -> (required list fields, optional list fields). Order is the canonical field order.
SCHEMA: dict[str, dict[str, tuple[str, ...]]] = {
    "disease": {
        "required": ("所属科室", "相关症状"),
        "optional": (
            "发病部位",
            "并发症",
            "高危因素",
            "检查",
            "组织学检查",
            "药物治疗",
            "辅助治疗",
            "预防",
            "病因",
            "传播途径",
            "多发人群",
            "相关疾病",
        ),
    },
    "drug": {
        "required": ("药物分类", "适应症"),
        "optional": ("用法用量", "不良反应", "禁忌", "禁忌例外"),
    },
}
# Prevention (vaccines, post-exposure prophylaxis) lives in 预防 and is never presented as treatment:
# a treatment field holding one of these phrases is an error, and build_dataset checks every
# treatment answer against the same list.
TREATMENT_FIELDS = ("药物治疗", "辅助治疗")
NOT_TREATMENT_PHRASES = ("疫苗", "接种", "预防", "暴露后")
# file-name prefix -> kind
KIND_BY_PREFIX = {"disease": "disease", "drug": "drug"}


class KnowledgeError(UserError):
    """One or more problems in knowledge-base files; `errors` holds one `path:line: ...` each."""

    def __init__(self, errors: list[str]):
        self.errors = list(errors)
        shown = self.errors[:20]
        more = f"\n... and {len(self.errors) - 20} more" if len(self.errors) > 20 else ""
        super().__init__("\n".join(shown) + more)


@dataclass
class Entry:
    kind: str  # "disease" or "drug"
    name: str  # the 中心词
    fields: dict[str, list[str]]  # field -> values, in file order
    path: str  # file it came from (as displayed in messages)
    line: int  # 1-based line number (0 for an imported entry)
    source: str = "ours"  # provenance of the entry and of every value in it: "ours" | "cmekg"
    aliases: tuple[str, ...] = ()  # other names of the same entity (别称, bracketed names, merged twins)

    def get(self, key: str) -> list[str]:
        return self.fields.get(key, [])

    @property
    def names(self) -> tuple[str, ...]:
        """The 中心词 first, then every alias: one entity, one group of names."""
        return (self.name, *self.aliases)


@dataclass
class LoadReport:
    entries: list[Entry] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- paths


def display_path(path: str) -> str:
    """Path relative to the working directory when inside it, else absolute (for messages)."""
    rel = os.path.relpath(os.path.abspath(path))
    return path if rel.startswith("..") else rel


def resolve_kb_paths(spec: str | list[str] | tuple[str, ...] | None = None) -> list[str]:
    """A file, a directory (its *.jsonl), a glob, or a list/comma-separated string of those."""
    if spec is None or spec == "":
        spec = [DEFAULT_KB_DIR]
    if isinstance(spec, str):
        spec = [s for s in spec.split(",") if s.strip()]
    paths: list[str] = []
    for item in spec:
        item = str(item).strip()
        if os.path.isdir(item):
            found = sorted(glob.glob(os.path.join(item, "*.jsonl")))
            if not found:
                raise KnowledgeError([f"{display_path(item)}: directory holds no *.jsonl files"])
            paths.extend(found)
        elif os.path.isfile(item):
            paths.append(item)
        elif any(c in item for c in "*?["):
            found = sorted(glob.glob(item))
            if not found:
                raise KnowledgeError([f"{item}: glob matches no file"])
            paths.extend(found)
        else:
            raise KnowledgeError([f"{item}: no such file or directory (pass a .jsonl file, a directory or a glob)"])
    seen, unique = set(), []
    for p in paths:
        key = os.path.abspath(p)
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def kind_of(path: str) -> str | None:
    stem = os.path.basename(path).lower()
    for prefix, kind in KIND_BY_PREFIX.items():
        if stem.startswith(prefix):
            return kind
    return None


# ----------------------------------------------------------------------------- validation


def _type_name(value) -> str:
    return "null" if value is None else type(value).__name__


def _check_list(where: str, key: str, value) -> list[str]:
    """Errors for one list-valued field (empty list means the value is fine)."""
    bad = f"{where}: field '{key}': expected a list of non-empty strings, got "
    if not isinstance(value, list):
        return [bad + _type_name(value)]
    if not value:
        return [bad + "an empty list (leave the field out instead)"]
    errors = []
    for i, v in enumerate(value):
        if not isinstance(v, str):
            errors.append(bad + f"{_type_name(v)} at index {i}")
        elif not v.strip():
            errors.append(bad + f"an empty string at index {i}")
        elif len(v) > MAX_VALUE_CHARS:
            errors.append(
                f"{where}: field '{key}': value {v[:12]!r}... is {len(v)} characters; "
                f"keep values to short phrases (<= {MAX_VALUE_CHARS})"
            )
    dups = sorted({v for v in value if isinstance(v, str) and value.count(v) > 1})
    if dups:
        errors.append(f"{where}: field '{key}': duplicate value(s) {', '.join(map(repr, dups))}")
    return errors


def validate_record(obj, kind: str, where: str) -> list[str]:
    """Errors for one decoded line; `where` is `path:line`."""
    if not isinstance(obj, dict):
        return [f"{where}: expected a JSON object, got {_type_name(obj)}"]
    errors = []
    name = obj.get(NAME_FIELD)
    if name is None:
        errors.append(f"{where}: field '{NAME_FIELD}': missing")
    elif not isinstance(name, str) or not name.strip():
        errors.append(
            f"{where}: field '{NAME_FIELD}': expected a non-empty string, got {_type_name(name)}"
            if not isinstance(name, str)
            else f"{where}: field '{NAME_FIELD}': empty string"
        )
    schema = SCHEMA[kind]
    allowed = set(schema["required"]) | set(schema["optional"]) | {NAME_FIELD}
    for key in schema["required"]:
        if key not in obj:
            errors.append(f"{where}: field '{key}': missing (required for a {kind})")
    for key, value in obj.items():
        if key == NAME_FIELD:
            continue
        if key not in allowed:
            errors.append(
                f"{where}: field '{key}': unknown field for a {kind} "
                f"(allowed: {', '.join([NAME_FIELD, *schema['required'], *schema['optional']])})"
            )
            continue
        errors.extend(_check_list(where, key, value))
        if kind == "disease" and key in TREATMENT_FIELDS and isinstance(value, list):
            for v in value:
                hit = [p for p in NOT_TREATMENT_PHRASES if isinstance(v, str) and p in v]
                if hit:
                    errors.append(
                        f"{where}: field '{key}': {v!r} is prevention ({hit[0]}), not treatment; move it to 预防"
                    )
    return errors


def load_report(spec=None) -> LoadReport:
    """Read and check every file; collect all entries and all problems (never raises on bad data)."""
    report = LoadReport()
    try:
        paths = resolve_kb_paths(spec)
    except KnowledgeError as e:
        report.errors.extend(e.errors)
        return report
    first_seen: dict[str, str] = {}  # 中心词 -> "path:line"
    for path in paths:
        shown = display_path(path)
        report.files.append(path)
        kind = kind_of(path)
        if kind is None:
            report.errors.append(
                f"{shown}: cannot tell the kind of entity from the file name; "
                f"name it {' or '.join(p + 's*.jsonl' for p in KIND_BY_PREFIX)}"
            )
            continue
        try:
            with open(path, encoding="utf-8") as f:
                lines = f.read().split("\n")
        except (OSError, UnicodeDecodeError) as e:
            report.errors.append(f"{shown}: cannot read: {e}")
            continue
        for lineno, text in enumerate(lines, start=1):
            if not text.strip():
                continue
            where = f"{shown}:{lineno}"
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                report.errors.append(f"{where}: not valid JSON: {e.msg} (column {e.colno})")
                continue
            errors = validate_record(obj, kind, where)
            if errors:
                report.errors.extend(errors)
                continue
            name = obj[NAME_FIELD].strip()
            if name in first_seen:
                report.errors.append(f"{where}: field '{NAME_FIELD}': duplicate '{name}' (first at {first_seen[name]})")
                continue
            first_seen[name] = where
            fields = {k: [v.strip() for v in obj[k]] for k in obj if k != NAME_FIELD}
            report.entries.append(Entry(kind=kind, name=name, fields=fields, path=shown, line=lineno))
    if not report.errors and not report.entries:
        report.errors.append(f"{', '.join(map(display_path, paths))}: no entries")
    return report


def load_knowledge(spec=None) -> list[Entry]:
    """Entries of the knowledge base at `spec`; raises KnowledgeError listing every problem."""
    report = load_report(spec)
    if report.errors:
        raise KnowledgeError(report.errors)
    counts = {k: sum(e.kind == k for e in report.entries) for k in SCHEMA}
    logger.info(
        "knowledge base: %s from %d file(s)", ", ".join(f"{n} {k}s" for k, n in counts.items()), len(report.files)
    )
    return report.entries


# ----------------------------------------------------------------------------- split


def split_entities(entries: list[Entry], seed: int, valid_frac: float, test_frac: float) -> dict[str, str]:
    """中心词 -> split. Per kind, sorted by a seeded hash: the first test_frac go to test, then valid."""
    split_of = {}
    for kind in sorted({e.kind for e in entries}):
        names = sorted(
            (e.name for e in entries if e.kind == kind),
            key=lambda n: hashlib.sha256(f"{seed}:{n}".encode()).hexdigest(),
        )
        n_test, n_valid = round(len(names) * test_frac), round(len(names) * valid_frac)
        for i, name in enumerate(names):
            split_of[name] = "test" if i < n_test else "valid" if i < n_test + n_valid else "train"
    return split_of


# ----------------------------------------------------------------------------- question styles

PLACEHOLDER = re.compile(r"\{(\w+)\}")


def read_json(path: str, what: str):
    """The JSON document at ``path``; a KnowledgeError naming the file and ``what`` it should hold otherwise."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise KnowledgeError([f"{display_path(path)}: cannot load {what}: {e}"]) from None


def load_styles(path: str | None = None) -> dict:
    """The question styles (data/knowledge/styles.json): phrasings per style, checked for shape."""
    path = path or DEFAULT_STYLES_PATH
    shown = display_path(path)
    styles = read_json(path, "question styles")
    errors = []

    def check(where: str, value):
        if not isinstance(value, list) or not value or not all(isinstance(s, str) and s.strip() for s in value):
            errors.append(f"{shown}: {where}: expected a non-empty list of non-empty strings")

    if not isinstance(styles, dict):
        raise KnowledgeError([f"{shown}: expected a JSON object of styles"])
    for name, style in styles.items():
        if name.startswith("_"):
            continue  # comments
        if not isinstance(style, dict) or style.get("kind") not in SCHEMA:
            errors.append(f"{shown}: style '{name}': expected an object with 'kind' one of {sorted(SCHEMA)}")
            continue
        for key, value in style.items():
            if key in ("kind", "description"):
                continue
            if key == "fields":
                for fname, sub in value.items():
                    if fname not in SCHEMA[style["kind"]]["required"] + SCHEMA[style["kind"]]["optional"]:
                        errors.append(f"{shown}: style '{name}': field '{fname}' is not a {style['kind']} field")
                    for k, v in sub.items():
                        if k != "label":
                            check(f"style '{name}' field '{fname}' '{k}'", v)
            else:
                check(f"style '{name}' '{key}'", value)
    if errors:
        raise KnowledgeError(errors)
    return {k: v for k, v in styles.items() if not k.startswith("_")}


# ----------------------------------------------------------------------------- CLI


def validate(*paths: str) -> None:
    """Check knowledge-base files (default: data/knowledge); exit 1 listing every problem."""
    report = load_report(list(paths) or None)
    if report.errors:
        for message in report.errors:
            print(message, file=sys.stderr)
        print(f"{len(report.errors)} problem(s) in {len(report.files)} file(s)", file=sys.stderr)
        raise SystemExit(1)
    counts = {k: sum(e.kind == k for e in report.entries) for k in SCHEMA}
    print(
        f"ok: {len(report.entries)} entries ({', '.join(f'{n} {k}s' for k, n in counts.items())}) "
        f"in {len(report.files)} file(s)"
    )


def main(command: str = "validate", *paths: str) -> None:
    """`python -m utils.knowledge.schema validate [paths...]`."""
    if command != "validate":
        print(
            f"unknown command {command!r}; usage: python -m utils.knowledge.schema validate [paths...]", file=sys.stderr
        )
        raise SystemExit(2)
    validate(*paths)


if __name__ == "__main__":
    # plain argv instead of fire: the only command takes free-form paths, and fire would print
    # the returned None or reinterpret paths that look like Python literals.
    main(*sys.argv[1:])
