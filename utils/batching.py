"""Padding-free batches for training: a length-aware sampler and a packing collator.

What is learned does not change, only how the work is laid out:

* :class:`StepSampler` shuffles the examples each epoch exactly like random sampling, cuts the order
  into optimizer steps of ``batch_size`` examples, and sorts each step's examples by length before
  they are split into micro-batches. An optimizer step therefore sees the same examples as with a
  shuffled padded loader; only their grouping into micro-batches differs. With HF Trainer's
  token-weighted loss (``num_items_in_batch``: the loss of every micro-batch is a sum over answer
  tokens divided by the answer tokens of the whole step) the step's gradient does not depend on that
  grouping, so it equals the padded one up to float rounding.
* :class:`PackingCollator` packs the examples of a micro-batch into rows of at most ``pack_len``
  tokens (first-fit decreasing) with no padding between them. ``position_ids`` restart at 0 for
  every example; transformers' mask builder (``masking_utils.find_packed_sequence_indices``) turns
  the restarts into a block-diagonal causal mask, so no token attends to another example (tested in
  tests/test_packing.py). Rows are kept short (``pack_len`` = cutoff_len by default) because a packed
  row's attention costs the square of its length even though most of it is masked.
* Targets are shifted inside each example (the last token of one example never predicts the first
  of the next) and handed over as ``shift_labels``; with ``label_logits_only`` the model projects
  only the positions that have a target onto the vocabulary (``logits_to_keep`` as a boolean mask),
  which skips the language-model head and the softmax on prompt tokens.

``seed_collator`` is the seed's collator (``DataCollatorForSeq2Seq``, padded to the longest,
``pad_to_multiple_of=8``), behind ``finetune.py --packing False``.
"""

import logging
import math
from dataclasses import dataclass, field

import torch

from utils.prompter import IGNORE_INDEX

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------
# sampler


class StepSampler(torch.utils.data.Sampler):
    """Random order per epoch; within every optimizer step of ``batch_size`` examples, longest first.

    ``batch_size`` is the number of examples per optimizer step over all processes, so under
    torchrun each process's micro-batches still come from the same steps as without sorting.
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int = 42, sort: bool = True):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.sort = sort  # False: plain shuffled order (the seed's sampling, reproducible)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:  # called by HF Trainer at the start of every epoch
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator).tolist()
        for start in range(0, len(order), self.batch_size):
            step = order[start : start + self.batch_size]
            yield from sorted(step, key=lambda i: -self.lengths[i]) if self.sort else step


# ----------------------------------------------------------------------------------------------
# collators


def seed_collator(tokenizer):
    """The seed's collator: every micro-batch padded to its longest example (multiple of 8)."""
    from transformers import DataCollatorForSeq2Seq

    return DataCollatorForSeq2Seq(
        tokenizer, pad_to_multiple_of=8, return_tensors="pt", padding=True, label_pad_token_id=IGNORE_INDEX
    )


def pack_rows(lengths: list[int], capacity: int) -> list[list[int]]:
    """First-fit decreasing: indices of ``lengths`` grouped into rows of at most ``capacity`` tokens.

    An example longer than ``capacity`` gets a row of its own (it is never split).
    """
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(capacity - lengths[i])
    return rows


@dataclass
class PackingCollator:
    """Pack tokenized examples ({input_ids, labels}) into padding-free rows with restarting position ids."""

    pad_token_id: int
    pack_len: int = 256  # row capacity in tokens (0 = the whole micro-batch in one row)
    label_logits_only: bool = True  # vocabulary projection only where there is a target
    pad_to_multiple_of: int = 8
    # running totals, for logging the padding fraction
    stats: dict = field(default_factory=lambda: {"tokens": 0, "positions": 0, "targets": 0, "rows": 0})

    def __call__(self, features: list[dict]) -> dict:
        lengths = [len(f["input_ids"]) for f in features]
        capacity = self.pack_len if self.pack_len > 0 else sum(lengths)
        rows = pack_rows(lengths, capacity)
        width = max(sum(lengths[i] for i in row) for row in rows)
        width = math.ceil(width / self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        targets = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        position_ids = torch.zeros((len(rows), width), dtype=torch.long)
        for r, row in enumerate(rows):
            at = 0
            for i in row:
                n = lengths[i]
                ids = torch.as_tensor(features[i]["input_ids"], dtype=torch.long)
                lab = torch.as_tensor(features[i]["labels"], dtype=torch.long)
                input_ids[r, at : at + n] = ids
                labels[r, at : at + n] = lab
                labels[r, at] = IGNORE_INDEX  # never a target: nothing before it in its own example
                targets[r, at : at + n - 1] = lab[1:]  # token t predicts t+1, inside the example only
                position_ids[r, at : at + n] = torch.arange(n)
                at += n
            # padding counts as one more "example" (positions restart), so it never joins a real one
            position_ids[r, at:] = torch.arange(width - at)
        self.stats["tokens"] += sum(lengths)
        self.stats["positions"] += input_ids.numel()
        self.stats["rows"] += len(rows)
        # use_cache=False: with a KV cache object transformers skips the packed-sequence check and
        # builds a plain causal mask, which would let each example attend to the ones before it.
        batch = {"input_ids": input_ids, "position_ids": position_ids, "labels": labels, "use_cache": False}
        keep = targets != IGNORE_INDEX
        self.stats["targets"] += int(keep.sum())
        if self.label_logits_only:
            batch["logits_to_keep"] = keep  # (rows, width) bool: logits come back flattened to (targets, vocab)
            batch["shift_labels"] = targets[keep]
        else:
            batch["shift_labels"] = targets
        return batch

    def padding_fraction(self) -> float:
        return 1 - self.stats["tokens"] / self.stats["positions"] if self.stats["positions"] else 0.0


# ----------------------------------------------------------------------------------------------
# trainer hook and start-up figures


def padding_plan(
    lengths: list[int], batch_size: int, micro_batch_size: int, packing: bool, pack_len: int, seed: int = 42
) -> dict:
    """Tokens and padded positions of one epoch's training micro-batches, without building them.

    With packing it replays :class:`StepSampler` and :func:`pack_rows` exactly; without, it pads
    micro-batches of a seeded shuffle to their longest example (multiple of 8), as the seed did.
    """
    if packing:
        order = list(StepSampler(lengths, batch_size, seed))
    else:
        order = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(seed)).tolist()
    positions = 0
    for start in range(0, len(order), micro_batch_size):
        chunk = [lengths[i] for i in order[start : start + micro_batch_size]]
        if packing:
            rows = pack_rows(chunk, pack_len if pack_len > 0 else sum(chunk))
            width = max(sum(chunk[i] for i in row) for row in rows)
            positions += len(rows) * math.ceil(width / 8) * 8
        else:
            positions += len(chunk) * math.ceil(max(chunk) / 8) * 8
    tokens = sum(lengths)
    return {"tokens": tokens, "positions": positions, "padding_fraction": 1 - tokens / positions if positions else 0.0}


def step_sorted_trainer_class(sort: bool = True):
    """``transformers.Trainer`` whose training order comes from :class:`StepSampler`."""
    import transformers

    class StepSortedTrainer(transformers.Trainer):
        def _get_train_sampler(self, train_dataset=None):
            dataset = train_dataset if train_dataset is not None else self.train_dataset
            examples_per_step = (
                self.args.per_device_train_batch_size * self.args.gradient_accumulation_steps * self.args.world_size
            )
            lengths = [len(ids) for ids in dataset["input_ids"]]
            return StepSampler(lengths, examples_per_step, self.args.data_seed or self.args.seed, sort=sort)

    return StepSortedTrainer
