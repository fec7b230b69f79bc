"""Packed / regrouped batches give the padded batches' loss and gradients; packing never leaks attention."""

import json

import pytest
import torch

from utils.data.prompter import IGNORE_INDEX, Prompter, tokenize_records
from utils.train.batching import (
    PackingCollator,
    SeededShuffle,
    balanced_sampler,
    micro_batches,
    pack_rows,
    padded_collator,
    split_batch,
)


@pytest.fixture(scope="module")
def examples(tokenizer, train_file):
    records = [json.loads(line) for line in train_file.read_text().splitlines()][:24]
    examples, _ = tokenize_records(tokenizer, Prompter(), records, cutoff_len=96)
    return examples


@pytest.fixture(scope="module")
def lora_model(tiny_base):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():  # a trained-looking adapter, so the LoRA path matters
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    model.eval()
    return model


def lora_grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def padded_step(model, tokenizer, examples):
    """HuaTuo's way: one padded batch, mean loss over its answer tokens."""
    model.zero_grad()
    batch = padded_collator(tokenizer)([dict(e) for e in examples])
    loss = model(**batch).loss
    loss.backward()
    return loss.item(), lora_grads(model)


def packed_step(model, tokenizer, examples, micro, pack_len, label_logits_only):
    """The same examples regrouped by the balanced sampler into packed micro-batches,
    token-weighted as HF Trainer does."""
    model.zero_grad()
    lengths = [len(e["input_ids"]) for e in examples]
    groups = list(
        balanced_sampler(lengths, len(examples), world_size=1, accumulation=max(1, len(examples) // micro), seed=3)
    )
    assert sorted(i for g in groups for i in g) == list(range(len(examples)))
    collator = PackingCollator(tokenizer.pad_token_id, pack_len=pack_len, label_logits_only=label_logits_only)
    batches = [collator([examples[i] for i in group]) for group in groups]
    num_items = sum(int(b["shift_labels"].ne(IGNORE_INDEX).sum()) for b in batches)
    total = 0.0
    for batch in batches:
        loss = model(**batch, num_items_in_batch=torch.tensor(num_items)).loss
        loss.backward()
        total += loss.item()
    assert collator.stats["tokens"] == sum(len(e["input_ids"]) for e in examples)
    return total, lora_grads(model)


@pytest.mark.parametrize(
    "micro,pack_len,label_logits_only", [(24, 96, True), (8, 96, True), (5, 0, False), (8, 200, False)]
)
def test_packed_loss_and_gradients_equal_padded(lora_model, tokenizer, examples, micro, pack_len, label_logits_only):
    expected_loss, expected_grads = padded_step(lora_model, tokenizer, examples)
    loss, grads = packed_step(lora_model, tokenizer, examples, micro, pack_len, label_logits_only)
    assert abs(loss - expected_loss) < 1e-4, (loss, expected_loss)
    for name, grad in expected_grads.items():
        assert torch.allclose(grads[name], grad, atol=1e-5, rtol=1e-3), name


def test_packing_blocks_cross_example_attention(lora_model, tokenizer, examples):
    """Logits of an example packed after another equal its logits alone; a leak would change them."""
    a, b = examples[0], examples[1]
    collator = PackingCollator(tokenizer.pad_token_id, pack_len=0, label_logits_only=False)
    batch = collator([a, b])
    assert batch["input_ids"].shape[0] == 1  # both in one row
    with torch.no_grad():
        packed = lora_model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
        alone = {id(e): lora_model(input_ids=torch.tensor([e["input_ids"]])).logits[0] for e in (a, b)}
        # with a KV cache transformers ignores the restarts (plain causal mask): the second example sees the first
        leaky = lora_model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=True).logits[0]
    first, second = (a, b) if len(a["input_ids"]) >= len(b["input_ids"]) else (b, a)  # longest first
    n1, n2 = len(first["input_ids"]), len(second["input_ids"])
    assert torch.allclose(packed[:n1], alone[id(first)], atol=1e-4)
    assert torch.allclose(packed[n1 : n1 + n2], alone[id(second)], atol=1e-4)
    assert not torch.allclose(leaky[n1 : n1 + n2], alone[id(second)], atol=1e-2)


def test_collator_targets_stay_inside_each_example(tokenizer, examples):
    collator = PackingCollator(tokenizer.pad_token_id, pack_len=0, label_logits_only=False)
    batch = collator(examples[:3])
    targets = batch["shift_labels"][0].tolist()
    ids = batch["input_ids"][0].tolist()
    at = 0
    for e in sorted(examples[:3], key=lambda e: -len(e["input_ids"])):
        n = len(e["input_ids"])
        assert targets[at : at + n - 1] == e["labels"][1:]
        assert targets[at + n - 1] == IGNORE_INDEX  # the last token does not predict the next example
        assert ids[at : at + n] == e["input_ids"]
        assert batch["position_ids"][0, at : at + n].tolist() == list(range(n))
        at += n
    assert all(t == IGNORE_INDEX for t in targets[at:])  # padding has no targets


def test_pack_rows_respects_capacity():
    lengths = [50, 90, 10, 40, 60, 30, 120]
    rows = pack_rows(lengths, capacity=100)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    for row in rows:
        assert sum(lengths[i] for i in row) <= 100 or len(row) == 1  # 120 alone, never split
    assert len(rows) == 4  # first-fit decreasing: [120] [90, 10] [60, 40] [50, 30]


def test_balanced_steps_hold_the_seeded_shuffles_examples():
    """Every optimizer step holds the examples a seeded shuffle puts there, whatever the processes."""
    lengths = [(i * 37) % 101 + 5 for i in range(64)]
    reference = list(SeededShuffle(64, seed=7))
    for world_size, micro in [(1, 16), (2, 8), (4, 4)]:
        mbs = micro_batches(lengths, batch_size=16, micro_batch_size=micro, world_size=world_size, seed=7)
        accumulation = 16 // world_size // micro
        per_rank = len(mbs) // world_size
        for step in range(4):
            held = {
                i
                for rank in range(world_size)
                for mb in mbs[rank * per_rank + step * accumulation : rank * per_rank + (step + 1) * accumulation]
                for i in mb
            }
            assert held == set(reference[step * 16 : (step + 1) * 16])
    shuffle = SeededShuffle(64, seed=7)
    shuffle.set_epoch(1)
    assert list(shuffle) != reference  # a new shuffle every epoch


def test_ranks_get_equal_token_loads():
    """4 processes: each step's tokens are spread evenly, not longest-first to rank 0."""
    lengths = [20 + (i * 53) % 230 for i in range(512)]
    mbs = micro_batches(lengths, batch_size=128, micro_batch_size=8, world_size=4, seed=1)
    per_rank = len(mbs) // 4
    for step in range(4):
        loads = [
            sum(lengths[i] for mb in mbs[r * per_rank + step * 4 : r * per_rank + step * 4 + 4] for i in mb)
            for r in range(4)
        ]
        assert max(loads) / min(loads) < 1.1, loads
        # what dealing sorted micro-batches round-robin gave: rank 0 always the longest
        step_order = sorted(list(SeededShuffle(512, seed=1))[step * 128 : (step + 1) * 128], key=lambda i: -lengths[i])
        dealt = [sum(lengths[i] for k in range(r, 16, 4) for i in step_order[k * 8 : k * 8 + 8]) for r in range(4)]
        assert max(dealt) / min(dealt) > max(loads) / min(loads)


def test_split_batch_regroups_the_same_examples(lora_model, tokenizer, examples):
    """Halving a packed micro-batch (the out-of-memory retry) keeps its examples and its summed loss."""
    for flatten in (False, True):
        collator = PackingCollator(tokenizer.pad_token_id, pack_len=0 if flatten else 96, flatten=flatten)
        whole = collator(examples[:12])
        pieces = split_batch(whole, 4, collator)
        targets = lambda b: int((b["shift_labels"] != IGNORE_INDEX).sum())  # noqa: E731 (rows are padded with -100)
        assert sum(targets(p) for p in pieces) == targets(whole)
        n = torch.tensor(targets(whole))
        with torch.no_grad():
            total = lora_model(**whole, num_items_in_batch=n).loss
            parts = sum(lora_model(**p, num_items_in_batch=n).loss for p in pieces)
        assert abs(total.item() - parts.item()) < 1e-5
    with pytest.raises(ValueError, match="cannot split"):
        split_batch(collator(examples[:2]), 4, collator)


def test_flattened_batch_carries_flash_kwargs_and_sdpa_matches_padded(lora_model, tokenizer, examples):
    """flash_attention_2's varlen path needs ONE row plus cu_seq_lens / max_length; on CPU, SDPA on
    the same flattened row (block-diagonal mask from the position ids) gives the padded batch's loss."""
    collator = PackingCollator(tokenizer.pad_token_id, pack_len=0, flatten=True)
    batch = collator(examples[:10])
    lengths = sorted((len(e["input_ids"]) for e in examples[:10]), reverse=True)
    assert batch["input_ids"].shape == (1, sum(lengths))  # one row, no padding
    assert batch["cu_seq_lens_q"].dtype == torch.int32 and batch["cu_seq_lens_q"].tolist() == [
        0,
        *torch.tensor(lengths).cumsum(0).tolist(),
    ]
    assert batch["cu_seq_lens_k"] is batch["cu_seq_lens_q"] and batch["max_length_q"] == batch["max_length_k"] == max(
        lengths
    )
    starts = (batch["position_ids"][0] == 0).nonzero().flatten().tolist()
    assert starts == batch["cu_seq_lens_q"][:-1].tolist()  # position ids restart exactly at the boundaries
    expected, _ = padded_step(lora_model, tokenizer, examples[:10])
    n = torch.tensor(int(batch["shift_labels"].numel()))
    with torch.no_grad():
        loss = lora_model(**batch, num_items_in_batch=n).loss
    assert abs(loss.item() - expected) < 1e-4, (loss.item(), expected)
