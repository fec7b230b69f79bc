"""Statistics and the data card of a built instruction set (build_dataset.py writes them beside the data).

``statistics_of`` counts records per split, source, style and department, the entity-masked
instruction and answer patterns (how repetitive the phrasing is once names and knowledge-base values
are hidden) and length summaries; ``plot_lengths`` draws the length histograms; ``data_card`` writes
the markdown card: counts, sources with licence and provenance, known limits.
"""

from __future__ import annotations

import json
import os
import re
import statistics
from collections import Counter

from utils.knowledge.schema import REPO_ROOT, Entry


def _lengths(values: list[int]) -> dict:
    if not values:
        return {}
    values = sorted(values)
    return {
        "min": values[0],
        "mean": round(statistics.mean(values), 1),
        "median": statistics.median(values),
        "p95": values[min(len(values) - 1, int(0.95 * len(values)))],
        "max": values[-1],
    }


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
        "per_style_split": {
            s: dict(sorted(Counter(r["style"] for r in records).items())) for s, records in by_split.items()
        },
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
        "# Data card: " + os.path.basename(paths["train"]),
        "",
        "Instruction data for LoRA fine-tuning (HuaTuo/BenTsao format: instruction, input, output), built by "
        "`build_dataset.py` from knowledge bases; every fact an answer states is a value of its entry "
        "(`facts`), and prevention (vaccines, prophylaxis) is never presented as treatment.",
        "",
        f"{s['records']} records ({', '.join(f'{k} {v}' for k, v in s['per_split'].items())}), from {s['diseases']} "
        f"diseases and {s['drugs']} drugs; split by entity. Masked patterns (entity names, KB values and the "
        f"patient's age/sex replaced): {s['instruction_patterns']} instruction patterns, {s['answer_patterns']} "
        f"answer patterns; the 10 most common answer patterns cover {s['top10_answer_pattern_share']:.0%} of records.",
        "",
        "## Sources",
        "",
        "| source | records | licence and provenance |",
        "| --- | ---: | --- |",
        f"| ours | {s['per_source'].get('ours', 0)} | `data/knowledge/*.jsonl`, written for this repository from "
        "textbook knowledge; the repository's licence |",
    ]
    if src:
        lines.append(
            f"| cmekg | {s['per_source'].get('cmekg', 0)} | CMeKG (Peking University) as packaged in "
            f"`{src['package']}` {src['version']} on PyPI ({src['licence']}); pickle sha256 "
            f"`{src['sha256'][:16]}…`; cleaned as in `{os.path.basename(paths['import'])}.md` |"
        )
    lines += ["", "## Records per style", "", "| style | records |", "| --- | ---: |"]
    lines += [f"| {k} | {v} |" for k, v in s["per_style"].items()]
    lines += ["", "## Records per department (top 20)", "", "| department | records |", "| --- | ---: |"]
    lines += [f"| {k} | {v} |" for k, v in list(s["per_department"].items())[:20]]
    lines += rules_section(meta)
    lines += [
        "",
        "## Lengths (characters)",
        "",
        f"instruction: {s['instruction_chars']}",
        "",
        f"output: {s['output_chars']}",
        "",
        f"![lengths]({os.path.basename(paths['lengths'])})",
        "",
        "## Known limits",
        "",
    ] + [f"- {limit}" for limit in KNOWN_LIMITS]
    return "\n".join(lines) + "\n"


# What is still known to be imperfect, and what was left out for want of a physician's call.
KNOWN_LIMITS = (
    "A physician has not reviewed this build. The developer's own review of 100 seeded records of this build "
    "(issue #19, `--review 100 --review_seed 29`) found 73 without defect, 11 with a medically wrong or unjustified "
    "claim, 4 unnatural, 0 unsafe, 13 with an import artefact (a record can have several); the issue's review of "
    "the build before it found 35% without defect. The wrong claims left come from cMeKG's own lists (肠系膜上动脉"
    "栓塞 listing 体重下降, 半侧颜面痉挛 listing 耳鸣 and 瘫痪 first, 食物中毒's tests), which rules cannot tell from "
    "right ones; the artefacts are fragments and near-twins (婴幼儿为呕吐, 肝脏肿大 / 肝大).",
    "cMeKG values are cleaned by rules (a positive symptom lexicon, type checks per field), not reviewed one by one.",
    "Typicality order of cMeKG values is estimated from the data (agreement between predicates, established "
    "terms, specificity), not from clinical frequency: a hallmark generic complaint (腹痛 of pancreatitis, 发热 of "
    "typhoid) can come after rarer findings.",
    "cMeKG drug and treatment values are dropped unless our curated drug list (drugs.jsonl: the drug's 适应症 names "
    "the disease) confirms them, so most cMeKG diseases have no treatment and their vignettes ask for diagnosis "
    "and tests only. Confirming the rest needs a physician.",
    "Red-flag rules cover the emergencies in the rules table; the calls left to a physician are listed in "
    "utils/knowledge/clinical.py (LEFT_OUT): 胸痛 alone, stroke signs without a sudden onset, a single seizure, "
    "bleeding "
    "whose amount is not given, obstetric severity. A disease outside the rules gets routine wording.",
    "Patients' sex and age follow the disease's name, department, 多发人群 and organ; where nothing narrows them, "
    "adults of both sexes are drawn, which can still be atypical (a 21-year-old with a vaginal wall prolapse).",
    "Vignette/triage findings single the disease out, or name the differential, within this knowledge base only, "
    "not in medicine at large. Some alias pairs are still separate entities (cMeKG's 心肌梗塞 beside our "
    "急性心肌梗死). Answers are templated prose that states knowledge-base facts only and is no substitute for a "
    "doctor.",
    "kb-mcq: distractors come from the same department or organ, so a value missing from an incomplete cMeKG list "
    "can still be true of the disease (a hand check of 30 test questions found 11 of 90 distractors arguably true).",
)


def _table(header: tuple[str, ...], rows) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    return lines + ["| " + " | ".join(str(c).replace("|", "/") for c in row) + " |" for row in rows]


def rules_section(meta: dict) -> list[str]:
    """What each rule removed or changed: the cMeKG import's cleaning rules, the builder's rules over candidates
    and over the records, the clinical rules, the exam's answer-blind scores, and the audit of the 12 causes."""
    lines = ["", "## Rules and what they changed", ""]
    imported = meta.get("cmekg_import")
    if imported:
        lines += [
            f"cMeKG import: {imported['diseases_imported']} of {imported['entities']} entities imported as "
            "diseases. Entities not imported:",
            "",
        ]
        lines += _table(("why", "entities"), imported["entities_skipped"].items())
        lines += ["", "Values changed or dropped, per cleaning rule:", ""]
        lines += _table(
            ("rule", "values", "meaning"),
            ((f"`{r}`", n, imported["rule_meaning"].get(r, "")) for r, n in imported["rules"].items()),
        )
    builder = meta.get("builder_rules")
    if builder:
        lines += ["", "Builder rules, candidates left out (before sampling the records):", ""]
        lines += _table(("rule", "candidates"), builder["candidates_left_out"].items())
        lines += ["", "Builder rules, records of this build:", ""]
        lines += _table(("rule", "records"), builder["records"].items())
    if meta.get("clinical_rules"):
        lines += ["", "## Clinical rules (utils/knowledge/clinical.py)", "", meta["clinical_rules"]]
    blind = (meta.get("exam") or {}).get("answer_blind")
    if blind:
        lines += [
            "",
            "## Exam (kb-mcq): answer-blind heuristics on the test split",
            "",
            "Accuracy of a guesser that never reads the question's medicine; chance is 25%.",
            "",
        ]
        lines += _table(("heuristic", "accuracy"), ((k, f"{v:.1%}") for k, v in blind.items()))
    if meta.get("audit"):
        lines += [
            "",
            "## The review's 12 causes, counted over the whole build (utils/knowledge/audit.py)",
            "",
            "Detectors written from the review's findings, independent of the rules that build the data; "
            "'before' is the build committed before issue #19 (`data/audit_before.json`).",
            "",
        ]
        lines += _table(("cause", "measure", "before", "this build"), audit_rows(meta["audit"], _audit_before()))
    return lines


def _shown(value) -> str:
    return ", ".join(f"{k} {v}" for k, v in value.items()) if isinstance(value, dict) else str(value)


def _audit_before() -> dict:
    path = os.path.join(REPO_ROOT, "data", "audit_before.json")
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def audit_rows(after: dict, before: dict) -> list[tuple[str, str, str, str]]:
    """(cause, measure, before, this build) for every metric of the audit, the cause named on its first row."""
    rows = []
    for cause, result in after.items():
        old = before.get(cause, {}).get("metrics", {})
        for i, (measure, value) in enumerate(result["metrics"].items()):
            rows.append(
                (result["title"] if i == 0 else "", measure.strip(), _shown(old.get(measure, "—")), _shown(value))
            )
    return rows
