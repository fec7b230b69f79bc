"""Packed / regrouped batches give the padded batches' loss and gradients; packing never leaks attention."""

import json

import pytest
import torch

from utils.batching import PackingCollator, StepSampler, pack_rows, seed_collator
from utils.prompter import IGNORE_INDEX, Prompter, tokenize_records


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
    """The seed's way: one padded batch, mean loss over its answer tokens."""
    model.zero_grad()
    batch = seed_collator(tokenizer)([dict(e) for e in examples])
    loss = model(**batch).loss
    loss.backward()
    return loss.item(), lora_grads(model)


def packed_step(model, tokenizer, examples, micro, pack_len, label_logits_only):
    """The same examples regrouped by StepSampler into packed micro-batches, token-weighted as HF Trainer does."""
    model.zero_grad()
    order = list(StepSampler([len(e["input_ids"]) for e in examples], batch_size=len(examples), seed=3))
    collator = PackingCollator(tokenizer.pad_token_id, pack_len=pack_len, label_logits_only=label_logits_only)
    batches = [collator([examples[i] for i in order[s : s + micro]]) for s in range(0, len(order), micro)]
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


def test_step_sampler_keeps_each_steps_examples():
    lengths = [(i * 37) % 101 for i in range(50)]
    sampler = StepSampler(lengths, batch_size=16, seed=7)
    order = list(sampler)
    reference = torch.randperm(50, generator=torch.Generator().manual_seed(7)).tolist()
    assert sorted(order) == list(range(50))
    for s in range(0, 50, 16):
        assert set(order[s : s + 16]) == set(reference[s : s + 16])  # same examples per optimizer step
        assert [lengths[i] for i in order[s : s + 16]] == sorted((lengths[i] for i in order[s : s + 16]), reverse=True)
    sampler.set_epoch(1)
    assert list(sampler) != order  # a new shuffle every epoch
