"""One dataset build, end to end: load the knowledge base, split its entities, plan every candidate task,
select the records, make them (offline templates or an LLM's paraphrases) and write the files.
build_dataset.py is its command line."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from utils.knowledge.inputs import load_knowledge_base
from utils.knowledge.outputs import WrittenBuild, split_paths, write_outputs
from utils.knowledge.paraphrase import LLMSettings, paraphrase_records
from utils.knowledge.review import write_review
from utils.knowledge.schema import split_entities
from utils.knowledge.selection import select_tasks
from utils.knowledge.tasks import offline_record, plan_tasks

log = logging.getLogger(__name__)


@dataclass
class BuildConfig:
    """A build's settings; paths already resolved (build_dataset.py's flags)."""

    kb_path: str  # our knowledge base: a .jsonl file, a directory, a glob, or a comma list
    styles_path: str  # question styles JSON
    output_path: str  # train file; every other file goes beside it
    use_cmekg: bool  # add the cMeKG diseases of the installed pycmekg package
    max_records: int  # records in all splits together (before LLM-side de-duplication)
    seed: int  # sampling, phrasing and split seed
    valid_frac: float  # fraction of entities (per kind) held out for validation
    test_frac: float  # fraction of entities (per kind) held out for test
    llm: LLMSettings | None  # None: the offline templates
    flags: dict  # the command line as given, saved in .meta.json
    review: int = 0  # also write <stem>.review.md/.html: this many random records beside their entries
    review_seed: int = 7  # which records the review sheet draws


def build(config: BuildConfig) -> WrittenBuild:
    """Build and write the dataset (and the review sheet when asked); raises KnowledgeError on bad
    input, RecordsFailed when LLM retries ran out."""
    t0 = time.perf_counter()
    kb = load_knowledge_base(config.kb_path, config.styles_path, config.use_cmekg)
    split_of = split_entities(kb.entries, config.seed, config.valid_frac, config.test_frac)
    planned, left_out = plan_tasks(kb.entries, kb.styles, split_of, config.seed)
    tasks, n_dup = select_tasks(planned, config.max_records, config.seed)
    log.info(
        "planned %d tasks (%d duplicate instructions skipped) in %.2fs", len(tasks), n_dup, time.perf_counter() - t0
    )
    if config.llm is None:
        records = [offline_record(t, config.seed) for t in tasks]
    else:
        records = paraphrase_records(tasks, kb.entries, config.output_path, config.llm)
    written = write_outputs(
        records=records,
        tasks=tasks,
        kb=kb,
        split_of=split_of,
        flags=config.flags,
        output_path=config.output_path,
        left_out=left_out,
    )
    written.seconds = time.perf_counter() - t0
    if config.review:
        written.review_files = write_review(
            [{**r, "split": s} for s, rs in written.by_split.items() for r in rs],
            kb.entries,
            n=config.review,
            seed=config.review_seed,
            out_stem=split_paths(config.output_path)["review"],
        )
    return written
