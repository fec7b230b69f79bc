"""The files of a build, beside its train file: the JSON Lines splits, the kb-mcq exam, .meta.json
(flags, input hashes, statistics, rule counts, the audit's metrics), the cMeKG import report, the
lengths plot and the data card. Each file is written atomically; the openai checkpoint is removed last."""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from utils.files import REPO_ROOT, file_sha256, write_atomic
from utils.knowledge import audit, clinical
from utils.knowledge.cmekg import write_report
from utils.knowledge.datacard import data_card, plot_lengths, statistics_of
from utils.knowledge.exam import answer_blind_scores, build_exam, exam_paths
from utils.knowledge.inputs import KnowledgeBase
from utils.knowledge.schema import DEFAULT_STYLES_PATH

SPLITS = ("train", "valid", "test")
SPLIT_RULE = "entities split per kind by sha256('<seed>:<中心词>'); comparison pairs drawn within one split"


@dataclass
class WrittenBuild:
    """What a build wrote, for its summary."""

    by_split: dict[str, list[dict]]  # split -> records
    stats: dict  # datacard.statistics_of
    outputs: dict[str, dict]  # split -> {"path", "records", "sha256"}
    answer_blind: dict[str, float]  # the exam's answer-blind baselines on the test split
    seconds: float = 0.0  # the whole build, loading included (set by build.build)
    review_files: tuple[str, ...] = ()  # the review sheet's .md and .html, when one was asked for


def split_paths(output_path: str) -> dict[str, str]:
    """Every file of a build, by role, from its train file's path."""
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


def repo_relative(path: str) -> str:
    """Repo-relative path for the meta file, so it does not depend on where the repo lives."""
    rel = os.path.relpath(os.path.abspath(path), REPO_ROOT)
    return path if rel.startswith("..") else rel


def write_jsonl_atomic(path: str, records: list[dict]) -> str:
    """One JSON object per line; returns the file's sha256."""
    return write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


# ============================================================================ stages


def records_by_split(records: list[dict], tasks: list[dict]) -> dict[str, list[dict]]:
    """Each record goes to the split of its task's entity."""
    by_split = {s: [] for s in SPLITS}
    split_of_task = {t["id"]: t["split"] for t in tasks}
    for record in records:
        by_split[split_of_task[record["id"]]].append(record)
    return by_split


def write_splits(by_split: dict[str, list[dict]], paths: dict[str, str]) -> dict[str, dict]:
    """The train/valid/test files; split -> {"path", "records", "sha256"}."""
    outputs = {}
    for split in SPLITS:
        sha = write_jsonl_atomic(paths[split], by_split[split])
        outputs[split] = {"path": repo_relative(paths[split]), "records": len(by_split[split]), "sha256": sha}
    return outputs


def inputs_meta(kb: KnowledgeBase, flags: dict, output_path: str) -> dict:
    """The flags (paths repo-relative) and every input file with its sha256."""
    styles_shown = repo_relative(flags["styles_path"] or DEFAULT_STYLES_PATH)
    return {
        "flags": {
            **flags,
            "kb_path": repo_relative(flags["kb_path"]),
            "output_path": repo_relative(output_path),
            "styles_path": styles_shown,
        },
        "kb_files": [{"path": repo_relative(p), "sha256": file_sha256(p)} for p in kb.files],
        "styles_file": {"path": styles_shown, "sha256": file_sha256(kb.styles_path)},
        "cmekg": kb.cmekg_source or None,
    }


def rules_meta(kb: KnowledgeBase, tasks: list[dict], records: list[dict], left_out: Counter) -> dict:
    """How often each rule acted: the cMeKG import's cleaning rules, the clinical rules, the builder's rules
    (candidates left out, and the rules behind the records kept)."""
    kept = {r["id"] for r in records}
    import_keys = ("entities", "diseases_imported", "entities_skipped", "rules", "rule_meaning")
    return {
        "cmekg_import": {k: v for k, v in kb.cmekg_report.as_dict().items() if k in import_keys}
        if kb.cmekg_report
        else None,
        "clinical_rules": clinical.rules_table(),
        "builder_rules": {
            "candidates_left_out": dict(sorted(left_out.items())),
            "records": dict(
                sorted(Counter(rule for t in tasks if t["id"] in kept for rule in t.get("rules", [])).items())
            ),
        },
    }


def write_exam(kb: KnowledgeBase, split_of: dict[str, str], seed: int, by_split: dict, output_path: str) -> dict:
    """kb-mcq: 4-option questions per split (utils/knowledge/exam.py), options matched to the key on the training
    records; split -> {"path", "questions", "sha256"}, and the answer-blind baselines on the test split."""
    exam = build_exam(kb.entries, split_of, seed, train_records=by_split["train"])
    written = {
        s: {"path": repo_relative(str(p)), "questions": len(exam[s]), "sha256": write_jsonl_atomic(str(p), exam[s])}
        for s, p in exam_paths(output_path).items()
    }
    written["answer_blind"] = answer_blind_scores(exam["test"], by_split["train"])
    return written


def audit_meta(kb: KnowledgeBase, by_split: dict[str, list[dict]]) -> dict:
    """The review's 12 causes counted over this build, by detectors independent of the builder's rules
    (utils/knowledge/audit.py)."""
    every = [{**r, "split": s} for s, rs in by_split.items() for r in rs]
    found = audit.audit(audit.Build(every, kb.entries, audit.cmekg_aliases() if kb.cmekg_report else {}))
    return {cause: {"title": r["title"], "metrics": r["metrics"]} for cause, r in found.items()}


# ============================================================================ all of them


def write_outputs(
    *,
    records: list[dict],
    tasks: list[dict],
    kb: KnowledgeBase,
    split_of: dict[str, str],
    flags: dict,
    output_path: str,
    left_out: Counter,
) -> WrittenBuild:
    """Every file of the build (see the module docstring), the meta file's keys in a fixed order."""
    by_split = records_by_split(records, tasks)
    paths = split_paths(output_path)
    outputs = write_splits(by_split, paths)
    stats = statistics_of(by_split, {e.name: e for e in kb.entries})
    meta = {
        **inputs_meta(kb, flags, output_path),
        "entities": {s: sum(v == s for v in split_of.values()) for s in SPLITS},
        "split_rule": SPLIT_RULE,
        "outputs": outputs,
        "stats": stats,
        **rules_meta(kb, tasks, records, left_out),
        "python": sys.version.split()[0],
    }
    meta["exam"] = write_exam(kb, split_of, flags["seed"], by_split, output_path)
    meta["audit"] = audit_meta(kb, by_split)
    write_atomic(paths["meta"], json.dumps(meta, ensure_ascii=False, indent=2) + "\n")
    if kb.cmekg_report is not None:
        write_report(kb.cmekg_report, paths["import"])
    plot_lengths(by_split, paths["lengths"])
    write_atomic(paths["card"], data_card(meta, paths))
    Path(output_path + ".partial.jsonl").unlink(missing_ok=True)  # the openai checkpoint, now in the files
    return WrittenBuild(by_split, stats, outputs, meta["exam"]["answer_blind"])
