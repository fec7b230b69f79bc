"""Multiple-choice medical exams through lm-evaluation-harness: the base model, and the base with each adapter.

The accuracies Chinese medical model cards report (CMMLU's and C-Eval's medical subjects, CMExam,
CMB, MedQA-MCMLE) come from scoring each option's log-likelihood after "答案：". This script runs
EleutherAI's lm-evaluation-harness on our models, loaded by ``utils/model/loading.py`` exactly as
infer.py loads them (old peft adapters, weights-only reads, 8/4-bit, the embedded tiny base) and
handed to the harness as a ready model (``HFLM(pretrained=model, tokenizer=tokenizer)``).

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
import socket
import sys
from pathlib import Path
from urllib.parse import urlparse

from utils.cli import UserError
from utils.data.records import DataError

logger = logging.getLogger("benchmark")

REPO_ROOT = Path(__file__).resolve().parent
CONFIG_DIR = REPO_ROOT / "configs" / "lm_eval"
OFFLINE_TASKS = ("kb-mcq",)
HUB_DATA = {"medical-zh": "haonan-li/cmmlu, ceval/ceval-exam"}  # for the skip message


# ----------------------------------------------------------------------------------------------
# what to run


def parse_adapters(lora_weights: str) -> list[tuple[str, str]]:
    """``"dir"`` or ``"name=dir,name=dir"`` -> [(name, dir)]; a bare dir is named after its folder."""
    pairs = []
    for item in (i.strip() for i in lora_weights.split(",") if i.strip()):
        name, sep, path = item.partition("=")
        name, path = (name.strip(), path.strip()) if sep else (Path(item.rstrip("/")).name, item)
        if not name or not path:
            raise UserError(f"--lora_weights: expected dir or name=dir, got {item!r}")
        pairs.append((name, path))
    return pairs


def hub_reachable(timeout: float = 3.0) -> bool:
    """False when HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set or the hub's host does not answer."""
    if any(
        os.environ.get(v, "0").lower() not in ("", "0", "false", "no")
        for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    ):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def exam_task(name: str = "kb-mcq", test_file: Path | None = None, description: str = "") -> dict:
    """The kb-mcq task (configs/lm_eval/kb_mcq.yaml), or the same task reading a user's exam
    ``test_file``: one mechanism for both. Paths become absolute so it runs from any directory."""
    import yaml

    config = yaml.safe_load((CONFIG_DIR / "kb_mcq.yaml").read_text(encoding="utf-8"))
    files = {split: REPO_ROOT / path for split, path in config["dataset_kwargs"]["data_files"].items()}
    if test_file is not None:
        files = {"test": Path(test_file).resolve()}  # few-shot examples, if asked for, come from its other rows
        for key in ("validation_split", "fewshot_split", "fewshot_config"):
            config.pop(key, None)
    missing = [str(f) for f in files.values() if not f.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{', '.join(missing)}: exam file missing"
            + ("" if test_file else "; build it with: python build_dataset.py")
        )
    config["dataset_kwargs"]["data_files"] = {split: str(f) for split, f in files.items()}
    config["task"] = name
    if description:
        config["description"] = description
    return config


def prepare_exam_files(paths: list[str], fields: str, subject: str, on_bad_row: str, out: Path):
    """Each user exam file checked and converted to the kb-mcq layout -> (task configs, report)."""
    from utils.knowledge.exam import read_exam_file

    tasks, report = [], {}
    for path in paths:
        questions, problems = read_exam_file(path, fields or None)
        if problems and on_bad_row == "error":
            raise DataError(f"{problems[0]} ({len(problems)} bad row(s); --on_bad_row skip scores the others)")
        name = "exam-" + re.sub(r"[^\w.-]+", "_", Path(path).stem)
        prepared = out / "exams" / f"{name}.json"
        prepared.parent.mkdir(parents=True, exist_ok=True)
        prepared.write_text("".join(json.dumps(q, ensure_ascii=False) + "\n" for q in questions), encoding="utf-8")
        description = f"以下是关于{subject}的单项选择题，请直接给出正确答案的选项。\n\n"
        tasks.append(exam_task(name, prepared, description))
        report[name] = {
            "file": str(Path(path).resolve()),
            "questions": len(questions),
            "rows_left_out": problems,
            "chance": sum(1 / len(q["options"]) for q in questions) / len(questions),
        }
        if problems:
            print(
                f"{path}: {len(problems)} row(s) left out (named above), {len(questions)} questions kept",
                file=sys.stderr,
            )
    return tasks, report


# ----------------------------------------------------------------------------------------------
# running the harness


def run_tasks(
    model,
    tokenizer,
    tasks: list,
    task_manager,
    num_fewshot: int = 0,
    limit: int = 0,
    batch_size: int = 16,
    log_samples: bool = False,
) -> dict:
    """lm-eval's ``simple_evaluate`` on an already-loaded model; returns the harness's results dict."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    return simple_evaluate(
        model=lm,
        tasks=tasks,
        task_manager=task_manager,
        num_fewshot=num_fewshot or None,
        limit=limit or None,
        log_samples=log_samples,
    )


def accuracies(results: dict) -> dict[str, dict]:
    """task or group -> {acc, stderr, n} from the harness's results dict (stderr None where it has none)."""
    rows = {}
    for task, metrics in results["results"].items():
        if "acc,none" in metrics:
            stderr = metrics.get("acc_stderr,none")
            rows[task] = {
                "acc": float(metrics["acc,none"]),
                "stderr": float(stderr) if isinstance(stderr, float) else None,
                "n": metrics.get("sample_len"),
            }
    return rows


# ----------------------------------------------------------------------------------------------
# reports


def write_reports(out: Path, table: dict[str, dict[str, dict]], chance: dict[str, float]) -> None:
    """benchmark.md / .html (tasks x models, accuracy % ± stderr) and benchmark.png (grouped bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from compare import to_html, to_markdown

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
    fig.savefig(out / "benchmark.png", dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------


def main(
    base_model: str = "",  # HF model folder or hub id; "" = the embedded tiny LLaMA
    lora_weights: str = "",  # adapter folder, or "name=folder,name=folder" (one column each)
    with_base: bool = True,  # also score the base model without an adapter
    base_name: str = "base",  # the base model's column name
    tasks: str = "kb-mcq",  # comma-separated: kb-mcq, medical-zh, or lm-eval task/group names ("" = none)
    exam_file: str = "",  # comma-separated exam files (JSON, JSON Lines, CSV) scored like kb-mcq
    exam_fields: str = "",  # exam_file layout: "question=Q,options=O,answer=A[,explanation=E]" or a preset; "" = recognised
    exam_subject: str = "医学",  # exam_file prompt: "以下是关于{subject}的单项选择题…"
    on_bad_row: str = "skip",  # exam_file rows that fail the checks: skip (named and counted) | error
    output_dir: str = "./benchmark",  # results, benchmark.md/.html/.png/.json
    num_fewshot: int = 0,  # examples in the prompt (kb-mcq: from its validation split; exam files: other rows of the file)
    limit: int = 0,  # questions per task (0 = all; for quick checks only)
    batch_size: int = 16,  # sequences per forward pass
    log_samples: bool = False,  # also write each question's log-likelihoods (<model>/samples_<task>.jsonl)
    load_8bit: bool = False,  # base weights in int8
    load_4bit: bool = False,  # base weights in NF4
    precision: str = "auto",  # auto | bf16 | fp16 | fp32
    trust_remote_code: bool = False,  # run model code shipped with the checkpoint
):
    flags = dict(locals())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if on_bad_row not in ("skip", "error"):
        raise UserError(f"--on_bad_row must be skip or error, got {on_bad_row!r}")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = [t.strip() for t in (tasks.split(",") if isinstance(tasks, str) else tasks) if t.strip()]
    exam_files = [f.strip() for f in (exam_file.split(",") if isinstance(exam_file, str) else exam_file) if f.strip()]
    models = ([(base_name, "")] if with_base else []) + parse_adapters(lora_weights)
    if len({m for m, _ in models}) != len(models) or not models:
        raise UserError(f"models to score must be at least one, with distinct names; got {[m for m, _ in models]}")

    # ------------------------------------------------------------------ tasks (offline unless the hub is needed)
    hub_names = [t for t in names if t not in OFFLINE_TASKS]
    skipped = {}
    if hub_names and not hub_reachable():
        for t in hub_names:
            skipped[t] = (
                "needs the Hugging Face hub"
                + (f" ({HUB_DATA[t]})" if t in HUB_DATA else "")
                + ", which cannot be reached"
            )
            print(f"{t}: skipped: {skipped[t]}", file=sys.stderr)
        hub_names = []
    if not hub_names:  # nothing may try the hub: set before datasets / huggingface_hub read them
        os.environ["HF_HUB_OFFLINE"] = os.environ["HF_DATASETS_OFFLINE"] = "1"
    specs: list = []
    chance: dict[str, float] = {}
    if "kb-mcq" in names:
        specs.append(exam_task())
        chance["kb-mcq"] = 0.25  # four options, answer letters balanced
    exam_specs, exam_report = prepare_exam_files(exam_files, exam_fields, exam_subject, on_bad_row, out)
    specs += exam_specs + hub_names
    chance.update({name: r["chance"] for name, r in exam_report.items()})
    if not specs:
        raise UserError("nothing to run: every task was skipped; pass --tasks kb-mcq or --exam_file FILE")

    from lm_eval.tasks import TaskManager
    from lm_eval.utils import handle_non_serializable

    task_manager = TaskManager(include_path=str(CONFIG_DIR), include_defaults=bool(hub_names))

    # ------------------------------------------------------------------ one model at a time
    import torch

    from utils.model import loading
    from utils.model.runinfo import run_config, write_json

    table: dict[str, dict] = {}
    for i, (name, adapter) in enumerate(models, start=1):
        logger.info(
            "[%d/%d] %s: %s%s",
            i,
            len(models),
            name,
            base_model or "the embedded tiny LLaMA",
            f" + {adapter}" if adapter else "",
        )
        tokenizer, model, resolved = loading.load_for_inference(
            base_model, adapter, bool(adapter), load_8bit, load_4bit, precision, trust_remote_code
        )
        results = run_tasks(model, tokenizer, specs, task_manager, num_fewshot, limit, batch_size, log_samples)
        samples = results.pop("samples", None)
        folder = out / re.sub(r"[^\w.-]+", "_", name)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "results.json").write_text(
            json.dumps(results, indent=2, ensure_ascii=False, default=handle_non_serializable), encoding="utf-8"
        )
        for task, rows in (samples or {}).items():
            (folder / f"samples_{task}.jsonl").write_text(
                "".join(json.dumps(r, ensure_ascii=False, default=handle_non_serializable) + "\n" for r in rows),
                encoding="utf-8",
            )
        table[name] = accuracies(results)
        for task, row in table[name].items():
            err = f" ± {row['stderr']:.4f}" if row["stderr"] is not None else ""
            print(f"{name}\t{task}\tacc {row['acc']:.4f}{err}\t({row['n']} questions)")
        del model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    write_reports(out, table, chance)
    write_json(
        out / "benchmark.json",
        {
            "accuracy": table,
            "skipped_tasks": skipped,
            "exam_files": exam_report,
            "config": run_config(flags, models=dict(models), base_model=resolved),
        },
    )
    print(f"table: {out / 'benchmark.md'}, {out / 'benchmark.html'}; chart: {out / 'benchmark.png'}")
    return None


if __name__ == "__main__":
    from utils.cli import run

    run(main)
