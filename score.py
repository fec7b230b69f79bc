"""Score answers written by ``infer.py --output_file``, and optionally the reference-answer loss.

Without a model: BLEU-4 (sacrebleu, 0-100) and ROUGE-1/2/L F1 (rouge-score, 0-1) of ``model_output``
against ``output``, at character level and at word level (jieba); answer length statistics; and,
when records carry the knowledge-base facts they were built from (``facts``), the fraction of fact
values each answer states verbatim. With ``--data_path``: loss and perplexity of that file's reference
answers under ``--base_model`` (+ ``--lora_weights``), masked as in training, token-weighted.
Writes ``metrics.json``, ``report.md`` and ``metrics.png`` into ``--output_dir``.

    python infer.py --lora_weights ./lora-llama-med --instruct_dir ./data/infer.json --output_file answers.jsonl
    python score.py --predictions_file answers.jsonl --output_dir ./eval-e1
    python score.py --predictions_file answers.jsonl --data_path ./data/llama_data.valid.json \\
        --lora_weights ./lora-llama-med --output_dir ./eval-e1
"""

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from utils.args import AdapterArgs, ModelArgs, PromptArgs, flag, help_text, parse
from utils.cli import UserError
from utils.data.records import load_records, read_results
from utils.eval import metrics
from utils.files import file_sha256, write_json
from utils.model.runinfo import run_config

logger = logging.getLogger("score")


@dataclass
class ScoreArgs:
    """What to score, and where the report goes."""

    predictions_file: str = flag(
        "", "infer.py --output_file results (JSON Lines: output = reference, model_output = answer)"
    )
    output_dir: str = flag("./eval", "where metrics.json, report.md and metrics.png go")
    name: str = flag("", "label in the report ('' = the predictions file's name)")
    data_path: str = flag(
        "", "records whose reference answers get a loss and perplexity under the model ('' = no model is loaded)"
    )
    cutoff_len: int = flag(512, "with --data_path: longest example in tokens, as in finetune.py")
    batch_size: int = flag(8, "with --data_path: examples per forward pass")


@dataclass
class ScoreAdapterArgs(AdapterArgs):
    """With --data_path: the LoRA adapter applied on the base (the model flags above are also --data_path's)."""

    lora_weights: str = flag("", "adapter folder or hub id ('' = the base alone)")


GROUPS = (ModelArgs, ScoreAdapterArgs, PromptArgs, ScoreArgs)


def score_predictions(records: list[dict]) -> dict:
    """Every model-free metric of a list of infer.py results."""
    answers = [r["model_output"] for r in records]
    scored = [r for r in records if isinstance(r.get("output"), str) and r["output"].strip()]
    result = {
        "records": len(records),
        "with_reference": len(scored),
        "answer_length_chars": metrics.length_stats(answers),
    }
    if scored:
        result["reference_length_chars"] = metrics.length_stats([r["output"] for r in scored])
        result.update(metrics.text_metrics([r["output"] for r in scored], [r["model_output"] for r in scored]))
    coverages = [metrics.fact_coverage(r["facts"], r["model_output"]) for r in records if r.get("facts")]
    coverages = [c for c in coverages if c is not None]
    if coverages:
        result["fact_coverage"] = {"mean": sum(coverages) / len(coverages), "records": len(coverages)}
    return result


def report_lines(name: str, result: dict) -> list[str]:
    """report.md's text: the score table, lengths, fact coverage, reference loss."""
    lines = [f"# Evaluation: {name}", ""]
    if "records" in result:
        lines += [f"{result['records']} answers, {result['with_reference']} with a reference.", ""]
    if "char" in result:
        lines += ["| tokenization | BLEU-4 | ROUGE-1 | ROUGE-2 | ROUGE-L |", "| --- | ---: | ---: | ---: | ---: |"]
        for tok in metrics.TOKENIZATIONS:
            m = result[tok]
            lines.append(f"| {tok} | {m['bleu4']:.2f} | {m['rouge1']:.4f} | {m['rouge2']:.4f} | {m['rougeL']:.4f} |")
        lines.append("")
    if "answer_length_chars" in result:
        a = result["answer_length_chars"]
        lines.append(
            f"Answer length (characters): mean {a['mean']:.1f}, median {a['median']:.0f}, min {a['min']}, max "
            f"{a['max']}, empty {a['empty']}."
        )
        if "reference_length_chars" in result:
            lines.append(f"Reference length: mean {result['reference_length_chars']['mean']:.1f}.")
        lines.append("")
    if "fact_coverage" in result:
        fc = result["fact_coverage"]
        lines += [
            f"Fact coverage: {fc['mean']:.1%} of the source facts' values appear verbatim in the answers "
            f"({fc['records']} records).",
            "",
        ]
    if "reference_loss" in result:
        rl = result["reference_loss"]
        lines += [
            f"Reference-answer loss {rl['loss']:.4f}, perplexity {rl['perplexity']:.2f} ({rl['tokens']} answer "
            f"tokens, {rl['examples']} records).",
            "",
        ]
    return lines


def plot_scores(ax, result: dict) -> None:
    """BLEU-4 (scaled to 0-1) and ROUGE bars, one colour per tokenization."""
    names = ["BLEU-4/100", "ROUGE-1", "ROUGE-2", "ROUGE-L"]
    width = 0.38
    for i, tok in enumerate(metrics.TOKENIZATIONS):
        m = result[tok]
        values = [m["bleu4"] / 100, m["rouge1"], m["rouge2"], m["rougeL"]]
        ax.bar([x + (i - 0.5) * width for x in range(len(names))], values, width, label=tok)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylim(0, 1)
    ax.set_title("scores against the references")
    ax.legend(title="tokens")


def plot_lengths(ax, result: dict) -> None:
    """Mean answer length, beside the mean reference length when there are references."""
    labels, means = ["answer"], [result["answer_length_chars"]["mean"]]
    if "reference_length_chars" in result:
        labels.append("reference")
        means.append(result["reference_length_chars"]["mean"])
    ax.bar(labels, means, color=["tab:blue", "tab:gray"][: len(labels)])
    ax.set_ylabel("mean length (characters)")
    ax.set_title("length")


def write_report(output_dir: Path, name: str, result: dict) -> None:
    """report.md (tables) and metrics.png (scores by tokenization, answer lengths)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = report_lines(name, result)
    panels = [plot for key, plot in (("char", plot_scores), ("answer_length_chars", plot_lengths)) if key in result]
    if panels:
        fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
        for ax, plot in zip(axes[0], panels):
            plot(ax, result)
        fig.suptitle(name)
        fig.tight_layout()
        fig.savefig(output_dir / "metrics.png", dpi=100)
        plt.close(fig)
        lines += ["![metrics](metrics.png)", ""]
    (output_dir / "report.md").write_text("\n".join(lines), encoding="utf-8")


def score_reference_loss(model, adapter, prompt, run: ScoreArgs) -> tuple[dict, dict]:
    """(reference loss of --data_path's answers, its input record): the model loaded as infer.py loads it."""
    from utils.eval.loss import reference_loss
    from utils.model.inference import load_for_inference

    refs = load_records(run.data_path).records
    loaded = load_for_inference(model, adapter, prompt)  # defaults from the adapter's run_config.json
    loss = reference_loss(loaded.model, loaded.tokenizer, loaded.prompter, refs, run.cutoff_len, run.batch_size)
    source = {
        "path": str(Path(run.data_path).resolve()),
        "sha256": file_sha256(run.data_path),
        "base_model": loaded.settings["base_model"],
    }
    return loss, source


def print_summary(result: dict, out: Path) -> None:
    for key in ("char", "word"):
        if key in result:
            m = result[key]
            print(
                f"{key:>4}: BLEU-4 {m['bleu4']:6.2f}  ROUGE-1 {m['rouge1']:.4f}  ROUGE-2 {m['rouge2']:.4f}  ROUGE-L "
                f"{m['rougeL']:.4f}"
            )
    if "fact_coverage" in result:
        print(f"fact coverage: {result['fact_coverage']['mean']:.4f}")
    if "reference_loss" in result:
        print(
            f"reference loss {result['reference_loss']['loss']:.4f}  perplexity "
            f"{result['reference_loss']['perplexity']:.2f}"
        )
    print(f"report: {out / 'report.md'}")


def main(**flags):
    groups = parse(GROUPS, flags)
    model, adapter, prompt, run = groups
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if not run.predictions_file and not run.data_path:
        raise UserError(
            "nothing to evaluate: pass --predictions_file (infer.py results) and/or --data_path (reference loss)"
        )
    out = Path(run.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    result: dict = {}
    inputs = {}
    if run.predictions_file:
        records = read_results(run.predictions_file).records
        result.update(score_predictions(records))
        path = run.predictions_file
        inputs["predictions_file"] = {"path": str(Path(path).resolve()), "sha256": file_sha256(path)}
        logger.info("%s: %d answers scored (%d with a reference)", path, len(records), result["with_reference"])
    if run.data_path:
        result["reference_loss"], inputs["data_path"] = score_reference_loss(model, adapter, prompt, run)

    label = run.name or (
        Path(run.predictions_file).stem if run.predictions_file else Path(adapter.lora_weights or "base").name
    )
    flat = {k: v for group in groups for k, v in asdict(group).items()}
    write_json(out / "metrics.json", {**result, "config": run_config(flat, inputs=inputs)})
    write_report(out, label, result)
    print_summary(result, out)


if __name__ == "__main__":
    from utils.cli import run

    run(main, help_text(GROUPS, __doc__))
