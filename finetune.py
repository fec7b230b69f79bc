"""LoRA instruction tuning of a LLaMA-family base model on medical question-answer records.

The HuaTuo recipe on today's libraries: tokenizer + base (16-bit, or 8-/4-bit through
bitsandbytes) -> prompt-templated records, loss on the answers -> PEFT LoRA -> HF Trainer ->
adapter + run_config.json + metrics.json in ``output_dir``.

    # the embedded tiny LLaMA on the repository's data (CPU is fine)
    python finetune.py --num_epochs 1

    # HuaTuo's run: LLaMA-7B in 8-bit on the HuaTuo data
    python finetune.py --base_model decapoda-research/llama-7b-hf --load_8bit \\
        --data_path ./data/llama_data.json --output_dir ./lora-llama-med \\
        --prompt_template_name med_template --batch_size 128          # micro-batch: auto

    # a chat model through its own chat template (loss on the assistant turns; see docs/MODELS.md)
    python finetune.py --base_model Qwen/Qwen2.5-7B-Instruct --prompt_template_name chat \
        --system_prompt "你是一名医生。" --data_path ./data/llama_data.json --output_dir ./lora-qwen-med

    # will it fit? the memory plan for a 24 GB card, from config.json alone (no weights, no GPU needed)
    python finetune.py --base_model ./Meta-Llama-3-8B --load_4bit --gpu_memory 24GiB --dry_run

    # several GPUs (one process each); micro-batch and checkpointing are planned per GPU
    torchrun --nproc_per_node 4 finetune.py --base_model ... --data_path ...
    accelerate launch --config_file configs/accelerate/deepspeed_zero3.yaml --num_processes 4 finetune.py ...

    # killed or pre-empted? continue exactly from the latest complete checkpoint in output_dir
    python finetune.py ... --resume_from_checkpoint auto
"""

import logging
import math
import random
from pathlib import Path

import numpy as np
import torch
import transformers

from utils.cli import UserError
from utils.data.chat import stop_token_ids
from utils.data.prompter import DEFAULT_TEMPLATE, IGNORE_INDEX, make_prompter, tokenize_records
from utils.data.records import load_records, split_validation
from utils.model import adapters, loading, memory
from utils.model.runinfo import file_sha256, run_config, write_json
from utils.train import batching, checkpointing
from utils.train.callbacks import parameters_sharded
from utils.train.tracking import setup_wandb

logger = logging.getLogger("finetune")

REPO_ROOT = Path(__file__).resolve().parent
DEFAULT_DATA = str(REPO_ROOT / "data" / "llama_data.json")


def train(
    # model / data
    base_model: str = "",  # HF model folder or hub id; "" = the embedded tiny LLaMA (built on first use)
    data_path: str = DEFAULT_DATA,  # JSON Lines or JSON array of {instruction, input, output}
    val_data_path: str = "",  # validation records (e.g. data/llama_data.valid.json); "" = carve val_set_size out of data_path
    output_dir: str = "./lora-llama-med",  # adapter, checkpoints, run_config.json, metrics.json
    # training hyper-parameters
    batch_size: int = 128,  # examples per optimizer step, over all processes (the gradient never depends on the split below)
    micro_batch_size: int
    | str = "auto",  # examples per forward pass on one device; auto = the largest that fits the memory plan
    num_epochs: int = 10,  # passes over the training data
    learning_rate: float = 3e-4,  # peak learning rate (linear warm-up then linear decay)
    warmup_ratio: float = 0.1,  # fraction of the steps spent warming up
    cutoff_len: int = 256,  # longest example in tokens, EOS included; longer ones are cut
    val_set_size: int = 500,  # records held out for validation loss (0 = none; ignored with val_data_path)
    # LoRA
    lora_r: int = 8,  # rank of the update matrices
    lora_alpha: int = 16,  # scaling numerator (update scaled by alpha / r)
    lora_dropout: float = 0.05,  # dropout on the LoRA branch
    lora_target_modules: list[str] | str = "auto",  # linear layers to adapt; auto = by architecture; all-linear
    # LLM
    train_on_inputs: bool = False,  # False: loss only on the answer (+EOS), prompt tokens masked
    group_by_length: bool = False,  # batch examples of similar length together (less padding; packing supersedes it)
    packing: bool
    | str = "auto",  # padding-free packed micro-batches, loss only on answer tokens; auto = where examples stay apart (False = HuaTuo's padded batches)
    pack_len: int = 0,  # packed row length in tokens (0 = cutoff_len rounded up to a multiple of 8; flash: one flattened row)
    prompt_template_name: str = DEFAULT_TEMPLATE,  # templates/NAME.json, a path to one, or chat (tokenizer's template)
    system_prompt: str = "",  # chat template only: system message for records without one ("" = template default)
    # wandb
    wandb_project: str = "llama_med",  # "" turns wandb off; offline when no credentials
    wandb_run_name: str = "",  # run name shown in wandb
    wandb_watch: str = "",  # "" | "false" | "gradients" | "all"
    wandb_log_model: str = "",  # "" | "false" | "true": upload checkpoints as artifacts
    resume_from_checkpoint: str = None,  # checkpoint-N folder (exact resume), "auto" (latest complete one in output_dir), or an adapter folder (weights only)
    on_bad_record: str = "error",  # error | skip: a bad data record stops the run, or is left out and counted
    # loading / precision / memory
    load_8bit: bool = False,  # base weights in int8 (HuaTuo's setting; saves memory, slower)
    load_4bit: bool = False,  # base weights in NF4 (QLoRA)
    precision: str = "auto",  # auto | bf16 | fp16 | fp32; auto: bf16 on GPUs of capability >= 8.0, else fp16; CPU: bf16 if native, else fp32
    attn_implementation: str = "auto",  # auto (sdpa where the architecture has it, else eager) | sdpa | eager | flash_attention_2 (needs flash-attn; one flattened row per micro-batch)
    gradient_checkpointing: bool
    | str = "auto",  # recompute activations in backward (~30% slower, far less memory); auto = when the plan needs it
    gpu_memory: str = "",  # memory budget per GPU for the plan, e.g. 24GiB ("" = free memory of this GPU, or RAM on a CPU)
    dry_run: bool = False,  # print the memory plan (table, then one JSON line) and exit; needs only config.json (+ tokenizer)
    trust_remote_code: bool = False,  # run model code shipped with the checkpoint (only if you trust it)
    # schedule
    max_steps: int = -1,  # stop after this many optimizer steps (-1: num_epochs decides)
    seed: int = 42,  # seeds data order, LoRA init and dropout
    logging_steps: int = 8,  # log train loss every N steps
    eval_steps: int = 32,  # validation loss every N steps
    save_steps: int = 32,  # checkpoint every N steps
    save_total_limit: int = 5,  # keep at most N checkpoints
    # review
    sample_questions: int = 3,  # answer the first N questions of data/infer.json at every evaluation (0 = off)
    sample_max_new_tokens: int = 32,  # length of those sample answers, in tokens (greedy)
):
    flags = dict(locals())
    world_size, rank, local_rank = loading.world_info()
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format="%(asctime)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    device = loading.claim_device(world_size, local_rank)  # before anything touches CUDA (each rank its own GPU)
    sharded = parameters_sharded(None)  # FSDP / ZeRO-3, as accelerate launch configured them
    loading.check_quantization(load_8bit, load_4bit, sharded)
    if isinstance(lora_target_modules, str):
        lora_target_modules = [m.strip() for m in lora_target_modules.split(",") if m.strip()]
    precision = loading.resolve_precision(precision, training=True, load_8bit=load_8bit)
    attn_implementation = loading.resolve_attention(attn_implementation, check_installed=not dry_run)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)

    # ------------------------------------------------------------------------------------------
    # data: read and tokenized once, before the model takes the memory
    prompter = make_prompter(prompt_template_name, system_prompt)
    loaded, train_records, val_records = read_train_val(data_path, val_data_path, val_set_size, on_bad_record)
    base_model = loading.resolve_base_model(base_model)
    config = memory.load_config(
        base_model, trust_remote_code
    )  # read once: packing, the token estimate and the plan use it
    packing = loading.resolve_packing(packing, config, attn_implementation, pack_len)
    flatten = packing and attn_implementation.startswith("flash")
    pack_len = 0 if flatten else (pack_len if pack_len > 0 else math.ceil(cutoff_len / 8) * 8)
    tokenizer = load_tokenizer_for(base_model, trust_remote_code, dry_run)
    collator = batching.PackingCollator(tokenizer.pad_token_id if tokenizer else 0, pack_len, flatten=flatten)
    if tokenizer is None:  # a config-only folder (--dry_run): lengths estimated from the text
        train_examples, (lengths, answers), n_truncated = (
            None,
            estimate_lengths(prompter, train_records, config, base_model, cutoff_len),
            0,
        )
    else:
        train_examples, val_examples, lengths, answers, n_truncated, dropped = tokenize_train_val(
            tokenizer, prompter, train_records, val_records, cutoff_len, train_on_inputs
        )

    # ------------------------------------------------------------------------------------------
    # memory plan: micro-batch and checkpointing for this GPU (the global batch never changes)
    if batch_size % world_size:
        raise UserError(f"batch_size ({batch_size}) must be a multiple of the number of processes ({world_size})")
    plan = plan_memory(
        config,
        trust_remote_code,
        lora_target_modules,
        lora_r,
        lora_dropout,
        load_8bit,
        load_4bit,
        precision,
        lengths,
        answers,
        batch_size,
        world_size,
        micro_batch_size,
        gradient_checkpointing,
        gpu_memory,
        collator,
        packing,
        seed,
        sharded,
        estimated=tokenizer is None,
    )
    if dry_run:
        print_plan(plan)
        return
    micro_batch_size, accumulation, gradient_checkpointing = (
        plan["micro_batch_size"],
        plan["gradient_accumulation_steps"],
        plan["gradient_checkpointing"],
    )
    steps_per_epoch = math.ceil(len(train_examples) / batch_size)
    logger.info(
        "%d process(es) x micro batch %d x %d accumulation steps = %d examples per step; %d steps; precision %s; "
        "gradient checkpointing %s; %s, %.1f%% of the processed positions are padding; %s",
        world_size,
        micro_batch_size,
        accumulation,
        batch_size,
        max_steps if max_steps > 0 else steps_per_epoch * num_epochs,
        precision,
        "on" if gradient_checkpointing else "off",
        "packed" if packing else "padded",
        100 * plan["epoch"]["padding_fraction"],
        device if world_size == 1 else f"one GPU per process ({device} here)",
    )

    # ------------------------------------------------------------------------------------------
    # training arguments before the model: they set up accelerate's state, which is what makes
    # from_pretrained shard as it loads (DeepSpeed's zero.Init through transformers'
    # is_deepspeed_zero3_enabled, FSDP's rank-0 loading through is_fsdp_enabled)
    use_wandb = setup_wandb(wandb_project, wandb_run_name, wandb_watch, wandb_log_model, output_dir) and rank == 0
    has_val = len(val_examples) > 0
    args = training_arguments(flags, plan, precision, packing, has_val, use_wandb, world_size)
    sharded = parameters_sharded(args)

    # ------------------------------------------------------------------------------------------
    # base model + LoRA
    resume_from_checkpoint, adapter_only = checkpointing.resolve_resume(resume_from_checkpoint, output_dir)
    model, lora_target_modules = lora_model(
        flags,
        lora_target_modules,
        base_model,
        tokenizer,
        precision,
        attn_implementation,
        gradient_checkpointing,
        adapter_only,
        sharded,
    )

    # ------------------------------------------------------------------------------------------
    # trainer: packed micro-batches of equal tokens per process; token-weighted loss keeps the gradient
    from datasets import Dataset

    from utils.train.callbacks import review_callbacks

    if sharded and sample_questions:  # generating on rank 0 alone would need every rank's shard: a deadlock
        logger.warning("sample answers turned off: %s", sharded)
        sample_questions = 0
    trainer = batching.trainer_class(balanced=packing)(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(train_examples),
        eval_dataset=Dataset.from_list(val_examples) if has_val else None,
        data_collator=collator if packing else batching.seed_collator(tokenizer),
        # samples.jsonl (answers per evaluation, + a wandb Table) and loss.png in output_dir
        callbacks=review_callbacks(output_dir, tokenizer, prompter, sample_questions, sample_max_new_tokens, use_wandb),
    )
    if rank == 0:
        write_json(
            Path(output_dir) / "run_config.json",
            run_config(
                flags,
                resolved={
                    "base_model": base_model,
                    "precision": precision,
                    "attn_implementation": attn_implementation,
                    "micro_batch_size": micro_batch_size,
                    "gradient_accumulation_steps": accumulation,
                    "gradient_checkpointing": gradient_checkpointing,
                    "world_size": world_size,
                    "lora_target_modules": lora_target_modules,
                    "pad_token_id": tokenizer.pad_token_id,
                    "eos_token_id": tokenizer.eos_token_id,
                    "train_examples": len(train_examples),
                    "val_examples": len(val_examples),
                    "dropped_examples": dropped,
                    "truncated_examples": n_truncated,
                    "packing": packing,
                    "pack_len": pack_len if packing else None,
                    "memory_plan": plan,
                },
                data=loaded,
            ),
        )

    # ------------------------------------------------------------------------------------------
    # train, then save the adapter and the metrics
    stopper = checkpointing.install(trainer)  # completion markers on checkpoints; SIGTERM/SIGINT -> checkpoint, exit
    train_result = trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    stopper.exit_if_stopped(output_dir)
    metrics = {f"train_{k}" if not k.startswith("train_") else k: v for k, v in train_result.metrics.items()}
    if has_val:
        metrics.update(trainer.evaluate())
    checkpointing.save_adapter(trainer, output_dir)  # rank 0; checked against the in-memory LoRA, moved in atomically
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


# ----------------------------------------------------------------------------------------------
# the recipe's stages


def lora_model(
    flags: dict,
    targets,
    base_model: str,
    tokenizer,
    precision: str,
    attn_implementation: str,
    gradient_checkpointing: bool,
    adapter_only,
    sharded: str | None = None,
):
    """The base (16-bit, or 8-/4-bit) frozen, with a new LoRA, or the adapter being resumed (weights only)."""
    from peft import LoraConfig, get_peft_model

    model = loading.load_model(
        base_model,
        flags["load_8bit"],
        flags["load_4bit"],
        precision,
        trust_remote_code=flags["trust_remote_code"],
        attn_implementation=attn_implementation,
        sharded=sharded,
    )
    loading.sync_special_tokens(model, tokenizer)
    model.config.use_cache = False  # the KV cache is useless in training and costs memory
    model = loading.prepare_for_training(model, gradient_checkpointing)
    if adapter_only:  # HuaTuo's second mode: adapter weights without optimizer state
        model, targets = adapters.load_adapter(model, adapter_only, is_trainable=True), None
    else:
        targets = loading.resolve_lora_targets(model, targets)
        model = get_peft_model(
            model,
            LoraConfig(
                r=flags["lora_r"],
                lora_alpha=flags["lora_alpha"],
                target_modules=targets,
                lora_dropout=flags["lora_dropout"],
                bias="none",
                task_type="CAUSAL_LM",
            ),
        )
    trainable, total = model.get_nb_trainable_parameters()
    logger.info("trainable parameters: %d of %d (%.3f%%)", trainable, total, 100 * trainable / total)
    return model, targets


class OneGpuArguments(transformers.TrainingArguments):
    """TrainingArguments whose single process uses one GPU, however many are visible.

    Without a launcher the Trainer sets ``n_gpu`` to every visible GPU (transformers
    training_args.py ``_setup_devices``: ``self._n_gpu = torch.cuda.device_count()``) and then wraps
    16-bit models in ``nn.DataParallel`` (trainer.py, ``if args.n_gpu > 1``), which splits the flat
    ``shift_labels`` / ``cu_seq_lens`` of a packed batch out of step with its rows, and multiplies the
    micro-batch of 8-/4-bit models by ``n_gpu``. Several GPUs are used through torchrun/accelerate."""

    @property
    def n_gpu(self) -> int:
        return min(super().n_gpu, 1)


# DataLoader workers that collate the next micro-batches while the GPU runs (CPU runs collate in-process)
GPU_DATALOADER_WORKERS = 2


def training_arguments(
    flags: dict, plan: dict, precision: str, packing: bool, has_val: bool, use_wandb: bool, world_size: int
):
    """HF TrainingArguments from the flags and the memory plan (micro-batch, accumulation).

    ``logging_nan_inf_filter`` is off: it reads every micro-step's loss on the host (trainer.py,
    ``torch.isnan(tr_loss_step) or torch.isinf(tr_loss_step)``), a sync per micro-step; a NaN loss
    shows in the logged average instead."""
    f, micro = flags, plan["micro_batch_size"]
    on_gpu = torch.cuda.is_available()
    return OneGpuArguments(
        output_dir=f["output_dir"],
        per_device_train_batch_size=micro,
        per_device_eval_batch_size=micro,
        gradient_accumulation_steps=plan["gradient_accumulation_steps"],
        num_train_epochs=f["num_epochs"],
        max_steps=f["max_steps"],
        learning_rate=f["learning_rate"],
        warmup_steps=f["warmup_ratio"],  # a float below 1 is a fraction of the total steps
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not on_gpu,
        logging_nan_inf_filter=False,
        dataloader_num_workers=GPU_DATALOADER_WORKERS if on_gpu else 0,
        dataloader_persistent_workers=on_gpu,
        logging_steps=f["logging_steps"],
        logging_first_step=True,
        eval_strategy="steps" if has_val else "no",
        eval_steps=f["eval_steps"] if has_val else None,
        save_strategy="steps",
        save_steps=f["save_steps"],
        save_total_limit=f["save_total_limit"],
        load_best_model_at_end=has_val and f["save_steps"] % f["eval_steps"] == 0,
        metric_for_best_model="eval_loss" if has_val else None,
        train_sampling_strategy="group_by_length" if f["group_by_length"] and not packing else "random",
        ddp_find_unused_parameters=False if world_size > 1 else None,
        remove_unused_columns=False,
        report_to=["wandb"] if use_wandb else [],
        run_name=f["wandb_run_name"] or None,
        seed=f["seed"],
        data_seed=f["seed"],
    )


def run_figures(trainer, plan: dict) -> dict:
    """Out-of-memory retries, and on a GPU the plan against what the allocator saw (the plan's runtime part is outside it)."""
    figures = {"out_of_memory_retries": trainer.oom_events} if trainer.oom_events else {}
    if torch.cuda.is_available():
        figures["gpu_memory_gib"] = {
            "measured_max_allocated": round(torch.cuda.max_memory_allocated() / memory.GiB, 2),
            "planned_without_runtime": round(plan["peak_gib"] - plan["parts_gib"]["runtime"], 2),
        }
    return figures


def read_train_val(data_path: str, val_data_path: str, val_set_size: int, on_bad_record: str):
    """(info, train records, validation records): validation from its own file, or ``val_set_size``
    records carved out of ``data_path`` by a fixed seed."""
    loaded = load_records(data_path, on_bad_record=on_bad_record)  # bad data fails here, before any model is loaded
    records = loaded.records
    info = {
        "path": str(Path(data_path).resolve()),
        "sha256": file_sha256(data_path),
        "records": len(records),
        "skipped_records": len(loaded.skipped),
        "skipped": loaded.skipped[:100],
    }
    if val_data_path:
        val = load_records(val_data_path, on_bad_record=on_bad_record)
        info["validation"] = {
            "path": str(Path(val_data_path).resolve()),
            "sha256": file_sha256(val_data_path),
            "records": len(val.records),
        }
        logger.info(
            "%s: %d records; validation: %s, %d records", data_path, len(records), val_data_path, len(val.records)
        )
        return info, records, val.records
    train, val = split_validation(records, val_set_size, data_path)  # a fixed seed: the held-out records never move
    logger.info("%s: %d records (%d held out for validation)", data_path, len(records), val_set_size)
    return info, train, val


def load_tokenizer_for(base_model: str, trust_remote_code: bool, dry_run: bool):
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


def tokenize_train_val(tokenizer, prompter, train_records, val_records, cutoff_len, train_on_inputs):
    train_examples, dropped = tokenize_records(tokenizer, prompter, train_records, cutoff_len, train_on_inputs)
    val_examples, val_dropped = tokenize_records(tokenizer, prompter, val_records, cutoff_len, train_on_inputs)
    if dropped or val_dropped:
        logger.warning(
            "%d train / %d validation records left out: their prompt alone fills cutoff_len=%d",
            dropped,
            val_dropped,
            cutoff_len,
        )
    lengths = [len(e["input_ids"]) for e in train_examples]
    answers = [sum(1 for label in e["labels"] if label != IGNORE_INDEX) for e in train_examples]
    stops = set(stop_token_ids(tokenizer))  # eos, or a chat template's end of turn
    n_truncated = sum(1 for e in train_examples if e["input_ids"][-1] not in stops)
    logger.info(
        "train: %d examples, %d tokens (%d in answers), longest %d, %d cut at cutoff_len=%d; validation: %d examples",
        len(train_examples),
        sum(lengths),
        sum(answers),
        max(lengths),
        n_truncated,
        cutoff_len,
        len(val_examples),
    )
    return train_examples, val_examples, lengths, answers, n_truncated, dropped + val_dropped


def estimate_lengths(prompter, records, config, base_model: str, cutoff_len: int) -> tuple[list[int], list[int]]:
    """Token and answer lengths without a tokenizer (dry run of a config-only folder)."""
    try:
        prompts = prompter.prompts(None, records)  # a text template needs no tokenizer
    except (AttributeError, TypeError):
        raise UserError(
            f"the {prompter.template_name} template needs the model's tokenizer: put its tokenizer files beside {base_model}/config.json"
        ) from None
    vocab = config.get_text_config().vocab_size
    lengths, answers = [], []
    for prompt, record in zip(prompts, records):
        n_prompt, n_answer = memory.estimate_tokens(prompt, vocab), memory.estimate_tokens(record["output"], vocab) + 1
        lengths.append(min(cutoff_len, n_prompt + n_answer))
        answers.append(max(0, min(cutoff_len, n_prompt + n_answer) - n_prompt))
    return lengths, answers


def plan_memory(
    config,
    trust_remote_code,
    lora_targets,
    lora_r,
    lora_dropout,
    load_8bit,
    load_4bit,
    precision,
    lengths,
    answers,
    batch_size,
    world_size,
    micro_batch_size,
    gradient_checkpointing,
    gpu_memory,
    collator,
    packing,
    seed,
    sharded=None,
    estimated=False,
) -> dict:
    """The memory plan (utils/model/memory.py) of this run: model shape from config.json, the epoch's largest
    micro-batch for each candidate size, the device's budget."""
    if micro_batch_size != "auto" and (int(micro_batch_size) < 1 or batch_size % (int(micro_batch_size) * world_size)):
        raise UserError(
            f"batch_size ({batch_size}) must be a multiple of micro_batch_size ({micro_batch_size}) x processes ({world_size}); "
            "or leave --micro_batch_size auto"
        )
    if str(gradient_checkpointing).lower() in ("true", "false"):
        gradient_checkpointing = str(gradient_checkpointing).lower() == "true"
    shape = memory.model_shape(config, lora_targets, lora_r, trust_remote_code)
    setup = memory.TrainingSetup(
        "8bit" if load_8bit else "4bit" if load_4bit else "16bit", precision, lora_dropout, world_size, bool(sharded)
    )
    budget, source = memory.memory_budget(gpu_memory, world_size)

    def tokens_for(m: int) -> tuple[int, int]:
        figures = batching.epoch_figures(lengths, answers, batch_size, m, collator, world_size, packing, seed)
        return figures["largest_micro_batch_positions"], figures["largest_micro_batch_logit_tokens"]

    micro = micro_batch_size if micro_batch_size == "auto" else int(micro_batch_size)
    plan = memory.plan_micro_batch(
        shape, setup, batch_size // world_size, tokens_for, budget, source, micro, gradient_checkpointing
    )
    epoch = batching.epoch_figures(
        lengths, answers, batch_size, plan.micro_batch_size, collator, world_size, packing, seed
    )
    result = {
        **plan.summary(),
        "epoch": epoch,
        "model": {k: v for k, v in vars(shape).items() if k != "lora_input_widths"},
        "quantization": setup.quantization,
        "precision": precision,
        "world_size": world_size,
        "sharded": sharded,
        "examples": len(lengths),
        "tokens_estimated": estimated,
    }
    logger.info(
        "memory plan: micro-batch %d (up to %d tokens), checkpointing %s, est. peak %.1f GiB of %.1f GiB (%s): %s",
        plan.micro_batch_size,
        plan.tokens_per_micro_batch,
        "on" if plan.gradient_checkpointing else "off",
        plan.peak_gib,
        plan.budget / memory.GiB,
        source,
        plan.reason,
    )
    if not plan.fits:
        message = (
            f"memory plan: {plan.reason}; try --load_4bit, a smaller --cutoff_len, --micro_batch_size auto or more GPUs"
        )
        if torch.cuda.is_available() and world_size > 1:  # processes cannot retry out-of-memory steps on their own
            raise UserError(message)
        logger.warning("%s (a step that runs out of memory is redone in smaller pieces)", message)
    return result


def print_plan(plan: dict) -> None:
    """The dry run's output: a table, then the plan as one JSON object on the last line."""
    m, gib = plan["model"], memory.GiB
    parts = plan["parts_gib"]
    rows = [
        (
            "architecture",
            f"{m['model_type']}: {m['layers']} layers, hidden {m['hidden']}, MLP {m['intermediate']}, "
            f"heads {m['heads']}/{m['kv_heads']} kv, vocab {m['vocab']}",
        ),
        (
            "parameters",
            f"{m['params'] / 1e9:.2f} B base; LoRA r={m['lora_r']} on {','.join(m['lora_targets'])}: {m['lora_params'] / 1e6:.1f} M",
        ),
        ("quantization / precision", f"{plan['quantization']} weights, {plan['precision']} compute"),
        (
            "micro-batch",
            f"{plan['micro_batch_size']} examples, up to {plan['tokens_per_micro_batch']} tokens "
            f"({plan['logit_tokens_per_micro_batch']} projected); accumulation {plan['gradient_accumulation_steps']}",
        ),
        ("gradient checkpointing", f"{'on' if plan['gradient_checkpointing'] else 'off'} ({plan['reason']})"),
        (
            "activations per token",
            f"{plan['activation_bytes_per_token'] / 2**20:.2f} MiB"
            + (
                f" ({plan['int8_kept_bytes_per_token'] / 2**20:.2f} MiB int8 layer inputs kept by bitsandbytes)"
                if plan["int8_kept_bytes_per_token"]
                else ""
            ),
        ),
        *[
            (f"  {name}", f"{parts[name]:.2f} GiB")
            for name in ("weights", "lora_and_optimizer", "activations", "logits", "runtime")
        ],
        (
            "token counts",
            "estimated from the text (no tokenizer in the folder)"
            if plan["tokens_estimated"]
            else "from the tokenizer",
        ),
        (
            "estimated peak per GPU",
            f"{plan['peak_gib']:.2f} GiB of {plan['budget'] / gib:.1f} GiB ({plan['budget_source']}): "
            f"{'fits' if plan['fits'] else 'DOES NOT FIT'}",
        ),
    ]
    print(memory.format_plan(rows))
    print(memory.plan_json_line(plan))


if __name__ == "__main__":
    from utils.cli import run

    run(train)
