"""Score answers to open questions with an LLM judge on the CMCOQA dimensions (0-3 each).

完整性 (completeness), 深刻性 (depth) and 专业性 (professionalism), judged through any
OpenAI-compatible endpoint; the key is read from the environment variable named by
``--judge_api_key_env``. Unusable judge replies are asked again, then recorded as unscored (counted
in the summary, listed in judgments.jsonl); no answer is dropped. Writes ``judgments.jsonl``,
``judge_metrics.json``, ``judge_report.md`` and ``judge.png`` into ``--output_dir``.

    # 1. HuaTuo's open questions (fields question, ICD-10) -> an infer.py questions file
    python judge.py --questions_file ../shared/huatuo/question.json --output_dir ./judge-e1
    # 2. answer them
    python infer.py --lora_weights ./lora-llama-med --instruct_dir ./judge-e1/questions.jsonl \\
        --output_file ./judge-e1/answers.jsonl
    # 3. judge (OPENAI_API_KEY in the environment)
    python judge.py --predictions_file ./judge-e1/answers.jsonl --output_dir ./judge-e1 \\
        --judge_base_url https://api.openai.com/v1 --judge_model gpt-4o
"""

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from utils.args import flag, help_text, parse
from utils.cli import UserError
from utils.data.records import DataError, load_records, read_results
from utils.eval import judge
from utils.files import file_sha256, write_json
from utils.model.runinfo import run_config

logger = logging.getLogger("judge")


def read_questions(path: str, question_field: str) -> list[dict]:
    """Open-question records (JSON array or JSON Lines) with a non-empty string ``question_field``."""

    def check(item) -> str | None:
        if not isinstance(item, dict):
            return "record: expected a JSON object"
        value = item.get(question_field)
        if not isinstance(value, str) or not value.strip():
            return f"field '{question_field}': missing, empty or not a string"
        return None

    records = load_records(path, check=check).records  # same reader as training data: file:line:field errors
    return [
        {"instruction": r[question_field], "input": "", **{k: v for k, v in r.items() if k != question_field}}
        for r in records
    ]


def write_report(out: Path, summary: dict, judge_model: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = [
        f"# LLM judge ({judge_model}): CMCOQA dimensions, 0-3 each",
        "",
        f"{summary['answers']} answers: {summary['scored']} scored, **{summary['unscored']} unscored** "
        f"(judge replies unusable after retries; see judgments.jsonl); {summary['judge_calls']} judge calls.",
        "",
    ]
    if "mean" in summary:
        lines += ["| 完整性 | 深刻性 | 专业性 | 总分 (0-9) |", "| ---: | ---: | ---: | ---: |"]
        lines += ["| " + " | ".join(f"{summary['mean'][k]:.2f}" for k in (*judge.DIMENSIONS, "总分")) + " |", ""]
        fig, ax = plt.subplots(figsize=(5, 3.5))
        labels = ["completeness", "depth", "professionalism"]
        ax.bar(labels, [summary["mean"][d] for d in judge.DIMENSIONS], color="tab:green")
        ax.set_ylim(0, judge.MAX_SCORE)
        ax.set_ylabel("mean score (0-3)")
        ax.set_title(f"{summary['scored']} scored, {summary['unscored']} unscored")
        fig.tight_layout()
        fig.savefig(out / "judge.png", dpi=100)
        plt.close(fig)
        lines += ["![judge](judge.png)", ""]
    if summary.get("by_group"):
        lines += ["| group | scored | 完整性 | 深刻性 | 专业性 |", "| --- | ---: | ---: | ---: | ---: |"]
        for group, g in summary["by_group"].items():
            lines.append(f"| {group} | {g['scored']} | " + " | ".join(f"{g[d]:.2f}" for d in judge.DIMENSIONS) + " |")
        lines.append("")
    (out / "judge_report.md").write_text("\n".join(lines), encoding="utf-8")


@dataclass
class JudgeArgs:
    """What to judge, with which judge, and where the results go."""

    predictions_file: str = flag("", "infer.py results to judge (fields instruction, model_output)")
    questions_file: str = flag(
        "", "open questions (e.g. HuaTuo's question.json); alone: converted for infer.py, then stop"
    )
    output_dir: str = flag(
        "./judge", "questions.jsonl | judgments.jsonl, judge_metrics.json, judge_report.md, judge.png"
    )
    question_field: str = flag("question", "the field holding the question in --questions_file")
    group_field: str = flag("ICD-10", "records are also averaged per value of this field ('' = no groups)")
    judge_base_url: str = flag("https://api.openai.com/v1", "any OpenAI-compatible endpoint")
    judge_model: str = flag("gpt-4o", "the judge model's name at that endpoint")
    judge_api_key_env: str = flag(
        "OPENAI_API_KEY", "environment variable holding the key (never a flag: keeps it out of logs)"
    )
    judge_temperature: float = flag(0.0, "judge sampling temperature")
    judge_max_tokens: int = flag(300, "longest judge reply, in tokens")
    max_attempts: int = flag(3, "judge calls per answer before it is recorded as unscored (unusable replies)")
    timeout: float = flag(60.0, "seconds per judge HTTP request")
    max_retries: int = flag(5, "transport retries per call (429, 5xx, timeouts), with backoff")
    workers: int = flag(4, "answers judged concurrently")


GROUPS = (JudgeArgs,)


def write_questions(run: JudgeArgs, out: Path) -> None:
    """Questions only: written as infer.py input (instruction = the question, other fields kept)."""
    rows = read_questions(run.questions_file, run.question_field)
    path = out / "questions.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {len(rows)} questions to {path}; answer them with:")
    print(f"  python infer.py --instruct_dir {path} --output_file {out / 'answers.jsonl'} --lora_weights ...")


def read_answers(run: JudgeArgs) -> list[dict]:
    """infer.py's results (the one reader: file:line:field errors); every question of
    --questions_file, when given, must have an answer."""
    records = read_results(run.predictions_file).records
    if run.questions_file:
        answered = {r["instruction"] for r in records}
        asked = read_questions(run.questions_file, run.question_field)
        missing = [r["instruction"] for r in asked if r["instruction"] not in answered]
        if missing:
            raise DataError(
                f"{run.predictions_file}: {len(missing)} question(s) of {run.questions_file} have no answer, "
                f"e.g. {missing[0][:60]!r}"
            )
    return records


def judge_answers(run: JudgeArgs, records: list[dict]) -> list[dict]:
    """One judgment per record, scored or not, from the judge endpoint."""
    from utils.llm import make_client

    api_key = os.environ.get(run.judge_api_key_env, "")
    if not api_key:
        logger.warning("$%s is not set: calling %s without a key", run.judge_api_key_env, run.judge_base_url)
    client = make_client(run.judge_base_url, api_key=api_key or None, timeout=run.timeout, max_retries=run.max_retries)
    logger.info("judging %d answers with %s at %s", len(records), run.judge_model, run.judge_base_url)
    return judge.judge_all(
        client,
        run.judge_model,
        [(r["instruction"], r["model_output"]) for r in records],
        run.max_attempts,
        run.workers,
        temperature=run.judge_temperature,
        max_tokens=run.judge_max_tokens,
    )


def save(run: JudgeArgs, out: Path, records: list[dict], judgments: list[dict]) -> dict:
    """judgments.jsonl (every judgment, scored or not), judge_metrics.json and the report; the summary."""
    with (out / "judgments.jsonl").open("w", encoding="utf-8") as handle:
        for record, j in zip(records, judgments):
            row = {k: v for k, v in record.items() if k != "settings"}
            handle.write(json.dumps({**row, **j}, ensure_ascii=False) + "\n")
    field = run.group_field
    groups = [str(r.get(field, "")) for r in records] if field and any(field in r for r in records) else None
    summary = judge.summarize(judgments, groups)
    path = run.predictions_file
    config = run_config(
        asdict(run), inputs={"predictions_file": str(Path(path).resolve()), "sha256": file_sha256(path)}
    )
    write_json(out / "judge_metrics.json", {**summary, "config": config})
    write_report(out, summary, run.judge_model)
    return summary


def main(**flags):
    (run,) = parse(GROUPS, flags)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    out = Path(run.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not run.predictions_file and not run.questions_file:
        raise UserError("pass --questions_file (to prepare infer.py input) or --predictions_file (answers to judge)")
    if not run.predictions_file:
        write_questions(run, out)
        return
    records = read_answers(run)
    summary = save(run, out, records, judge_answers(run, records))
    if "mean" in summary:
        print("  ".join(f"{k} {v:.2f}" for k, v in summary["mean"].items()))
    print(
        f"{summary['scored']} scored, {summary['unscored']} unscored of {summary['answers']}; report: "
        f"{out / 'judge_report.md'}"
    )


if __name__ == "__main__":
    from utils.cli import run

    run(main, help_text(GROUPS, __doc__))
