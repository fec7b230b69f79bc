"""How a finetune.py run is laid out: the process's place (rank, device, precision), the batch layout
(packed or padded), and the memory plan that picks the micro-batch and gradient checkpointing.

The plan's arithmetic is ``utils/model/memory.py`` (from config.json alone); what it adds here is the
epoch's real micro-batches (``utils/train/batching.py``), whose largest sizes the activations."""

import logging
import math
from dataclasses import dataclass

import torch

from utils.args import DataArgs, LoraArgs, ModelArgs, TrainingArgs
from utils.cli import UserError
from utils.model import loading, memory
from utils.train import batching
from utils.train.examples import Examples

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Placement:
    """Where this process trains, and in what: resolved once at start-up."""

    world_size: int
    rank: int
    local_rank: int
    device: str
    precision: str  # bf16 | fp16 | fp32
    attn_implementation: str
    sharded: str | None  # why the parameters are sharded (FSDP / ZeRO-3 as accelerate configured them), or None


@dataclass(frozen=True)
class Layout:
    """How examples become micro-batches: packed rows (``pack_len`` tokens; 0 = one flattened row for
    flash attention) or HuaTuo's padded batches."""

    packing: bool
    flatten: bool
    pack_len: int

    def collator(self, pad_token_id: int) -> batching.PackingCollator:
        return batching.PackingCollator(pad_token_id, self.pack_len, flatten=self.flatten)


def resolve_layout(data: DataArgs, config, attn_implementation: str) -> Layout:
    """``--packing auto`` resolved for this model and attention; ``--pack_len 0`` = cutoff_len rounded up to 8."""
    packing = loading.resolve_packing(data.packing, config, attn_implementation, data.pack_len)
    flatten = packing and attn_implementation.startswith("flash")
    pack_len = 0 if flatten else (data.pack_len if data.pack_len > 0 else math.ceil(data.cutoff_len / 8) * 8)
    return Layout(packing, flatten, pack_len)


def check_batch_sizes(training: TrainingArgs, world_size: int) -> None:
    """The global batch splits evenly over processes (and over the given micro-batch)."""
    batch, micro = training.batch_size, training.micro_batch_size
    if batch % world_size:
        raise UserError(f"batch_size ({batch}) must be a multiple of the number of processes ({world_size})")
    if micro != "auto" and (micro < 1 or batch % (micro * world_size)):
        raise UserError(
            f"batch_size ({batch}) must be a multiple of micro_batch_size ({micro}) x processes ({world_size}); "
            "or leave --micro_batch_size auto"
        )


def plan_memory(
    config,
    examples: Examples,
    *,
    model: ModelArgs,
    lora: LoraArgs,
    training: TrainingArgs,
    placement: Placement,
    layout: Layout,
) -> dict:
    """The memory plan of this run: model shape from config.json, the epoch's largest micro-batch for
    each candidate size, the device's budget."""
    world_size = placement.world_size
    check_batch_sizes(training, world_size)
    shape = memory.model_shape(config, lora.targets(), lora.lora_r, model.trust_remote_code)
    quantization = "8bit" if model.load_8bit else "4bit" if model.load_4bit else "16bit"
    setup = memory.TrainingSetup(
        quantization, placement.precision, lora.lora_dropout, world_size, bool(placement.sharded)
    )
    budget, source = memory.memory_budget(training.gpu_memory, world_size)
    collator = layout.collator(0)  # figures only: the pad id does not change a size

    def figures(micro: int) -> dict:
        return batching.epoch_figures(
            examples.lengths,
            examples.answers,
            training.batch_size,
            micro,
            collator,
            world_size=world_size,
            packing=layout.packing,
            seed=training.seed,
        )

    def tokens_for(micro: int) -> tuple[int, int]:
        epoch = figures(micro)
        return epoch["largest_micro_batch_positions"], epoch["largest_micro_batch_logit_tokens"]

    plan = memory.plan_micro_batch(
        shape,
        setup,
        per_rank_batch=training.batch_size // world_size,
        tokens_for=tokens_for,
        budget=budget,
        budget_source=source,
        micro_batch_size=training.micro_batch_size,
        gradient_checkpointing=training.gradient_checkpointing,
    )
    report(plan, world_size)
    return {
        **plan.summary(),
        "epoch": figures(plan.micro_batch_size),
        "model": {k: v for k, v in vars(shape).items() if k != "lora_input_widths"},
        "quantization": quantization,
        "precision": placement.precision,
        "world_size": world_size,
        "sharded": placement.sharded,
        "examples": len(examples.lengths),
        "tokens_estimated": examples.estimated,
    }


def report(plan: memory.Plan, world_size: int) -> None:
    """The plan in one log line; one that does not fit is an error with several GPU processes (they
    cannot retry out-of-memory steps on their own), else a warning."""
    logger.info(
        "memory plan: micro-batch %d (up to %d tokens), checkpointing %s, est. peak %.1f GiB of %.1f GiB (%s): %s",
        plan.micro_batch_size,
        plan.tokens_per_micro_batch,
        "on" if plan.gradient_checkpointing else "off",
        plan.peak_gib,
        plan.budget / memory.GiB,
        plan.budget_source,
        plan.reason,
    )
    if not plan.fits:
        message = (
            f"memory plan: {plan.reason}; try --load_4bit, a smaller --cutoff_len, --micro_batch_size auto or more GPUs"
        )
        if torch.cuda.is_available() and world_size > 1:
            raise UserError(message)
        logger.warning("%s (a step that runs out of memory is redone in smaller pieces)", message)
