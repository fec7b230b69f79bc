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

Styles (phrasings in data/knowledge/styles.json), one function each in utils/knowledge/tasks.py: single_fact, overview,
vignette, triage, comparison (related diseases only), drug_usage, drug_side_effects,
drug_contraindication. Records are drawn per style family by STYLE_WEIGHTS (utils/knowledge/selection.py),
so single facts do not dominate.

Split rule: entities (中心词) are split per kind (diseases, drugs) into test / valid / train by
sorting them on sha256("<seed>:<中心词>") (utils.knowledge.schema.split_entities, shared with the exam), so the split
does not depend on
--max_records. A record goes to the split of its entity; comparison pairs are only drawn between
two entities of the same split, so no entity ever appears in two splits.

Beside the train file: .valid/.test.json, .meta.json (flags, input hashes, pycmekg version and
pickle sha256, statistics), .card.md (the data card), .lengths.png and, when cMeKG is used,
.cmekg_import.md/.json (what the import dropped and why).

The openai backend checkpoints every finished record to <output_path>.partial.jsonl (append,
flush, fsync); rerunning the same command after a crash, Ctrl-C or SIGKILL resumes from it. Final
files are written atomically and the checkpoint is then removed. Records whose retries ran out are
listed and make the exit status 2 (the checkpoint is kept; rerun to retry just those).

This script is the command line only: flags -> utils.knowledge.build.build -> a summary. The package's
modules, in the order a build runs them: inputs (load), schema.split_entities, tasks (with findings, slots,
answer_checks), selection, paraphrase (openai backend), outputs.
"""

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from utils.args import as_flags, flag, help_text, parse
from utils.cli import UserError, run
from utils.files import REPO_ROOT
from utils.knowledge.build import BuildConfig, build
from utils.knowledge.outputs import SPLITS, WrittenBuild
from utils.knowledge.paraphrase import LLMSettings
from utils.knowledge.schema import DEFAULT_STYLES_PATH, display_path


@dataclass
class BuildArgs:
    """What to build from, where to, and how much."""

    kb_path: str = flag("data/knowledge", "our knowledge base: a .jsonl file, a directory, a glob, or a comma list")
    cmekg: bool = flag(True, "add the cMeKG diseases of the installed pycmekg package (ours win on a shared name)")
    output_path: str = flag("data/llama_data.json", "train file; .valid/.test/.meta.json, the data card ... beside it")
    backend: str = flag("offline", "offline (templates) | openai (any OpenAI-compatible chat endpoint)")
    max_records: int = flag(9000, "records in all splits together (before LLM-side de-duplication)")
    seed: int = flag(42, "sampling, phrasing and split seed")
    valid_frac: float = flag(0.1, "fraction of entities (per kind) held out for validation")
    test_frac: float = flag(0.1, "fraction of entities (per kind) held out for test")
    styles_path: str = flag("", "question styles JSON; empty = data/knowledge/styles.json")


@dataclass
class ReviewArgs:
    """The review sheet: random records beside their knowledge entries, to audit by hand."""

    review: int = flag(0, "also write <stem>.review.md/.html with this many random records (0 = none)")
    review_seed: int = flag(7, "which records the review sheet draws (another seed, another sample)")


GROUPS = (BuildArgs, LLMSettings, ReviewArgs)  # LLMSettings: the openai backend's flags


def main(**flags):
    args, llm, sheet = parse(GROUPS, flags)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.backend not in ("offline", "openai"):
        raise UserError(f"--backend must be offline or openai, got {args.backend!r}")
    if not (0 <= args.valid_frac < 1 and 0 <= args.test_frac < 1 and args.valid_frac + args.test_frac < 1):
        raise UserError(
            f"--valid_frac and --test_frac must be in [0, 1) and sum below 1, got {args.valid_frac}, {args.test_frac}"
        )
    config = BuildConfig(
        kb_path=repo_path(args.kb_path),
        styles_path=repo_path(args.styles_path) if args.styles_path else DEFAULT_STYLES_PATH,
        output_path=repo_path(args.output_path),
        use_cmekg=args.cmekg,
        max_records=args.max_records,
        seed=args.seed,
        valid_frac=args.valid_frac,
        test_frac=args.test_frac,
        llm=llm if args.backend == "openai" else None,
        flags=as_flags(args, llm, sheet),  # saved in .meta.json, in this order
        review=sheet.review,
        review_seed=sheet.review_seed,
    )
    print_summary(build(config))


def repo_path(path: str) -> str:
    """A relative path that does not exist from the working directory is taken from the repo root (when its
    folder exists there); globs and comma lists are left to the knowledge-base loader."""
    if os.path.isabs(path) or os.path.exists(path) or any(c in path for c in "*?[,"):
        return path
    candidate = Path(REPO_ROOT, path)
    return str(candidate) if candidate.parent.exists() else path


def print_summary(built: WrittenBuild) -> None:
    stats = built.stats
    print(
        f"built {stats['records']} records from {stats['diseases']} diseases and {stats['drugs']} drugs "
        f"in {built.seconds:.2f}s"
    )
    for split, info in built.outputs.items():
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
    print(
        "exam answer-blind accuracy on the test split (chance 25%): "
        + ", ".join(f"{k} {v:.1%}" for k, v in built.answer_blind.items())
    )
    if built.review_files:
        print(f"review sheet: {', '.join(map(display_path, built.review_files))}")


if __name__ == "__main__":
    run(main, help_text(GROUPS, __doc__))
