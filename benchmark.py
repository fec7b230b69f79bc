"""Multiple-choice medical exams through lm-evaluation-harness: the base model, and the base with each adapter.

The accuracies Chinese medical model cards report (CMMLU's and C-Eval's medical subjects, CMExam,
CMB, MedQA-MCMLE) come from scoring each option's log-likelihood after "答案：". This script runs
EleutherAI's lm-evaluation-harness on our models, loaded by ``utils/model/loading.py`` exactly as
infer.py loads them (old peft adapters, weights-only reads, 8/4-bit, the embedded tiny base) and
handed to the harness as a ready model (``HFLM(pretrained=model, tokenizer=tokenizer)``; the glue is
``utils/eval/lm_eval_tasks.py``).

Task names (``--tasks``, comma-separated):
  kb-mcq      the knowledge base's own exam (data/kb_mcq/, built by build_dataset.py), offline
  medical-zh  CMMLU + C-Eval medical subjects (configs/lm_eval/medical_zh.yaml); needs the hub,
              and without it is skipped with one line
  any other lm-eval task or group name (e.g. cmmlu_clinical_knowledge, medqa_4options)
``--exam_file``: your own exam files (CMExam CSV, CMB JSON, MedQA-MCMLE JSON Lines, C-Eval/CMMLU CSV,
or any layout described by ``--exam_fields``), checked row by row and run through the kb-mcq task.

Writes into ``--output_dir``: ``<model>/results.json`` (the harness's results), ``benchmark.md`` and
``benchmark.html`` (one column per model, accuracy ± stderr per task), ``benchmark.png`` and
``benchmark.json`` (the numbers, the flags, skipped tasks and exam rows left out).

    python benchmark.py --tasks kb-mcq --output_dir ./benchmark              # the embedded tiny base
    python benchmark.py --base_model /models/llama-7b-hf --load_8bit \\
        --lora_weights "HuaTuo=./lora-llama-med,Alpaca=./alpaca-lora" --tasks kb-mcq,medical-zh
    python benchmark.py --lora_weights ./lora-llama-med --exam_file cmexam_test.csv --tasks ""
    python benchmark.py --exam_file my_exam.json --exam_fields "question=题干,options=选项,answer=答案"
"""

import gc
import json
import logging
import os
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from utils.args import AdapterArgs, ModelArgs, flag, help_text, parse
from utils.cli import UserError
from utils.eval.lm_eval_tasks import (
    CONFIG_DIR,
    HUB_DATA,
    KB_MCQ_CHANCE,
    OFFLINE_TASKS,
    accuracies,
    exam_task,
    hub_reachable,
    prepare_exam_files,
    run_tasks,
)
from utils.eval.tables import to_html, to_markdown

logger = logging.getLogger("benchmark")


@dataclass
class BenchmarkArgs:
    """Which models, which exams, where the results go."""

    lora_weights: str | list[str] = flag(
        "", "adapter folder, or 'name=folder,name=folder' (one column each; the base's flags above apply to all)"
    )
    with_base: bool = flag(True, "also score the base model without an adapter")
    base_name: str = flag("base", "the base model's column name")
    tasks: str | list[str] = flag(
        "kb-mcq", "comma-separated: kb-mcq, medical-zh, or lm-eval task/group names ('' = none)"
    )
    exam_file: str | list[str] = flag("", "comma-separated exam files (JSON, JSON Lines, CSV) scored like kb-mcq")
    exam_fields: str = flag(
        "", "--exam_file layout: 'question=Q,options=O,answer=A[,explanation=E]' or a preset; '' = recognised"
    )
    exam_subject: str = flag("医学", "--exam_file prompt: 以下是关于{subject}的单项选择题…")
    on_bad_row: str = flag("skip", "--exam_file rows that fail the checks: skip (named and counted) | error")
    output_dir: str = flag("./benchmark", "where results, benchmark.md/.html/.png/.json go")
    num_fewshot: int = flag(
        0, "examples in the prompt (kb-mcq: from its validation split; exam files: other rows of the file)"
    )
    limit: int = flag(0, "questions per task (0 = all; for quick checks only)")
    batch_size: int = flag(16, "sequences per forward pass")
    log_samples: bool = flag(False, "also write each question's log-likelihoods (<model>/samples_<task>.jsonl)")


GROUPS = (ModelArgs, BenchmarkArgs)


def as_list(value: str | list[str]) -> list[str]:
    """A comma-separated flag (Fire may already have split it) as its non-empty items."""
    items = value.split(",") if isinstance(value, str) else value
    return [item.strip() for item in items if item.strip()]


def parse_adapters(lora_weights: str | list[str]) -> list[tuple[str, str]]:
    """``"dir"`` or ``"name=dir,name=dir"`` -> [(name, dir)]; a bare dir is named after its folder."""
    pairs = []
    for item in as_list(lora_weights):
        name, sep, path = item.partition("=")
        name, path = (name.strip(), path.strip()) if sep else (Path(item.rstrip("/")).name, item)
        if not name or not path:
            raise UserError(f"--lora_weights: expected dir or name=dir, got {item!r}")
        pairs.append((name, path))
    return pairs


@dataclass
class Plan:
    """What the harness runs: task configs and names, chance levels, what was skipped and why."""

    specs: list = field(default_factory=list)
    hub_tasks: list[str] = field(default_factory=list)
    chance: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    exam_report: dict = field(default_factory=dict)


def plan_tasks(run: BenchmarkArgs, out: Path) -> Plan:
    """The tasks to run, offline unless one needs the hub (and then only when it can be reached)."""
    names = as_list(run.tasks)
    plan = Plan(hub_tasks=[t for t in names if t not in OFFLINE_TASKS])
    if plan.hub_tasks and not hub_reachable():
        for t in plan.hub_tasks:
            where = f" ({HUB_DATA[t]})" if t in HUB_DATA else ""
            plan.skipped[t] = f"needs the Hugging Face hub{where}, which cannot be reached"
            print(f"{t}: skipped: {plan.skipped[t]}", file=sys.stderr)
        plan.hub_tasks = []
    if not plan.hub_tasks:  # nothing may try the hub: set before datasets / huggingface_hub read them
        os.environ["HF_HUB_OFFLINE"] = os.environ["HF_DATASETS_OFFLINE"] = "1"
    if "kb-mcq" in names:
        plan.specs.append(exam_task())
        plan.chance["kb-mcq"] = KB_MCQ_CHANCE
    exam_specs, plan.exam_report = prepare_exam_files(
        as_list(run.exam_file), run.exam_fields, run.exam_subject, run.on_bad_row, out
    )
    plan.specs += exam_specs + plan.hub_tasks
    plan.chance.update({name: r["chance"] for name, r in plan.exam_report.items()})
    if not plan.specs:
        raise UserError("nothing to run: every task was skipped; pass --tasks kb-mcq or --exam_file FILE")
    return plan


def score_model(name: str, adapter: str, model: ModelArgs, run: BenchmarkArgs, plan: Plan, task_manager, out: Path):
    """(accuracy rows, the base's local folder) of one model: loaded as infer.py loads it, its
    results.json (and samples) written into ``out/<name>/``."""
    import torch
    from lm_eval.utils import handle_non_serializable

    from utils.model.inference import load_for_inference

    loaded = load_for_inference(model, AdapterArgs(lora_weights=adapter, use_lora=bool(adapter)))
    results = run_tasks(
        loaded.model,
        loaded.tokenizer,
        plan.specs,
        task_manager,
        run.num_fewshot,
        run.limit,
        run.batch_size,
        run.log_samples,
    )
    samples = results.pop("samples", None)
    folder = out / re.sub(r"[^\w.-]+", "_", name)
    folder.mkdir(parents=True, exist_ok=True)
    dump = lambda obj: json.dumps(obj, ensure_ascii=False, default=handle_non_serializable)
    (folder / "results.json").write_text(
        json.dumps(results, indent=2, ensure_ascii=False, default=handle_non_serializable), encoding="utf-8"
    )
    for task, rows in (samples or {}).items():
        (folder / f"samples_{task}.jsonl").write_text("".join(dump(r) + "\n" for r in rows), encoding="utf-8")
    base_folder = loaded.settings["base_model"]
    del loaded
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return accuracies(results), base_folder


# ----------------------------------------------------------------------------------------------
# reports


def write_reports(out: Path, table: dict[str, dict[str, dict]], chance: dict[str, float]) -> None:
    """benchmark.md / .html (tasks x models, accuracy % ± stderr) and benchmark.png (grouped bars)."""
    models = list(table)
    tasks = list(dict.fromkeys(t for rows in table.values() for t in rows))

    def cell(row: dict | None) -> str:
        if row is None:
            return "–"
        err = f" ± {100 * row['stderr']:.1f}" if row["stderr"] is not None else ""
        return f"{100 * row['acc']:.1f}{err}"

    header = ["task (questions)"] + models
    rows = [
        [f"{t} ({next((table[m][t]['n'] for m in models if t in table[m]), '?')})"]
        + [cell(table[m].get(t)) for m in models]
        for t in tasks
    ]
    note = "Accuracy in % ± standard error (lm-evaluation-harness, option log-likelihood after “答案：”).\n\n"
    (out / "benchmark.md").write_text(
        "# Benchmark\n\n" + note + to_markdown(header, rows) + "\n![accuracy](benchmark.png)\n", encoding="utf-8"
    )
    (out / "benchmark.html").write_text(to_html(header, rows, "Benchmark"), encoding="utf-8")

    plot_accuracy(out / "benchmark.png", table, tasks, chance)


def plot_accuracy(path: Path, table: dict[str, dict[str, dict]], tasks: list[str], chance: dict[str, float]) -> None:
    """Grouped bars: accuracy ± stderr per task and model, chance as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(table)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(tasks) * max(1, len(models)) ** 0.5 + 2), 4.2))
    width = 0.8 / max(1, len(models))
    for i, m in enumerate(models):
        xs = [j + (i - (len(models) - 1) / 2) * width for j, t in enumerate(tasks) if t in table[m]]
        ys = [100 * table[m][t]["acc"] for t in tasks if t in table[m]]
        errs = [100 * (table[m][t]["stderr"] or 0) for t in tasks if t in table[m]]
        ax.bar(xs, ys, width, yerr=errs, capsize=3, label=m)
    for j, t in enumerate(tasks):
        if t in chance:
            ax.hlines(100 * chance[t], j - 0.45, j + 0.45, colors="gray", linestyles="dashed")
    ax.set_xticks(
        range(len(tasks)), tasks, rotation=20 if len(tasks) > 3 else 0, ha="right" if len(tasks) > 3 else "center"
    )
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title("multiple-choice accuracy (dashed: chance)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------


def main(**flags):
    model, run = parse(GROUPS, flags)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if run.on_bad_row not in ("skip", "error"):
        raise UserError(f"--on_bad_row must be skip or error, got {run.on_bad_row!r}")
    out = Path(run.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    models = ([(run.base_name, "")] if run.with_base else []) + parse_adapters(run.lora_weights)
    if len({m for m, _ in models}) != len(models) or not models:
        raise UserError(f"models to score must be at least one, with distinct names; got {[m for m, _ in models]}")
    plan = plan_tasks(run, out)

    from lm_eval.tasks import TaskManager

    from utils.files import write_json
    from utils.model.runinfo import run_config

    task_manager = TaskManager(include_path=str(CONFIG_DIR), include_defaults=bool(plan.hub_tasks))
    table: dict[str, dict] = {}
    for i, (name, adapter) in enumerate(models, start=1):  # one model at a time
        shown = model.base_model or "the embedded tiny LLaMA"
        logger.info("[%d/%d] %s: %s%s", i, len(models), name, shown, f" + {adapter}" if adapter else "")
        table[name], resolved = score_model(name, adapter, model, run, plan, task_manager, out)
        for task, row in table[name].items():
            err = f" ± {row['stderr']:.4f}" if row["stderr"] is not None else ""
            print(f"{name}\t{task}\tacc {row['acc']:.4f}{err}\t({row['n']} questions)")

    write_reports(out, table, plan.chance)
    flat = {**asdict(model), **asdict(run)}
    summary = {
        "accuracy": table,
        "skipped_tasks": plan.skipped,
        "exam_files": plan.exam_report,
        "config": run_config(flat, models=dict(models), base_model=resolved),
    }
    write_json(out / "benchmark.json", summary)
    print(f"table: {out / 'benchmark.md'}, {out / 'benchmark.html'}; chart: {out / 'benchmark.png'}")


if __name__ == "__main__":
    from utils.cli import run

    run(main, help_text(GROUPS, __doc__))
