"""LoRA instruction tuning of a LLaMA-family base model on medical question-answer records.

The HuaTuo recipe on today's libraries: tokenizer + base (16-bit, or 8-/4-bit through
bitsandbytes) -> prompt-templated records, loss on the answers -> PEFT LoRA -> HF Trainer ->
adapter + run_config.json + metrics.json in ``output_dir``.

    # the embedded tiny LLaMA on the repository's data (CPU is fine)
    python finetune.py --num_epochs 1

    # the seed's run: LLaMA-7B in 8-bit on the HuaTuo data
    python finetune.py --base_model decapoda-research/llama-7b-hf --load_8bit \\
        --data_path ./data/llama_data.json --output_dir ./lora-llama-med \\
        --prompt_template_name med_template --micro_batch_size 128 --batch_size 128

    # a chat model through its own chat template (loss on the assistant turns; see docs/MODELS.md)
    python finetune.py --base_model Qwen/Qwen2.5-7B-Instruct --prompt_template_name chat \
        --system_prompt "你是一名医生。" --data_path ./data/llama_data.json --output_dir ./lora-qwen-med

    # several GPUs (one process each)
    torchrun --nproc_per_node 4 finetune.py --base_model ... --data_path ...
    accelerate launch --config_file configs/accelerate/deepspeed_zero3.yaml --num_processes 4 finetune.py ...

    # killed or pre-empted? continue exactly from the latest complete checkpoint in output_dir
    python finetune.py ... --resume_from_checkpoint auto
"""

import logging
import math
import os
import random
from pathlib import Path

import numpy as np
import torch

from utils import batching, checkpointing, modeling
from utils.chat import stop_token_ids
from utils.prompter import DEFAULT_TEMPLATE, IGNORE_INDEX, make_prompter, tokenize_records
from utils.records import load_records
from utils.runinfo import file_sha256, run_config, write_json
from utils.tracking import setup_wandb

logger = logging.getLogger("finetune")

REPO_ROOT = Path(__file__).resolve().parent
DEFAULT_DATA = str(REPO_ROOT / "data" / "llama_data.json")


def train(
    # model / data
    base_model: str = "",  # HF model folder or hub id; "" = the embedded tiny LLaMA (built on first use)
    data_path: str = DEFAULT_DATA,  # JSON Lines or JSON array of {instruction, input, output}
    output_dir: str = "./lora-llama-med",  # adapter, checkpoints, run_config.json, metrics.json
    # training hyper-parameters
    batch_size: int = 128,  # examples per optimizer step, over all processes
    micro_batch_size: int = 128,  # examples per forward pass on one device (packed: ~half the tokens the seed's padded 128 had)
    num_epochs: int = 10,  # passes over the training data
    learning_rate: float = 3e-4,  # peak learning rate (linear warm-up then linear decay)
    warmup_ratio: float = 0.1,  # fraction of the steps spent warming up
    cutoff_len: int = 256,  # longest example in tokens, EOS included; longer ones are cut
    val_set_size: int = 500,  # records held out for validation loss (0 = none)
    # LoRA
    lora_r: int = 8,  # rank of the update matrices
    lora_alpha: int = 16,  # scaling numerator (update scaled by alpha / r)
    lora_dropout: float = 0.05,  # dropout on the LoRA branch
    lora_target_modules: list[str] | str = "auto",  # linear layers to adapt; auto = by architecture; all-linear
    # LLM
    train_on_inputs: bool = False,  # False: loss only on the answer (+EOS), prompt tokens masked
    group_by_length: bool = False,  # batch examples of similar length together (less padding; packing supersedes it)
    packing: bool = True,  # padding-free packed micro-batches, loss only on answer tokens (False = the seed's padded batches)
    pack_len: int = 0,  # packed row length in tokens (0 = cutoff_len rounded up to a multiple of 8)
    prompt_template_name: str = DEFAULT_TEMPLATE,  # templates/NAME.json, a path to one, or chat (tokenizer's template)
    system_prompt: str = "",  # chat template only: system message for records without one ("" = template default)
    # wandb
    wandb_project: str = "llama_med",  # "" turns wandb off; offline when no credentials
    wandb_run_name: str = "",  # run name shown in wandb
    wandb_watch: str = "",  # "" | "false" | "gradients" | "all"
    wandb_log_model: str = "",  # "" | "false" | "true": upload checkpoints as artifacts
    resume_from_checkpoint: str = None,  # checkpoint-N folder (exact resume), "auto" (latest complete one in output_dir), or an adapter folder (weights only)
    on_bad_record: str = "error",  # error | skip: a bad data record stops the run, or is left out and counted
    # loading / precision
    load_8bit: bool = False,  # base weights in int8 (the seed's setting; saves memory, slower)
    load_4bit: bool = False,  # base weights in NF4 (QLoRA)
    precision: str = "auto",  # auto | bf16 | fp16 | fp32; auto: bf16/fp16 on GPU; CPU: bf16 if native, else fp32
    trust_remote_code: bool = False,  # run model code shipped with the checkpoint (only if you trust it)
    # schedule
    max_steps: int = -1,  # stop after this many optimizer steps (-1: num_epochs decides)
    seed: int = 42,  # seeds data order, LoRA init and dropout
    logging_steps: int = 8,  # log train loss every N steps
    eval_steps: int = 32,  # validation loss every N steps
    save_steps: int = 32,  # checkpoint every N steps
    save_total_limit: int = 5,  # keep at most N checkpoints
    gradient_checkpointing: bool = False,  # recompute activations in backward: less memory, ~30% slower
    # review
    sample_questions: int = 3,  # answer the first N questions of data/infer.json at every evaluation (0 = off)
    sample_max_new_tokens: int = 32,  # length of those sample answers, in tokens (greedy)
):
    flags = dict(locals())
    world_size, rank, _ = modeling.world_info()
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    if isinstance(lora_target_modules, str):
        lora_target_modules = [m.strip() for m in lora_target_modules.split(",") if m.strip()]
    lora_target_modules = list(lora_target_modules)
    if batch_size % (micro_batch_size * world_size):
        raise ValueError(
            f"batch_size ({batch_size}) must be a multiple of micro_batch_size ({micro_batch_size}) x processes ({world_size})"
        )
    gradient_accumulation_steps = batch_size // (micro_batch_size * world_size)
    precision = modeling.resolve_precision(precision, training=True)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)

    # ------------------------------------------------------------------------------------------
    # tokenizer, prompts and data: read and tokenized once, before the model takes the memory
    prompter = make_prompter(prompt_template_name, system_prompt)
    loaded = load_records(data_path, on_bad_record=on_bad_record)  # bad data fails here, before any model is loaded
    records = loaded.records
    base_model = modeling.resolve_base_model(base_model)
    tokenizer = modeling.load_tokenizer(base_model, trust_remote_code)
    logger.info("%s: %d records", data_path, len(records))
    if val_set_size >= len(records):
        raise ValueError(f"val_set_size ({val_set_size}) must be smaller than the {len(records)} records of {data_path}")
    order = np.random.default_rng(2023).permutation(len(records))  # the split does not move with --seed
    val_records = [records[i] for i in order[:val_set_size]]
    train_records = [records[i] for i in order[val_set_size:]]

    train_examples, dropped = tokenize_records(tokenizer, prompter, train_records, cutoff_len, train_on_inputs)
    val_examples, val_dropped = tokenize_records(tokenizer, prompter, val_records, cutoff_len, train_on_inputs)
    if dropped or val_dropped:
        logger.warning(
            "%d train / %d validation records left out: their prompt alone fills cutoff_len=%d", dropped, val_dropped, cutoff_len
        )
    lengths = [len(e["input_ids"]) for e in train_examples]
    stops = set(stop_token_ids(tokenizer))  # eos, or a chat template's end of turn
    n_truncated = sum(1 for e in train_examples if e["input_ids"][-1] not in stops)
    answer_tokens = sum(sum(1 for l in e["labels"] if l != IGNORE_INDEX) for e in train_examples)
    logger.info(
        "train: %d examples, %d tokens (%d in answers), longest %d, %d cut at cutoff_len=%d; validation: %d examples",
        len(train_examples), sum(lengths), answer_tokens, max(lengths), n_truncated, cutoff_len, len(val_examples),
    )  # fmt: skip
    steps_per_epoch = math.ceil(len(train_examples) / batch_size)
    total_steps = max_steps if max_steps > 0 else steps_per_epoch * num_epochs
    logger.info(
        "%d process(es) x micro batch %d x %d accumulation steps = %d examples per step; %d steps; precision %s",
        world_size, micro_batch_size, gradient_accumulation_steps, batch_size, total_steps, precision,
    )  # fmt: skip
    pack_len = pack_len if pack_len > 0 else math.ceil(cutoff_len / 8) * 8
    plan = batching.padding_plan(lengths, batch_size, micro_batch_size, packing, pack_len, seed)
    logger.info("batches: %s, %.1f%% of the processed positions are padding", "packed" if packing else "padded", 100 * plan["padding_fraction"])

    # ------------------------------------------------------------------------------------------
    # base model + LoRA
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    model = modeling.load_model(base_model, load_8bit, load_4bit, precision, trust_remote_code=trust_remote_code)
    modeling.sync_special_tokens(model, tokenizer)
    model.config.use_cache = False  # the KV cache is useless in training and costs memory
    if load_8bit or load_4bit:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    elif gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()

    resume_from_checkpoint, adapter_only = checkpointing.resolve_resume(resume_from_checkpoint, output_dir)
    if adapter_only:  # the seed's second mode: adapter weights without optimizer state
        model = modeling.load_adapter(model, adapter_only, is_trainable=True)
    else:
        lora_target_modules = modeling.resolve_lora_targets(model, lora_target_modules)
        lora_config = LoraConfig(
            r=lora_r,
            lora_alpha=lora_alpha,
            target_modules=lora_target_modules,
            lora_dropout=lora_dropout,
            bias="none",
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, lora_config)
    trainable, total = model.get_nb_trainable_parameters()
    logger.info("trainable parameters: %d of %d (%.3f%%)", trainable, total, 100 * trainable / total)

    # ------------------------------------------------------------------------------------------
    # trainer
    import transformers
    from datasets import Dataset

    from utils.callbacks import review_callbacks

    use_wandb = setup_wandb(wandb_project, wandb_run_name, wandb_watch, wandb_log_model, output_dir) and rank == 0
    has_val = len(val_examples) > 0
    args = transformers.TrainingArguments(
        output_dir=output_dir,
        per_device_train_batch_size=micro_batch_size,
        per_device_eval_batch_size=micro_batch_size,
        gradient_accumulation_steps=gradient_accumulation_steps,
        num_train_epochs=num_epochs,
        max_steps=max_steps,
        learning_rate=learning_rate,
        warmup_steps=warmup_ratio,  # a float below 1 is a fraction of the total steps
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not torch.cuda.is_available(),
        logging_steps=logging_steps,
        logging_first_step=True,
        eval_strategy="steps" if has_val else "no",
        eval_steps=eval_steps if has_val else None,
        save_strategy="steps",
        save_steps=save_steps,
        save_total_limit=save_total_limit,
        load_best_model_at_end=has_val and save_steps % eval_steps == 0,
        metric_for_best_model="eval_loss" if has_val else None,
        train_sampling_strategy="group_by_length" if group_by_length and not packing else "random",
        ddp_find_unused_parameters=False if world_size > 1 else None,
        remove_unused_columns=False,
        report_to=["wandb"] if use_wandb else [],
        run_name=wandb_run_name or None,
        seed=seed,
        data_seed=seed,
    )
    # packing: a step's examples are sorted by length and packed; token-weighted loss keeps the gradient the same
    trainer_class = batching.step_sorted_trainer_class() if packing else transformers.Trainer
    collator = batching.PackingCollator(tokenizer.pad_token_id, pack_len) if packing else batching.seed_collator(tokenizer)
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(train_examples),
        eval_dataset=Dataset.from_list(val_examples) if has_val else None,
        data_collator=collator,
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
                    "gradient_accumulation_steps": gradient_accumulation_steps,
                    "world_size": world_size,
                    "lora_target_modules": lora_target_modules,
                    "pad_token_id": tokenizer.pad_token_id,
                    "eos_token_id": tokenizer.eos_token_id,
                    "train_examples": len(train_examples),
                    "val_examples": len(val_examples),
                    "dropped_examples": dropped + val_dropped,
                    "truncated_examples": n_truncated,
                    "pack_len": pack_len if packing else None,
                    "epoch_padding": plan,
                },
                data={
                    "path": str(Path(data_path).resolve()), "sha256": file_sha256(data_path), "records": len(records),
                    "skipped_records": len(loaded.skipped), "skipped": loaded.skipped[:100],
                },  # fmt: skip
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
        write_json(Path(output_dir) / "metrics.json", {**metrics, "log_history": trainer.state.log_history})
        logger.info("adapter saved to %s; final metrics: %s", output_dir, {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)})



if __name__ == "__main__":
    from utils.cli import run

    run(train)
