"""Batches for training: balanced step sampling, a packing collator, HuaTuo's padded collator, batch splitting.

What is learned does not change, only how the work is laid out:

* Each optimizer step holds ``batch_size`` examples of a seeded shuffle (HuaTuo's sampling). With
  packing, a step's examples are cut into ``processes x accumulation`` micro-batches of near-equal
  tokens (transformers' rank-aware ``BatchRebalanceSampler`` with a token-count grouping), so every
  process gets the same load at every accumulation step (no rank waits for the one holding the
  longest examples at each all-reduce). With HF Trainer's token-weighted loss (``num_items_in_batch``: the
  loss of every micro-batch is a sum over answer tokens divided by the answer tokens of the whole
  step) the step's gradient does not depend on that grouping, so it equals the padded one up to
  float rounding.
* :class:`PackingCollator` packs the examples of a micro-batch into rows of at most ``pack_len``
  tokens (first-fit decreasing) with no padding between them. ``position_ids`` restart at 0 for
  every example; transformers' mask builder (``masking_utils.find_packed_sequence_indices``) turns
  the restarts into a block-diagonal causal mask for SDPA/eager, so no token attends to another
  example (tested in tests/test_packing.py). Rows are kept short (``pack_len`` = cutoff_len by
  default) because a packed row's attention costs the square of its length even though most of
  it is masked. With ``flatten`` (flash attention) the micro-batch is ONE row with the
  ``cu_seq_lens_*`` / ``max_length_*`` kwargs, which is what makes transformers' flash path run
  variable-length attention; several rows without a mask would give each row a plain causal kernel
  and let examples see each other.
* Targets are shifted inside each example (the last token of one example never predicts the first
  of the next) and handed over as ``shift_labels``; with ``label_logits_only`` the model projects
  only the positions that have a target onto the vocabulary (``logits_to_keep`` as integer positions
  per row, no host sync), which skips the language-model head and the softmax on prompt tokens.
* :func:`split_batch` cuts a micro-batch into smaller ones holding the same examples: what the
  Trainers of ``utils/train/trainers.py`` do after a CUDA out-of-memory.

:func:`padded_collator` is HuaTuo's collator (``DataCollatorForSeq2Seq``, padded to the longest,
``pad_to_multiple_of=8``), behind ``finetune.py --packing False``.
"""

import math
from dataclasses import dataclass, field

import torch
from transformers.trainer_pt_utils import BatchRebalanceSampler

from utils.data.prompter import IGNORE_INDEX

# ----------------------------------------------------------------------------------------------
# sampler


class SeededShuffle(torch.utils.data.Sampler):
    """HuaTuo's order: a fresh shuffle every epoch from ``seed + epoch`` (the same permutation
    transformers' ``BatchRebalanceSampler`` cuts into steps, so both see the same examples per step)."""

    def __init__(self, n: int, seed: int = 42):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:  # called by HF Trainer at the start of every epoch
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        yield from torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()


def balanced_sampler(
    lengths: list[int], batch_size: int, world_size: int, accumulation: int, rank: int = 0, seed: int = 42
):
    """This rank's micro-batches: each step's ``batch_size`` examples cut into ``world_size x accumulation``
    groups of near-equal tokens (see :class:`TokenBalancedSampler`)."""
    return TokenBalancedSampler(
        lengths=list(lengths),
        effective_batch_size=batch_size,
        dp_size=world_size,
        grad_accum=accumulation,
        rank=rank,
        seed=seed,
        drop_last=False,
    )


class TokenBalancedSampler(BatchRebalanceSampler):
    """transformers' ``BatchRebalanceSampler`` (rank-aware, one seeded shuffle cut into steps, the
    Trainer hands it to the DataLoader as its batch sampler and keeps accelerate from re-sharding it)
    with a grouping made for packed batches. Its own cost model prices a group as padded to its
    longest example, which over-prices groups of many short examples once they are packed: measured on
    HuaTuo data with 4 ranks it left the busiest rank 1.26x (mean) to 1.81x (worst step) the idlest.
    Packed, a group costs its tokens, so the step's examples are dealt longest-first to the group with
    the fewest tokens so far (longest processing time first), which evens tokens to within one example."""

    def _assign(self, indices, lengths):
        groups: list[list[int]] = [[] for _ in range(self.dp_size * self.grad_accum)]
        tokens = [0] * len(groups)
        for index, length in sorted(zip(indices, lengths), key=lambda pair: -pair[1]):
            g = min(range(len(groups)), key=lambda k: (tokens[k], len(groups[k])))
            groups[g].append(index)
            tokens[g] += length
        return [[groups[slot * self.dp_size + rank] for slot in range(self.grad_accum)] for rank in range(self.dp_size)]


# ----------------------------------------------------------------------------------------------
# collators


def padded_collator(tokenizer):
    """HuaTuo's collator: every micro-batch padded to its longest example (multiple of 8)."""
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
    flatten: bool = False  # flash attention: one row, no padding, cu_seq_lens/max_length kwargs (varlen kernel)
    # running totals, for logging the padding fraction
    stats: dict = field(default_factory=lambda: {"tokens": 0, "positions": 0, "targets": 0, "rows": 0})

    def __call__(self, features: list[dict]) -> dict:
        lengths = [len(f["input_ids"]) for f in features]
        if self.flatten:
            rows, width = [sorted(range(len(lengths)), key=lambda i: -lengths[i])], sum(lengths)
        else:
            rows = pack_rows(lengths, self.pack_len if self.pack_len > 0 else sum(lengths))
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
        if self.flatten:  # what DataCollatorWithFlattening(return_flash_attn_kwargs=True) hands flash attention
            bounds = torch.tensor([0] + [lengths[i] for i in rows[0]], dtype=torch.int32).cumsum(0, dtype=torch.int32)
            batch["cu_seq_lens_q"] = batch["cu_seq_lens_k"] = bounds
            batch["max_length_q"] = batch["max_length_k"] = max(lengths)
        keep = targets != IGNORE_INDEX
        self.stats["targets"] += int(keep.sum())
        if self.label_logits_only:
            # (rows, k) integer positions, k = the most targets of a row, short rows repeating a position
            # whose label is -100: transformers gathers them with take_along_dim (modeling_utils
            # slice_logits_to_keep), which needs no host sync; a boolean mask would (its count).
            counts = keep.sum(1)
            k = max(1, int(counts.max()))
            order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices[:, :k]  # target positions first
            batch["logits_to_keep"] = order
            batch["shift_labels"] = torch.where(
                torch.arange(k)[None] < counts[:, None], targets.gather(1, order), IGNORE_INDEX
            )
        else:
            batch["shift_labels"] = targets
        return batch

    def logit_tokens_of(self, lengths: list[int], answers: list[int]) -> int:
        """Positions projected onto the vocabulary for these examples: rows x the most targets of a row."""
        if not self.label_logits_only:
            return self.positions_of(lengths)
        rows = (
            [list(range(len(lengths)))]
            if self.flatten
            else pack_rows(lengths, self.pack_len if self.pack_len > 0 else sum(lengths))
        )
        return len(rows) * max(1, max(sum(answers[i] for i in row) for row in rows))

    def positions_of(self, lengths: list[int]) -> int:
        """Positions (tokens + padding) of the batch these example lengths make, without building it."""
        if self.flatten:
            return sum(lengths)
        rows = pack_rows(lengths, self.pack_len if self.pack_len > 0 else sum(lengths))
        width = max(sum(lengths[i] for i in row) for row in rows)
        return len(rows) * math.ceil(width / self.pad_to_multiple_of) * self.pad_to_multiple_of


def examples_of(batch: dict, pad_token_id: int) -> list[dict]:
    """The {input_ids, labels} features a packed batch was built from (padding segments left out):
    collating them again gives the same per-example inputs and targets."""
    features = []
    for ids, labels, positions in zip(batch["input_ids"], batch["labels"], batch["position_ids"]):
        starts = (positions == 0).nonzero().flatten().tolist() + [len(positions)]
        for start, end in zip(starts, starts[1:]):
            is_padding = (
                end == len(positions)
                and bool((ids[start:end] == pad_token_id).all())
                and bool((labels[start:end] == IGNORE_INDEX).all())
            )
            if not is_padding:
                features.append({"input_ids": ids[start:end].tolist(), "labels": labels[start:end].tolist()})
    return features


def split_batch(batch: dict, parts: int, collator) -> list[dict]:
    """The micro-batch ``batch`` as ``parts`` smaller ones holding the same examples (packed: re-collated
    example by example; padded: rows). Raises ValueError when it has fewer examples than ``parts``."""
    if parts == 1:
        return [batch]
    if isinstance(collator, PackingCollator):
        features = examples_of(batch, collator.pad_token_id)
        if len(features) < parts:
            raise ValueError(f"cannot split a micro-batch of {len(features)} examples into {parts}")
        fresh = PackingCollator(
            collator.pad_token_id,
            collator.pack_len,
            collator.label_logits_only,
            collator.pad_to_multiple_of,
            collator.flatten,
        )
        bounds = [round(k * len(features) / parts) for k in range(parts + 1)]
        return [fresh(features[a:b]) for a, b in zip(bounds, bounds[1:])]
    rows = len(batch["input_ids"])
    if rows < parts:
        raise ValueError(f"cannot split a micro-batch of {rows} examples into {parts}")
    bounds = [round(k * rows / parts) for k in range(parts + 1)]
    return [
        {k: v[a:b] if torch.is_tensor(v) and v.dim() > 0 else v for k, v in batch.items()}
        for a, b in zip(bounds, bounds[1:])
    ]


# ----------------------------------------------------------------------------------------------
# the epoch's micro-batches, without building them (start-up figures and the memory plan)


def micro_batches(
    lengths: list[int],
    batch_size: int,
    micro_batch_size: int,
    world_size: int = 1,
    packing: bool = True,
    seed: int = 42,
) -> list[list[int]]:
    """Every process's micro-batches of the first epoch (indices), as training will form them."""
    per_rank = batch_size // world_size
    accumulation = max(1, per_rank // micro_batch_size)
    if packing:
        return [
            mb
            for rank in range(world_size)
            for mb in balanced_sampler(lengths, batch_size, world_size, accumulation, rank, seed)
        ]
    order = list(SeededShuffle(len(lengths), seed))
    return [order[s : s + micro_batch_size] for s in range(0, len(order), micro_batch_size)]


def epoch_figures(
    lengths: list[int],
    answer_lengths: list[int],
    batch_size: int,
    micro_batch_size: int,
    collator_like,
    world_size: int = 1,
    packing: bool = True,
    seed: int = 42,
) -> dict:
    """Tokens, positions and padding of one epoch, and its largest micro-batch in positions and in
    projected (answer) tokens: what the memory plan sizes activations and logits by."""
    tokens = positions = largest = largest_logits = 0
    for mb in micro_batches(lengths, batch_size, micro_batch_size, world_size, packing, seed):
        chunk = [lengths[i] for i in mb]
        if packing:
            pos = collator_like.positions_of(chunk)
            logits = collator_like.logit_tokens_of(chunk, [answer_lengths[i] for i in mb])
        else:
            pos = logits = len(chunk) * math.ceil(max(chunk) / 8) * 8
        tokens, positions = tokens + sum(chunk), positions + pos
        if pos > largest:
            largest, largest_logits = pos, logits
    return {
        "tokens": tokens,
        "positions": positions,
        "padding_fraction": 1 - tokens / positions if positions else 0.0,
        "largest_micro_batch_positions": largest,
        "largest_micro_batch_logit_tokens": largest_logits,
    }
