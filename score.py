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
from pathlib import Path

from utils.cli import UserError
from utils.data.records import load_records, read_results
from utils.eval import metrics
from utils.model.runinfo import file_sha256, run_config, write_json

logger = logging.getLogger("score")


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


def write_report(output_dir: Path, name: str, result: dict) -> None:
    """report.md (tables) and metrics.png (scores by tokenization, answer lengths)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
            f"Answer length (characters): mean {a['mean']:.1f}, median {a['median']:.0f}, min {a['min']}, max {a['max']}, empty {a['empty']}."
        )
        if "reference_length_chars" in result:
            lines.append(f"Reference length: mean {result['reference_length_chars']['mean']:.1f}.")
        lines.append("")
    if "fact_coverage" in result:
        fc = result["fact_coverage"]
        lines += [
            f"Fact coverage: {fc['mean']:.1%} of the source facts' values appear verbatim in the answers ({fc['records']} records).",
            "",
        ]
    if "reference_loss" in result:
        rl = result["reference_loss"]
        lines += [
            f"Reference-answer loss {rl['loss']:.4f}, perplexity {rl['perplexity']:.2f} ({rl['tokens']} answer tokens, {rl['examples']} records).",
            "",
        ]

    panels = [
        p
        for p in ("scores", "lengths")
        if (p == "scores" and "char" in result) or (p == "lengths" and "answer_length_chars" in result)
    ]
    if panels:
        fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
        for ax, panel in zip(axes[0], panels):
            if panel == "scores":
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
            else:
                a = result["answer_length_chars"]
                labels = ["answer"] + (["reference"] if "reference_length_chars" in result else [])
                means = [a["mean"]] + (
                    [result["reference_length_chars"]["mean"]] if "reference_length_chars" in result else []
                )
                ax.bar(labels, means, color=["tab:blue", "tab:gray"][: len(labels)])
                ax.set_ylabel("mean length (characters)")
                ax.set_title("length")
        fig.suptitle(name)
        fig.tight_layout()
        fig.savefig(output_dir / "metrics.png", dpi=100)
        plt.close(fig)
        lines += ["![metrics](metrics.png)", ""]
    (output_dir / "report.md").write_text("\n".join(lines), encoding="utf-8")


def main(
    predictions_file: str = "",  # infer.py --output_file results (JSON Lines: output = reference, model_output = answer)
    output_dir: str = "./eval",  # metrics.json, report.md, metrics.png
    name: str = "",  # label in the report (default: the predictions file's name)
    data_path: str = "",  # records whose reference answers get a loss/perplexity ("" = no model is loaded)
    base_model: str = "",  # with data_path: HF model folder or hub id; "" = the embedded tiny LLaMA
    lora_weights: str = "",  # with data_path: adapter folder ("" = the base alone)
    prompt_template: str = "",  # with data_path: templates/NAME.json or chat; "" = the adapter's run_config.json, else med_template
    cutoff_len: int = 512,  # with data_path: longest example in tokens, as in finetune.py
    batch_size: int = 8,  # with data_path: examples per forward pass
    load_8bit: bool = False,  # with data_path: base weights in int8
    load_4bit: bool = False,  # with data_path: base weights in NF4
    precision: str = "auto",  # with data_path: auto | bf16 | fp16 | fp32
    trust_remote_code: bool = False,  # with data_path: run model code shipped with the checkpoint
):
    flags = dict(locals())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if not predictions_file and not data_path:
        raise UserError(
            "nothing to evaluate: pass --predictions_file (infer.py results) and/or --data_path (reference loss)"
        )
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    result: dict = {}
    inputs = {}

    if predictions_file:
        records = read_results(predictions_file).records
        result.update(score_predictions(records))
        inputs["predictions_file"] = {
            "path": str(Path(predictions_file).resolve()),
            "sha256": file_sha256(predictions_file),
        }
        logger.info(
            "%s: %d answers scored (%d with a reference)", predictions_file, len(records), result["with_reference"]
        )

    if data_path:
        from utils.data.prompter import make_prompter
        from utils.model import adapters, loading

        refs = load_records(data_path).records
        chosen = adapters.settings(
            lora_weights, base_model, prompt_template
        )  # defaults from the adapter's run_config.json
        tokenizer, model, resolved = loading.load_for_inference(
            chosen["base_model"],
            chosen["lora_weights"],
            bool(lora_weights),
            load_8bit,
            load_4bit,
            precision,
            trust_remote_code,
        )
        prompter = make_prompter(chosen["prompt_template"], chosen["system_prompt"])
        result["reference_loss"] = metrics.reference_loss(model, tokenizer, prompter, refs, cutoff_len, batch_size)
        inputs["data_path"] = {
            "path": str(Path(data_path).resolve()),
            "sha256": file_sha256(data_path),
            "base_model": resolved,
        }

    label = name or (Path(predictions_file).stem if predictions_file else Path(lora_weights or "base").name)
    write_json(out / "metrics.json", {**result, "config": run_config(flags, inputs=inputs)})
    write_report(out, label, result)
    for key in ("char", "word"):
        if key in result:
            m = result[key]
            print(
                f"{key:>4}: BLEU-4 {m['bleu4']:6.2f}  ROUGE-1 {m['rouge1']:.4f}  ROUGE-2 {m['rouge2']:.4f}  ROUGE-L {m['rougeL']:.4f}"
            )
    if "fact_coverage" in result:
        print(f"fact coverage: {result['fact_coverage']['mean']:.4f}")
    if "reference_loss" in result:
        print(
            f"reference loss {result['reference_loss']['loss']:.4f}  perplexity {result['reference_loss']['perplexity']:.2f}"
        )
    print(f"report: {out / 'report.md'}")
    return None


if __name__ == "__main__":
    from utils.cli import run

    run(main)
