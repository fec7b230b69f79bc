"""Training speed: HuaTuo's recipe vs finetune.py's defaults, same machine, same base, same examples.

(a) recipe: HuaTuo's finetune.py on today's libraries: shuffled micro-batches of 128 padded to
    the longest (DataCollatorForSeq2Seq, pad_to_multiple_of=8), LoRA r=8/alpha=16/dropout 0.05 on
    q_proj,v_proj, lr 3e-4, cutoff 256, loss on the answers only, one micro-batch per step.
(b) finetune.py with its defaults (only the data file, output folder, epochs/steps, val_set_size=0
    and wandb off are set, so both train on exactly the same examples).

Each runs in its own child process (clean peak memory); both are timed by HF Trainer's
train_runtime; "useful tokens" are the non-padding tokens of the examples trained on, the same
number for both. Both adapters are then scored on the same held-out records by one function.

    python bench/train_speed.py                                   # tiny base, 2000 examples, 1 epoch
    python bench/train_speed.py --num_examples 256                 # quick look
    python bench/train_speed.py --finetune_flags '{"packing": false, "micro_batch_size": 128}'
    python bench/train_speed.py --base_model /data/random-llama-7b --num_examples 2000   # on a GPU

Writes bench/out/train_speed.json and bench/out/train_speed.png.
"""

import json
import logging
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from utils.args import flag, help_text, parse  # noqa: E402 (after the path is set)
from utils.cli import UserError  # noqa: E402

logger = logging.getLogger("train_speed")

SHARED_DATA = REPO_ROOT.parent / "shared" / "huatuo" / "llama_data.json"
RECIPE = dict(
    micro_batch_size=128,
    batch_size=128,
    learning_rate=3e-4,
    cutoff_len=256,
    lora_r=8,
    lora_alpha=16,
    lora_dropout=0.05,
    lora_target_modules=["q_proj", "v_proj"],
)


def in_finetune_order(records: list[dict]) -> list[dict]:
    """The records in the order finetune.py trains from with val_set_size=0 (its seeded split shuffles them),
    so that optimizer step k holds the same examples in both runs."""
    from utils.data.records import split_validation

    return split_validation(records, 0)[0]


def default_data() -> str:
    return str(SHARED_DATA if SHARED_DATA.is_file() else REPO_ROOT / "data" / "llama_data.json")


# ----------------------------------------------------------------------------------------------
# measurements shared by both children


def peak_memory_mb() -> float:
    """Peak GPU memory allocated by torch when on a GPU, else the process's peak resident memory."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def heldout_loss(base_model: str, adapter_dir: str, heldout_file: str, precision: str) -> float:
    """Mean cross-entropy per answer token of the held-out records (prompt masked), eval mode."""
    from utils.data.prompter import Prompter
    from utils.data.records import load_records
    from utils.eval.loss import reference_loss
    from utils.model import loading

    tokenizer, model, _ = loading.load_tokenizer_and_model(base_model, adapter_dir, True, precision=precision)
    records = load_records(heldout_file).records
    return reference_loss(model, tokenizer, Prompter(), records, RECIPE["cutoff_len"], batch_size=16)["loss"]


# ----------------------------------------------------------------------------------------------
# children


def run_recipe(base_model: str, train_file: str, out_dir: Path, num_epochs: int, max_steps: int) -> dict:
    """(a) HuaTuo's recipe, re-implemented on today's libraries."""
    import torch
    import transformers
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model

    from utils.data.prompter import Prompter, tokenize_records
    from utils.data.records import load_records
    from utils.model import loading
    from utils.train.batching import padded_collator
    from utils.train.trainers import RetryingTrainer

    torch.manual_seed(42)
    base_model = loading.resolve_base_model(base_model)
    tokenizer = loading.load_tokenizer(base_model)
    examples, _ = tokenize_records(
        tokenizer, Prompter(), in_finetune_order(load_records(train_file).records), RECIPE["cutoff_len"]
    )
    model = loading.load_model(base_model, precision="auto")
    loading.sync_special_tokens(model, tokenizer)
    model.config.use_cache = False
    model = get_peft_model(
        model,
        LoraConfig(
            r=RECIPE["lora_r"],
            lora_alpha=RECIPE["lora_alpha"],
            lora_dropout=RECIPE["lora_dropout"],
            target_modules=RECIPE["lora_target_modules"],
            bias="none",
            task_type="CAUSAL_LM",
        ),
    )
    precision = loading.resolve_precision("auto")
    collate = padded_collator(tokenizer)
    # (tokens, positions) per collated batch; the loader collates one batch ahead, so only the first `steps` count
    counts = []

    def counting_collator(features):
        batch = collate(features)
        counts.append((int(batch["attention_mask"].sum()), batch["input_ids"].numel()))
        return batch

    args = transformers.TrainingArguments(
        output_dir=str(out_dir),
        per_device_train_batch_size=RECIPE["micro_batch_size"],
        gradient_accumulation_steps=1,
        num_train_epochs=num_epochs,
        max_steps=max_steps,
        learning_rate=RECIPE["learning_rate"],
        warmup_steps=0.1,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not torch.cuda.is_available(),
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        remove_unused_columns=False,
        seed=42,
        data_seed=42,
    )
    # shuffled, unsorted, seeded like finetune.py's sampler: step k holds the same examples on both sides
    trainer = RetryingTrainer(
        model=model, args=args, train_dataset=Dataset.from_list(examples), data_collator=counting_collator
    )
    result = trainer.train()
    peak = peak_memory_mb()
    trainer.save_model(str(out_dir))
    return {
        "train_runtime": result.metrics["train_runtime"],
        "train_loss": result.metrics["train_loss"],
        "steps": trainer.state.global_step,
        "tokens": sum(c[0] for c in counts[: trainer.state.global_step]),
        "positions": sum(c[1] for c in counts[: trainer.state.global_step]),
        "peak_memory_mb": peak,
        "base_model": base_model,
        "precision": precision,
    }


def replay_finetune_batches(base_model: str, train_file: str, config: dict, steps: int) -> dict:
    """Tokens and positions of the micro-batches finetune.py trained on (its sampler and packing are deterministic)."""
    from utils.data.prompter import Prompter, tokenize_records
    from utils.data.records import load_records
    from utils.model import loading
    from utils.train.batching import PackingCollator, micro_batches

    flags, resolved = config["flags"], config["resolved"]
    tokenizer = loading.load_tokenizer(base_model)
    records = in_finetune_order(load_records(train_file).records)
    examples, _ = tokenize_records(tokenizer, Prompter(flags["prompt_template_name"]), records, flags["cutoff_len"])
    lengths = [len(e["input_ids"]) for e in examples]
    micro, accumulation = resolved["micro_batch_size"], resolved["gradient_accumulation_steps"]
    packing = resolved["packing"]  # auto resolved
    batches = micro_batches(lengths, flags["batch_size"], micro, packing=packing, seed=flags["seed"])[
        : steps * accumulation
    ]
    collator = PackingCollator(tokenizer.pad_token_id, resolved["pack_len"] or 0)
    tokens = positions = 0
    for batch in batches:
        chunk = [lengths[i] for i in batch]
        tokens += sum(chunk)
        positions += collator.positions_of(chunk) if packing else len(chunk) * -(-max(chunk) // 8) * 8
    return {"tokens": tokens, "positions": positions}


def run_finetune(base_model: str, train_file: str, out_dir: Path, num_epochs: int, max_steps: int, flags: dict) -> dict:
    """(b) finetune.py with its defaults."""
    import finetune
    from utils.model import loading

    base_model = loading.resolve_base_model(base_model)
    finetune.train(
        base_model=base_model,
        data_path=train_file,
        output_dir=str(out_dir),
        num_epochs=num_epochs,
        max_steps=max_steps,
        val_set_size=0,
        wandb_project="",
        **flags,
    )
    peak = peak_memory_mb()
    metrics = json.loads((out_dir / "metrics.json").read_text())
    config = json.loads((out_dir / "run_config.json").read_text())
    counts = replay_finetune_batches(base_model, train_file, config, metrics["log_history"][-1]["step"])
    return {
        "train_runtime": metrics["train_runtime"],
        "train_loss": metrics["train_loss"],
        "steps": metrics["log_history"][-1]["step"],
        "tokens": counts["tokens"],
        "positions": counts["positions"],
        "peak_memory_mb": peak,
        "base_model": base_model,
        "precision": config["resolved"]["precision"],
    }


def child(which: str, base_model: str, out: str, num_epochs: int, max_steps: int):
    """One side, in its own process; inputs are the files the parent wrote into ``out``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    out_dir = Path(out) / which
    train_file, heldout_file = str(Path(out) / "train_examples.json"), str(Path(out) / "heldout_examples.json")
    cpu_start = time.process_time()
    if which == "recipe":
        result = run_recipe(base_model, train_file, out_dir, num_epochs, max_steps)
    else:
        flags = json.loads((Path(out) / "finetune_flags.json").read_text())
        result = run_finetune(base_model, train_file, out_dir, num_epochs, max_steps, flags)
    result["process_cpu_s"] = time.process_time() - cpu_start  # includes loading; for context on a shared CPU
    # both adapters scored alike: inference precision (fp32 on CPU), whatever each side trained in
    result["heldout_loss"] = heldout_loss(result["base_model"], str(out_dir), heldout_file, "auto")
    (Path(out) / f"{which}.json").write_text(json.dumps(result, indent=1))


# ----------------------------------------------------------------------------------------------
# parent


def chart(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    panels = [
        ("useful tokens/s", "useful_tokens_per_s"),
        ("padding fraction", "padding_fraction"),
        ("peak memory (MiB)", "peak_memory_mb"),
        ("held-out loss", "heldout_loss"),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2))
    for ax, (title, key) in zip(axes, panels):
        ax.bar(names, [results[n][key] for n in names], color=["#999999", "#2a7ab9"])
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


@dataclass
class SpeedArgs:
    """HuaTuo's recipe against finetune.py's defaults, on the same examples."""

    base_model: str = flag("", "HF model folder; '' = the embedded tiny LLaMA")
    data_path: str = flag("", "'' = ../shared/huatuo/llama_data.json when present, else data/llama_data.json")
    num_examples: int = flag(2000, "training examples (the same for both)")
    num_heldout: int = flag(200, "held-out records both adapters are scored on")
    num_epochs: int = flag(1, "epochs for both")
    max_steps: int = flag(-1, "optimizer steps for both (-1: num_epochs decides)")
    finetune_flags: dict | str = flag(
        "{}", "extra finetune.py flags for (b), e.g. '{\"packing\": false}' (one change at a time)"
    )
    out_dir: str = flag(str(REPO_ROOT / "bench" / "out"), "where the JSON, chart, adapters go")
    only: str = flag("", "recipe | finetune: run one side (development)")
    child_of: str = flag("", "internal: run one side in this process")


GROUPS = (SpeedArgs,)


def main(**flags):
    (args,) = parse(GROUPS, flags)
    base_model, data_path, num_examples, num_heldout = (
        args.base_model,
        args.data_path,
        args.num_examples,
        args.num_heldout,
    )
    num_epochs, max_steps, finetune_flags, out_dir, only = (
        args.num_epochs,
        args.max_steps,
        args.finetune_flags,
        args.out_dir,
        args.only,
    )
    if args.child_of:
        return child(args.child_of, base_model, out_dir, num_epochs, max_steps)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    from utils.model.tiny_base import ensure_tiny_base

    if not base_model:
        base_model = ensure_tiny_base()  # built once here, not by both children at the same time
    data_path = data_path or default_data()
    out, finetune_flags = Path(out_dir), as_flag_dict(finetune_flags)
    write_inputs(out, data_path, num_examples, num_heldout, finetune_flags=finetune_flags)
    results = {}
    for which in ("recipe", "finetune"):
        if not only or which == only:
            results[which] = run_child(which, base_model, out, num_epochs, max_steps)
    print(
        f"\n{num_examples} examples x {num_epochs} epoch(s), max_steps {max_steps}, base {base_model}, "
        f"finetune flags {json.dumps(finetune_flags)}"
    )
    print(table(results))
    summary = {
        "num_examples": num_examples,
        "num_heldout": num_heldout,
        "num_epochs": num_epochs,
        "max_steps": max_steps,
        "data_path": data_path,
        "finetune_flags": finetune_flags,
        "results": results,
    }
    if len(results) == 2:
        summary.update(ratios(results))
        chart(results, out / "train_speed.png")
    (out / "train_speed.json").write_text(json.dumps(summary, indent=1))
    logger.info("wrote %s", out / "train_speed.json")


def as_flag_dict(finetune_flags: dict | str) -> dict:
    """``--finetune_flags`` as a dict (fire hands over a dict when the text reads as a Python literal)."""
    if isinstance(finetune_flags, dict):
        return finetune_flags
    try:
        return json.loads(finetune_flags)
    except json.JSONDecodeError as err:
        raise UserError(f"--finetune_flags is not a JSON object: {err}") from None


def write_inputs(out: Path, data_path: str, num_examples: int, num_heldout: int, *, finetune_flags: dict) -> None:
    """The children's inputs in ``out``: a seeded pick of training and held-out records, finetune's flags."""
    import numpy as np

    from utils.data.records import load_records

    records = load_records(data_path).records
    if num_examples + num_heldout > len(records):
        raise UserError(
            f"{data_path}: {len(records)} records, fewer than --num_examples + --num_heldout = "
            f"{num_examples + num_heldout}"
        )
    order = np.random.default_rng(0).permutation(len(records))
    out.mkdir(parents=True, exist_ok=True)
    picks = {"train": order[:num_examples], "heldout": order[num_examples : num_examples + num_heldout]}
    for name, picked in picks.items():
        (out / f"{name}_examples.json").write_text(
            "".join(json.dumps(records[i], ensure_ascii=False) + "\n" for i in picked), encoding="utf-8"
        )
    (out / "finetune_flags.json").write_text(json.dumps(finetune_flags))


def run_child(which: str, base_model: str, out: Path, num_epochs: int, max_steps: int) -> dict:
    """One side in a child process (clean peak memory); its result with the derived rates."""
    logger.info("running (%s) in a child process ...", which)
    cmd = [sys.executable, __file__, "--child_of", which, "--base_model", base_model, "--out_dir", str(out)]
    cmd += ["--num_epochs", str(num_epochs), "--max_steps", str(max_steps)]
    subprocess.run(cmd, check=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    result = json.loads((out / f"{which}.json").read_text())
    result["useful_tokens_per_s"] = result["tokens"] / result["train_runtime"]
    result["padding_fraction"] = 1 - result["tokens"] / result["positions"]
    return result


def table(results: dict) -> str:
    """The two sides side by side, with finetune/recipe ratios."""
    lines = [f"{'':24s}" + "".join(f"{n:>14s}" for n in results) + ("         ratio" if len(results) == 2 else "")]
    for label, key in (
        ("useful tokens/s", "useful_tokens_per_s"),
        ("train runtime (s)", "train_runtime"),
        ("optimizer steps", "steps"),
        ("padding fraction", "padding_fraction"),
        ("peak memory (MiB)", "peak_memory_mb"),
        ("held-out loss", "heldout_loss"),
        ("process CPU (s)", "process_cpu_s"),
    ):
        values = [results[n][key] for n in results]
        line = f"{label:24s}" + "".join(f"{v:14.4f}" if isinstance(v, float) else f"{v:14d}" for v in values)
        if len(values) == 2 and values[0]:
            line += f"{values[1] / values[0]:14.3f}"
        lines.append(line)
    return "\n".join(lines)


def ratios(results: dict) -> dict:
    recipe, finetune = results["recipe"], results["finetune"]
    return {
        "useful_tokens_per_s_ratio": finetune["useful_tokens_per_s"] / recipe["useful_tokens_per_s"],
        "heldout_loss_change": finetune["heldout_loss"] / recipe["heldout_loss"] - 1,
        "peak_memory_ratio": finetune["peak_memory_mb"] / recipe["peak_memory_mb"],
    }


if __name__ == "__main__":
    from utils.cli import run

    run(main, help_text(GROUPS, __doc__))
