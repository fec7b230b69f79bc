"""lm-evaluation-harness glue: our exam tasks, users' exam files, and the harness on a loaded model.

* ``kb-mcq``: the knowledge base's own exam (configs/lm_eval/kb_mcq.yaml, data/kb_mcq/, built by
  build_dataset.py), offline. A user's exam file (CMExam CSV, CMB JSON, ...) is checked row by row,
  converted to the same layout and run as the same task (:func:`exam_task`: one mechanism for both).
* ``medical-zh`` and any other lm-eval task need the hub; :func:`hub_reachable` says whether it can be
  reached (the offline switches first).
* :func:`run_tasks` hands an already-loaded model to the harness (``HFLM(pretrained=model)``), so it is
  loaded exactly as infer.py loads it; :func:`accuracies` reads the accuracy rows back.
"""

import json
import logging
import os
import re
import socket
from pathlib import Path
from urllib.parse import urlparse

from utils.data.records import DataError
from utils.files import REPO_ROOT

logger = logging.getLogger(__name__)

CONFIG_DIR = REPO_ROOT / "configs" / "lm_eval"
OFFLINE_TASKS = ("kb-mcq",)
HUB_DATA = {"medical-zh": "haonan-li/cmmlu, ceval/ceval-exam"}  # for the skip message
KB_MCQ_CHANCE = 0.25  # four options, answer letters balanced


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
            logger.warning(
                "%s: %d row(s) left out (named above), %d questions kept", path, len(problems), len(questions)
            )
    return tasks, report


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
