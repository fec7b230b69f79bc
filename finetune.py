"""LoRA instruction tuning of a LLaMA-family base model on medical question-answer records.

The HuaTuo recipe on today's libraries: tokenizer + base (16-bit, or 8-/4-bit through
bitsandbytes) -> prompt-templated records, loss on the answers -> PEFT LoRA -> HF Trainer ->
adapter + run_config.json + metrics.json in ``output_dir``.

    # the embedded tiny LLaMA on the repository's data (CPU is fine)
    python finetune.py --num_epochs 1
    python finetune.py --config tiny-cpu                 # the same, as the preset quickstart.sh runs

    # a named run is a preset (configs/presets/*.yaml, flag: value); a flag given here wins over it
    python finetune.py --config huatuo-llama-7b-8bit --base_model /models/llama-7b-hf
    python finetune.py --config qwen2.5-7b-instruct-qlora-24gb --dry_run

    # HuaTuo's run: LLaMA-7B in 8-bit on the HuaTuo data
    python finetune.py --base_model decapoda-research/llama-7b-hf --load_8bit \\
        --data_path ./data/llama_data.json --output_dir ./lora-llama-med \\
        --prompt_template_name med_template --batch_size 128          # micro-batch: auto

    # a chat model through its own chat template (loss on the assistant turns; see docs/MODELS.md)
    python finetune.py --base_model Qwen/Qwen2.5-7B-Instruct --prompt_template_name chat \\
        --system_prompt "你是一名医生。" --data_path ./data/llama_data.json --output_dir ./lora-qwen-med

    # will it fit? the memory plan for a 24 GB card, from config.json alone (no weights, no GPU needed)
    python finetune.py --base_model ./Meta-Llama-3-8B --load_4bit --gpu_memory 24GiB --dry_run

    # several GPUs (one process each); micro-batch and checkpointing are planned per GPU
    torchrun --nproc_per_node 4 finetune.py --base_model ... --data_path ...
    accelerate launch --config_file configs/accelerate/deepspeed_zero3.yaml --num_processes 4 finetune.py ...

    # killed or pre-empted? continue exactly from the latest complete checkpoint in output_dir
    python finetune.py ... --resume_from_checkpoint auto

Every flag, with its meaning: python finetune.py --help
"""

import dataclasses
import logging
import random
from pathlib import Path

import numpy as np
import torch

from utils.args import (
    DataArgs,
    LoraArgs,
    ModelArgs,
    PromptArgs,
    TrainingArgs,
    as_flags,
    find_preset,
    flag,
    help_text,
    parse,
)
from utils.data.prompter import DEFAULT_TEMPLATE, make_prompter
from utils.data.records import load_records, split_validation
from utils.files import file_sha256, write_json
from utils.model import adapters, loading, memory
from utils.model.runinfo import run_config
from utils.train import checkpointing, planning
from utils.train.arguments import training_arguments
from utils.train.batching import padded_collator
from utils.train.callbacks import parameters_sharded, review_callbacks
from utils.train.examples import Examples, estimate_examples, tokenize_examples
from utils.train.planning import Layout, Placement
from utils.train.tracking import setup_wandb
from utils.train.trainers import BalancedTrainer, RetryingTrainer, run_figures

logger = logging.getLogger("finetune")


@dataclasses.dataclass
class BaseModelArgs(ModelArgs):
    """Which base model, and how it is loaded."""

    base_model: str = flag("", "HF model folder or hub id; '' = the embedded tiny LLaMA (built on first use)")


@dataclasses.dataclass
class TrainPromptArgs(PromptArgs):
    """The prompt the records are trained in (--prompt_template_name is the same flag)."""

    prompt_template: str = flag(
        DEFAULT_TEMPLATE, "templates/NAME.json, a path to one, or chat (the tokenizer's own chat template)"
    )
    system_prompt: str = flag(
        "", "chat template only: system message for records without one ('' = the template's default)"
    )


GROUPS = (BaseModelArgs, LoraArgs, DataArgs, TrainPromptArgs, TrainingArgs)


def train(**flags):
    """Fine-tune a LoRA adapter; ``flags`` are the command line's (every flag of GROUPS, ``config``)."""
    model_args, lora, data, prompt, training = parse(GROUPS, flags)
    placement = start(model_args, training)

    # -- data: read and tokenized once, before the model takes the memory ------------------------
    prompter = make_prompter(prompt.prompt_template, prompt.system_prompt)
    records = read_data(data)
    base_model = loading.resolve_base_model(model_args.base_model)
    config = memory.load_config(base_model, model_args.trust_remote_code)  # read once: layout, estimate, plan
    layout = planning.resolve_layout(data, config, placement.attn_implementation)
    tokenizer = load_tokenizer_for(base_model, model_args.trust_remote_code, dry_run=training.dry_run)
    examples = make_examples(tokenizer, prompter, records, data=data, config=config, base_model=base_model)

    # -- memory plan: micro-batch and checkpointing for this GPU (the global batch never changes) --
    plan = planning.plan_memory(
        config, examples, model=model_args, lora=lora, training=training, placement=placement, layout=layout
    )
    if training.dry_run:
        print(memory.plan_report(plan))
        return
    log_start(plan, training=training, placement=placement, layout=layout, examples=examples)

    # -- training arguments before the model: they set up accelerate's state, which is what makes
    # from_pretrained shard as it loads (DeepSpeed's zero.Init through transformers'
    # is_deepspeed_zero3_enabled, FSDP's rank-0 loading through is_fsdp_enabled)
    use_wandb = setup_wandb(training) and placement.rank == 0  # every rank sets wandb's environment
    args = training_arguments(
        training, data, plan=plan, placement=placement, layout=layout, has_val=bool(examples.val), use_wandb=use_wandb
    )
    placement = dataclasses.replace(placement, sharded=parameters_sharded(args))  # ZeRO-3 told by the arguments too

    # -- base model + LoRA, the trainer, the run's configuration beside its outputs ---------------
    resume, adapter_only = checkpointing.resolve_resume(training.resume_from_checkpoint, training.output_dir)
    model, targets = lora_model(
        base_model, tokenizer, model_args=model_args, lora=lora, placement=placement, plan=plan, resume=adapter_only
    )
    trainer = build_trainer(
        model,
        args,
        examples,
        tokenizer=tokenizer,
        prompter=prompter,
        layout=layout,
        training=training,
        placement=placement,
    )
    if placement.rank == 0:
        resolved = resolved_settings(
            base_model, tokenizer, placement=placement, layout=layout, plan=plan, examples=examples, targets=targets
        )
        groups = (model_args, lora, data, prompt, training)
        save_run_config(groups, resolved=resolved, records=records, preset=flags.get("config", ""))

    # -- train, then save the adapter and the metrics ---------------------------------------------
    train_and_save(trainer, resume=resume, plan=plan, output_dir=training.output_dir, rank=placement.rank)


# ----------------------------------------------------------------------------------------------
# the recipe's stages


def start(model: ModelArgs, training: TrainingArgs) -> Placement:
    """Logging, this process's GPU (claimed before anything touches CUDA), precision, attention, seeds."""
    world_size, rank, local_rank = loading.world_info()
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format="%(asctime)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    device = loading.claim_device(world_size, local_rank)  # each rank its own GPU
    sharded = parameters_sharded(None)  # FSDP / ZeRO-3, as accelerate launch configured them
    loading.check_quantization(model.load_8bit, model.load_4bit, sharded)
    precision = loading.resolve_precision(model.precision, training=True, load_8bit=model.load_8bit)
    attn_implementation = loading.resolve_attention(training.attn_implementation, check_installed=not training.dry_run)
    random.seed(training.seed)
    np.random.seed(training.seed)
    torch.manual_seed(training.seed)
    return Placement(world_size, rank, local_rank, device, precision, attn_implementation, sharded)


@dataclasses.dataclass
class Records:
    """The records trained and validated on, and what run_config.json says of their files."""

    train: list[dict]
    val: list[dict]
    info: dict


def read_data(data: DataArgs) -> Records:
    """Validation from its own file, or ``val_set_size`` records carved out of ``data_path`` by a fixed seed."""
    loaded = load_records(data.data_path, on_bad_record=data.on_bad_record)  # bad data fails before any model loads
    records = loaded.records
    info = {
        "path": str(Path(data.data_path).resolve()),
        "sha256": file_sha256(data.data_path),
        "records": len(records),
        "skipped_records": len(loaded.skipped),
        "skipped": loaded.skipped[:100],
    }
    if data.val_data_path:
        val = load_records(data.val_data_path, on_bad_record=data.on_bad_record).records
        info["validation"] = {
            "path": str(Path(data.val_data_path).resolve()),
            "sha256": file_sha256(data.val_data_path),
            "records": len(val),
        }
        logger.info(
            "%s: %d records; validation: %s, %d records", data.data_path, len(records), data.val_data_path, len(val)
        )
        return Records(records, val, info)
    train, val = split_validation(records, data.val_set_size, data.data_path)  # the held-out records never move
    logger.info("%s: %d records (%d held out for validation)", data.data_path, len(records), data.val_set_size)
    return Records(train, val, info)


def load_tokenizer_for(base_model: str, trust_remote_code: bool, *, dry_run: bool):
    """The base's tokenizer; in a dry run a folder with only config.json gives None (lengths are estimated)."""
    try:
        return loading.load_tokenizer(base_model, trust_remote_code)
    except (OSError, ValueError, TypeError) as err:  # FileNotFoundError is an OSError
        if not dry_run:
            raise
        logger.info(
            "no tokenizer beside %s (%s): token counts are estimated from the text", base_model, type(err).__name__
        )
        return None


def make_examples(tokenizer, prompter, records: Records, *, data: DataArgs, config, base_model: str) -> Examples:
    """Tokenized examples; without a tokenizer (a config-only folder, --dry_run) lengths estimated from the text."""
    if tokenizer is None:
        return estimate_examples(prompter, records.train, config, base_model, data.cutoff_len)
    return tokenize_examples(tokenizer, prompter, records.train, records.val, data.cutoff_len, data.train_on_inputs)


def log_start(plan: dict, *, training: TrainingArgs, placement: Placement, layout: Layout, examples: Examples) -> None:
    """The derived figures of the run, in one line."""
    steps = training.max_steps
    if steps <= 0:
        steps = -(-len(examples.train) // training.batch_size) * training.num_epochs
    logger.info(
        "%d process(es) x micro batch %d x %d accumulation steps = %d examples per step; %d steps; precision %s; "
        "gradient checkpointing %s; %s, %.1f%% of the processed positions are padding; %s",
        placement.world_size,
        plan["micro_batch_size"],
        plan["gradient_accumulation_steps"],
        training.batch_size,
        steps,
        placement.precision,
        "on" if plan["gradient_checkpointing"] else "off",
        "packed" if layout.packing else "padded",
        100 * plan["epoch"]["padding_fraction"],
        placement.device if placement.world_size == 1 else f"one GPU per process ({placement.device} here)",
    )


def lora_model(
    base_model: str,
    tokenizer,
    *,
    model_args: ModelArgs,
    lora: LoraArgs,
    placement: Placement,
    plan: dict,
    resume: str | None,
):
    """(model, LoRA targets): the base (16-bit, or 8-/4-bit) frozen, with a new LoRA, or the adapter
    folder ``resume`` (weights only; its targets are its own). Gradient checkpointing as planned."""
    from peft import LoraConfig, get_peft_model

    model = loading.load_model(
        base_model,
        model_args.load_8bit,
        model_args.load_4bit,
        placement.precision,
        trust_remote_code=model_args.trust_remote_code,
        attn_implementation=placement.attn_implementation,
        sharded=placement.sharded,
    )
    loading.sync_special_tokens(model, tokenizer)
    model.config.use_cache = False  # the KV cache is useless in training and costs memory
    model = loading.prepare_for_training(model, plan["gradient_checkpointing"])
    if resume:  # HuaTuo's second mode: adapter weights without optimizer state
        model, targets = adapters.load_adapter(model, resume, is_trainable=True), None
    else:
        targets = loading.resolve_lora_targets(model, lora.targets())
        config = LoraConfig(
            r=lora.lora_r,
            lora_alpha=lora.lora_alpha,
            target_modules=targets,
            lora_dropout=lora.lora_dropout,
            bias="none",
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, config)
    trainable, total = model.get_nb_trainable_parameters()
    logger.info("trainable parameters: %d of %d (%.3f%%)", trainable, total, 100 * trainable / total)
    return model, targets


def build_trainer(
    model,
    args,
    examples: Examples,
    *,
    tokenizer,
    prompter,
    layout: Layout,
    training: TrainingArgs,
    placement: Placement,
):
    """Packed micro-batches of equal tokens per process (a token-weighted loss keeps the gradient), or
    HuaTuo's padded ones; review callbacks write samples.jsonl (+ a wandb Table) and loss.png."""
    from datasets import Dataset

    samples = training.sample_questions
    if placement.sharded and samples:  # generating on rank 0 alone would need every rank's shard: a deadlock
        logger.warning("sample answers turned off: %s", placement.sharded)
        samples = 0
    trainer_class = BalancedTrainer if layout.packing else RetryingTrainer
    return trainer_class(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(examples.train),
        eval_dataset=Dataset.from_list(examples.val) if examples.val else None,
        data_collator=layout.collator(tokenizer.pad_token_id) if layout.packing else padded_collator(tokenizer),
        callbacks=review_callbacks(
            training.output_dir, tokenizer, prompter, samples, training.sample_max_new_tokens, "wandb" in args.report_to
        ),
    )


def resolved_settings(
    base_model: str, tokenizer, *, placement: Placement, layout: Layout, plan: dict, examples: Examples, targets
) -> dict:
    """What the flags resolved to (run_config.json's "resolved"): adapters and benchmarks read it back."""
    return {
        "base_model": base_model,
        "precision": placement.precision,
        "attn_implementation": placement.attn_implementation,
        "micro_batch_size": plan["micro_batch_size"],
        "gradient_accumulation_steps": plan["gradient_accumulation_steps"],
        "gradient_checkpointing": plan["gradient_checkpointing"],
        "world_size": placement.world_size,
        "lora_target_modules": targets,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "train_examples": len(examples.train),
        "val_examples": len(examples.val),
        "dropped_examples": examples.dropped,
        "truncated_examples": examples.truncated,
        "packing": layout.packing,
        "pack_len": layout.pack_len if layout.packing else None,
        "memory_plan": plan,
    }


def save_run_config(groups, *, resolved: dict, records: Records, preset: str) -> None:
    """run_config.json in the output folder: every flag (under HuaTuo's names), what they resolved to, the data."""
    flags = as_flags(*groups)
    flags["prompt_template_name"] = flags.pop("prompt_template")  # the name adapters.settings reads back
    output_dir = flags["output_dir"]
    extra = {"preset": str(find_preset(preset))} if preset else {}
    write_json(Path(output_dir) / "run_config.json", run_config(flags, resolved=resolved, data=records.info, **extra))


def train_and_save(trainer, *, resume: str | None, plan: dict, output_dir: str, rank: int) -> None:
    """Train (checkpoints carry completion markers; SIGTERM/SIGINT -> a checkpoint, then exit), evaluate,
    save the adapter (rank 0; checked against the in-memory LoRA, moved in atomically) and metrics.json."""
    stopper = checkpointing.install(trainer)
    result = trainer.train(resume_from_checkpoint=resume)
    stopper.exit_if_stopped(output_dir)
    metrics = {k if k.startswith("train_") else f"train_{k}": v for k, v in result.metrics.items()}
    if trainer.eval_dataset is not None:
        metrics.update(trainer.evaluate())
    checkpointing.save_adapter(trainer, output_dir)
    if rank == 0:
        write_json(
            Path(output_dir) / "metrics.json",
            {**metrics, **run_figures(trainer, plan), "log_history": trainer.state.log_history},
        )
        logger.info(
            "adapter saved to %s; final metrics: %s",
            output_dir,
            {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)},
        )


if __name__ == "__main__":
    from utils.cli import run

    run(train, help_text(GROUPS, __doc__))
