"""The Trainers finetune.py runs: HuaTuo's shuffled order, or packed micro-batches balanced over ranks;
both survive a CUDA out-of-memory in a training step.

* :class:`RetryingTrainer`: HuaTuo's order (a fresh seeded shuffle every epoch). On CUDA
  out-of-memory in a training step (one process) it restores the step's gradients, splits the
  micro-batch into halves (twice the accumulation, the same examples and the same token-weighted
  gradient) and redoes it; later micro-batches stay split.
* :class:`BalancedTrainer`: the same, with each step's examples cut into ``processes x accumulation``
  micro-batches of near-equal tokens (:func:`utils.train.batching.balanced_sampler`), so no rank waits
  for the one holding the longest examples at each all-reduce. Used with packing.
"""

import gc
import logging
import math

import torch
import transformers

from utils.model import memory
from utils.train.batching import PackingCollator, SeededShuffle, balanced_sampler, examples_of, split_batch

logger = logging.getLogger(__name__)


class RetryingTrainer(transformers.Trainer):
    """``transformers.Trainer`` in HuaTuo's shuffled order that redoes an out-of-memory step in smaller pieces."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.oom_splits = 1  # every micro-batch is cut into this many; doubled at each out-of-memory
        self.oom_events: list[dict] = []

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        return SeededShuffle(len(dataset), self.args.data_seed or self.args.seed)

    def training_step(self, model, inputs, num_items_in_batch=None):
        trainable = [p for p in model.parameters() if p.requires_grad]
        while True:
            if self.args.world_size > 1 or num_items_in_batch is None:
                return self._steps(model, inputs, num_items_in_batch)  # no retry: ranks must agree on the split
            saved = [None if p.grad is None else p.grad.clone() for p in trainable]
            try:
                return self._steps(model, inputs, num_items_in_batch)
            except torch.OutOfMemoryError:
                pass  # leave the except block first, so the failed step's tensors can be freed
            for param, grad in zip(trainable, saved):
                param.grad = grad
            del saved
            self._after_oom(inputs)

    def _steps(self, model, inputs, num_items_in_batch):
        loss = 0
        for piece in split_batch(inputs, self.oom_splits, self.data_collator):
            loss = loss + super().training_step(model, piece, num_items_in_batch)
        return loss

    def _after_oom(self, inputs) -> None:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        examples = (
            len(examples_of(inputs, self.data_collator.pad_token_id))
            if isinstance(self.data_collator, PackingCollator)
            else len(inputs["input_ids"])
        )
        if examples < 2 * self.oom_splits:
            raise torch.OutOfMemoryError(
                f"out of memory with micro-batches of {max(1, examples // self.oom_splits)} example(s): the model does "
                "not fit; try --load_4bit, --gradient_checkpointing True or a smaller --cutoff_len"
            )
        self.oom_splits *= 2
        nominal = max(1, self.args.per_device_train_batch_size // self.oom_splits)
        event = {
            "step": self.state.global_step + 1,
            "splits": self.oom_splits,
            "examples_per_piece": math.ceil(examples / self.oom_splits),
        }
        self.oom_events.append(event)
        logger.warning(
            "out of memory at step %d: micro-batches are now cut in %d (this one: %d examples in pieces of %d, %dx the "
            "accumulation); the step is redone with the same examples and the same gradient. Next time pass "
            "--micro_batch_size %d",
            event["step"],
            self.oom_splits,
            examples,
            event["examples_per_piece"],
            self.oom_splits,
            nominal,
        )


class BalancedTrainer(RetryingTrainer):
    """:class:`RetryingTrainer` whose steps are cut into micro-batches of near-equal tokens on every rank."""

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        args = self.args
        return balanced_sampler(
            [len(ids) for ids in dataset["input_ids"]],
            args.train_batch_size * args.gradient_accumulation_steps * args.world_size,
            args.world_size,
            args.gradient_accumulation_steps,
            args.process_index,
            args.data_seed or args.seed,
        )


def run_figures(trainer: RetryingTrainer, plan: dict) -> dict:
    """Out-of-memory retries, and on a GPU the plan against what the allocator saw (the plan's runtime
    part is outside it)."""
    figures = {"out_of_memory_retries": trainer.oom_events} if trainer.oom_events else {}
    if torch.cuda.is_available():
        figures["gpu_memory_gib"] = {
            "measured_max_allocated": round(torch.cuda.max_memory_allocated() / memory.GiB, 2),
            "planned_without_runtime": round(plan["peak_gib"] - plan["parts_gib"]["runtime"], 2),
        }
    return figures
