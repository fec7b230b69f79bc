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
from pathlib import Path

from utils.cli import UserError
from utils.data.records import DataError, load_records, read_results
from utils.eval import judge
from utils.model.runinfo import file_sha256, run_config, write_json

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


def main(
    predictions_file: str = "",  # infer.py results to judge (fields instruction, model_output)
    questions_file: str = "",  # open questions (e.g. HuaTuo's question.json); alone: convert for infer.py and stop
    output_dir: str = "./judge",  # questions.jsonl | judgments.jsonl, judge_metrics.json, judge_report.md, judge.png
    question_field: str = "question",  # field holding the question in --questions_file
    group_field: str = "ICD-10",  # records are also averaged per value of this field ("" = no groups)
    judge_base_url: str = "https://api.openai.com/v1",  # any OpenAI-compatible endpoint
    judge_model: str = "gpt-4o",  # judge model name at that endpoint
    judge_api_key_env: str = "OPENAI_API_KEY",  # environment variable holding the key (never a flag: keeps it out of logs)
    judge_temperature: float = 0.0,  # judge sampling temperature
    judge_max_tokens: int = 300,  # longest judge reply, in tokens
    max_attempts: int = 3,  # judge calls per answer before it is recorded as unscored (unusable replies)
    timeout: float = 60.0,  # seconds per judge HTTP request
    max_retries: int = 5,  # transport retries per call (429, 5xx, timeouts), with backoff
    workers: int = 4,  # answers judged concurrently
):
    flags = dict(locals())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not predictions_file and not questions_file:
        raise UserError("pass --questions_file (to prepare infer.py input) or --predictions_file (answers to judge)")

    # ------------------------------------------------------------------------------------------
    # questions only: write them as infer.py input (instruction = the question, other fields kept)
    if not predictions_file:
        rows = read_questions(questions_file, question_field)
        path = out / "questions.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        print(f"wrote {len(rows)} questions to {path}; answer them with:")
        print(f"  python infer.py --instruct_dir {path} --output_file {out / 'answers.jsonl'} --lora_weights ...")
        return None

    # ------------------------------------------------------------------------------------------
    # answers to judge (every question of --questions_file must have one, when given)
    records = read_results(predictions_file).records  # the one reader of infer.py results: file:line:field errors
    if questions_file:
        answered = {r["instruction"] for r in records}
        missing = [
            r["instruction"] for r in read_questions(questions_file, question_field) if r["instruction"] not in answered
        ]
        if missing:
            raise DataError(
                f"{predictions_file}: {len(missing)} question(s) of {questions_file} have no answer, e.g. {missing[0][:60]!r}"
            )

    from utils.llm import make_client

    api_key = os.environ.get(judge_api_key_env, "")
    if not api_key:
        logger.warning("$%s is not set: calling %s without a key", judge_api_key_env, judge_base_url)
    client = make_client(judge_base_url, api_key=api_key or None, timeout=timeout, max_retries=max_retries)
    logger.info("judging %d answers with %s at %s", len(records), judge_model, judge_base_url)
    judgments = judge.judge_all(
        client,
        judge_model,
        [(r["instruction"], r["model_output"]) for r in records],
        max_attempts,
        workers,
        temperature=judge_temperature,
        max_tokens=judge_max_tokens,
    )

    # ------------------------------------------------------------------------------------------
    # save every judgment (scored or not), the summary and the report
    with (out / "judgments.jsonl").open("w", encoding="utf-8") as handle:
        for record, j in zip(records, judgments):
            row = {k: v for k, v in record.items() if k != "settings"}
            handle.write(json.dumps({**row, **j}, ensure_ascii=False) + "\n")
    groups = (
        [str(r.get(group_field, "")) for r in records]
        if group_field and any(group_field in r for r in records)
        else None
    )
    summary = judge.summarize(judgments, groups)
    config = run_config(
        flags,
        inputs={"predictions_file": str(Path(predictions_file).resolve()), "sha256": file_sha256(predictions_file)},
    )
    write_json(out / "judge_metrics.json", {**summary, "config": config})
    write_report(out, summary, judge_model)
    if "mean" in summary:
        print("  ".join(f"{k} {v:.2f}" for k, v in summary["mean"].items()))
    print(
        f"{summary['scored']} scored, {summary['unscored']} unscored of {summary['answers']}; report: {out / 'judge_report.md'}"
    )
    return None


if __name__ == "__main__":
    from utils.cli import run

    run(main)
