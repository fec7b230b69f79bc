"""HF ``TrainingArguments`` of a finetune.py run: from its flags and its memory plan."""

import torch
import transformers

from utils.args import DataArgs, TrainingArgs
from utils.train.planning import Layout, Placement

# DataLoader workers that collate the next micro-batches while the GPU runs (CPU runs collate in-process)
GPU_DATALOADER_WORKERS = 2


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


def training_arguments(
    training: TrainingArgs,
    data: DataArgs,
    *,
    plan: dict,
    placement: Placement,
    layout: Layout,
    has_val: bool,
    use_wandb: bool,
) -> OneGpuArguments:
    """HF TrainingArguments from the flags and the memory plan (micro-batch, accumulation).

    ``logging_nan_inf_filter`` is off: it reads every micro-step's loss on the host (trainer.py,
    ``torch.isnan(tr_loss_step) or torch.isinf(tr_loss_step)``), a sync per micro-step; a NaN loss
    shows in the logged average instead."""
    t, micro, precision = training, plan["micro_batch_size"], placement.precision
    on_gpu = torch.cuda.is_available()
    return OneGpuArguments(
        output_dir=t.output_dir,
        per_device_train_batch_size=micro,
        per_device_eval_batch_size=micro,
        gradient_accumulation_steps=plan["gradient_accumulation_steps"],
        num_train_epochs=t.num_epochs,
        max_steps=t.max_steps,
        learning_rate=t.learning_rate,
        warmup_steps=t.warmup_ratio,  # a float below 1 is a fraction of the total steps
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not on_gpu,
        logging_nan_inf_filter=False,
        dataloader_num_workers=GPU_DATALOADER_WORKERS if on_gpu else 0,
        dataloader_persistent_workers=on_gpu,
        logging_steps=t.logging_steps,
        logging_first_step=True,
        eval_strategy="steps" if has_val else "no",
        eval_steps=t.eval_steps if has_val else None,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        load_best_model_at_end=has_val and t.save_steps % t.eval_steps == 0,
        metric_for_best_model="eval_loss" if has_val else None,
        train_sampling_strategy="group_by_length" if data.group_by_length and not layout.packing else "random",
        ddp_find_unused_parameters=False if placement.world_size > 1 else None,
        remove_unused_columns=False,
        report_to=["wandb"] if use_wandb else [],
        run_name=t.wandb_run_name or None,
        seed=t.seed,
        data_seed=t.seed,
    )
