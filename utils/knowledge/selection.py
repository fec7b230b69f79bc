"""Which candidate tasks become records: one per normalised instruction, drawn per style family by
STYLE_WEIGHTS (so single facts do not dominate), in an order set by the build's seed."""

from __future__ import annotations

import random
import unicodedata
from collections import defaultdict

# share of the records each style family gets (a family with too few tasks leaves its share to the others)
STYLE_WEIGHTS = {
    "single_fact": 0.26,
    "overview": 0.18,
    "vignette": 0.24,
    "triage": 0.10,
    "comparison": 0.14,
    "drug": 0.08,
}


def style_family(style: str) -> str:
    """The family a style is drawn in: the three drug styles share one share of the records."""
    return "drug" if style.startswith("drug_") else style


def normalize(text: str) -> str:
    """Instruction text for de-duplication: NFKC, no whitespace or punctuation, lower case."""
    text = unicodedata.normalize("NFKC", text).lower()
    return "".join(c for c in text if not c.isspace() and not unicodedata.category(c).startswith("P"))


def take_unique(tasks: list[dict], limit: int) -> tuple[list[dict], int]:
    """The first ``limit`` tasks with distinct normalised instructions, and how many duplicates were skipped."""
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
        pools[style_family(t["style"])].append(t)
    quota = quotas({s: len(v) for s, v in sorted(pools.items())}, limit)
    chosen = {t["id"] for s, v in pools.items() for t in v[: quota[s]]}
    return [t for t in unique if t["id"] in chosen], n_dup


def dedup_records(records: list[dict]) -> tuple[list[dict], int]:
    """Records with distinct normalised instructions (the first kept), and how many were dropped."""
    seen, kept = set(), []
    for r in records:
        key = normalize(r["instruction"])
        if key not in seen:
            seen.add(key)
            kept.append(r)
    return kept, len(records) - len(kept)
