"""Statistics and the data card of a built instruction set (build_dataset.py writes them beside the data).

``statistics_of`` counts records per split, source, style and department, the entity-masked
instruction and answer patterns (how repetitive the phrasing is once names and knowledge-base values
are hidden) and length summaries; ``plot_lengths`` draws the length histograms; ``data_card`` writes
the markdown card: counts, sources with licence and provenance, known limits.
"""

from __future__ import annotations

import os
import re
import statistics
from collections import Counter

from utils.knowledge import Entry


def _lengths(values: list[int]) -> dict:
    if not values:
        return {}
    values = sorted(values)
    return {"min": values[0], "mean": round(statistics.mean(values), 1), "median": statistics.median(values),
            "p95": values[min(len(values) - 1, int(0.95 * len(values)))], "max": values[-1]}


PERSON = re.compile(r"一名.{0,12}?(?:男性|女性|男孩|女孩|男生|女生|孕妇|产妇|哺乳期女性|新生儿|婴儿)")
LIST_OF_SLOTS = re.compile(r"<V>(?:[、，；和及与]<V>)+")


def masked_pattern(text: str, record: dict, entry_of: dict[str, Entry]) -> str:
    """The text with entity names, every KB value of its entities and the patient's age/sex masked."""
    names = record["entity"] if isinstance(record["entity"], list) else [record["entity"]]
    values = {n for n in names} | {v for n in names for vs in entry_of[n].fields.values() for v in vs}
    for v in sorted(values, key=len, reverse=True):
        text = text.replace(v, "<V>")
    return LIST_OF_SLOTS.sub("<V>", PERSON.sub("<P>", text))


def statistics_of(by_split: dict[str, list[dict]], entry_of: dict[str, Entry]) -> dict:
    every = [r for records in by_split.values() for r in records]
    depts, sources, entities = Counter(), Counter(), set()
    for r in every:
        names = r["entity"] if isinstance(r["entity"], list) else [r["entity"]]
        entities.update(names)
        sources.update({entry_of[n].source for n in names})
        for d in sorted({d for n in names for d in (entry_of[n].get("所属科室") or ["药物"])}):
            depts[d] += 1
    instruction_patterns = Counter(masked_pattern(r["instruction"], r, entry_of) for r in every)
    answer_patterns = Counter(masked_pattern(r["output"], r, entry_of) for r in every)
    top10 = sum(n for _, n in answer_patterns.most_common(10))
    return {
        "records": len(every),
        "diseases": sum(entry_of[n].kind == "disease" for n in entities),
        "drugs": sum(entry_of[n].kind == "drug" for n in entities),
        "per_split": {s: len(records) for s, records in by_split.items()},
        "per_source": dict(sorted(sources.items())),
        "per_style": dict(sorted(Counter(r["style"] for r in every).items())),
        "per_style_split": {s: dict(sorted(Counter(r["style"] for r in records).items())) for s, records in by_split.items()},
        "per_department": dict(depts.most_common()),
        "instruction_patterns": len(instruction_patterns),
        "answer_patterns": len(answer_patterns),
        "top10_answer_pattern_share": round(top10 / max(1, len(every)), 3),
        "instruction_chars": _lengths([len(r["instruction"]) for r in every]),
        "output_chars": _lengths([len(r["output"]) for r in every]),
    }


def plot_lengths(by_split: dict[str, list[dict]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    every = [r for records in by_split.values() for r in records]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, key in zip(axes, ("instruction", "output")):
        ax.hist([len(r[key]) for r in every], bins=40, color="tab:blue")
        ax.set_xlabel(f"{key} length (characters)")
        ax.set_ylabel("records")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=80, metadata={"Software": None})
    plt.close(fig)


def data_card(meta: dict, paths: dict) -> str:
    """The data card (markdown) of a build, from its meta file's content and its output paths."""
    s = meta["stats"]
    src = meta["cmekg"]
    lines = [
        "# Data card: " + os.path.basename(paths["train"]), "",
        "Instruction data for LoRA fine-tuning (HuaTuo/BenTsao format: instruction, input, output), built by "
        "`build_dataset.py` from knowledge bases; every fact an answer states is a value of its entry "
        "(`facts`), and prevention (vaccines, prophylaxis) is never presented as treatment.", "",
        f"{s['records']} records ({', '.join(f'{k} {v}' for k, v in s['per_split'].items())}), from {s['diseases']} "
        f"diseases and {s['drugs']} drugs; split by entity. Masked patterns (entity names, KB values and the "
        f"patient's age/sex replaced): {s['instruction_patterns']} instruction patterns, {s['answer_patterns']} "
        f"answer patterns; the 10 most common answer patterns cover {s['top10_answer_pattern_share']:.0%} of records.", "",
        "## Sources", "", "| source | records | licence and provenance |", "| --- | ---: | --- |",
        f"| ours | {s['per_source'].get('ours', 0)} | `data/knowledge/*.jsonl`, written for this repository from "
        "textbook knowledge; the repository's licence |",
    ]
    if src:
        lines.append(f"| cmekg | {s['per_source'].get('cmekg', 0)} | CMeKG (Peking University) as packaged in "
                     f"`{src['package']}` {src['version']} on PyPI ({src['licence']}); pickle sha256 "
                     f"`{src['sha256'][:16]}…`; cleaned as in `{os.path.basename(paths['import'])}.md` |")
    lines += ["", "## Records per style", "", "| style | records |", "| --- | ---: |"]
    lines += [f"| {k} | {v} |" for k, v in s["per_style"].items()]
    lines += ["", "## Records per department (top 20)", "", "| department | records |", "| --- | ---: |"]
    lines += [f"| {k} | {v} |" for k, v in list(s["per_department"].items())[:20]]
    lines += ["", "## Lengths (characters)", "", f"instruction: {s['instruction_chars']}", "",
              f"output: {s['output_chars']}", "", f"![lengths]({os.path.basename(paths['lengths'])})", "",
              "## Known limits", "",
              "- cMeKG values are cleaned by rules, not reviewed one by one: symptom lists still hold some signs, "
              "findings and vague words; cMeKG lists are not ordered by typicality (ours are).",
              "- cMeKG rarely has treatment fields (药物治疗 on ~270 diseases), so most cMeKG vignettes stop at the "
              "department and the tests; drug products from cMeKG are not imported (unreliable fields).",
              "- Answers are templated prose; they state KB facts only and are no substitute for a doctor.",
              "- Vignette/triage symptom sets single the disease out within this KB only, not in medicine at large."]
    return "\n".join(lines) + "\n"
