"""Chat-template prompts: exact label masks, record formats, stop ids, LoRA targets and pad tokens."""

import re

import pytest
import torch
from conftest import write_jsonl
from tiny_archs import CHAT_ARCHS, build, end_of_turn_id

from utils.data.chat import record_messages
from utils.data.prompter import IGNORE_INDEX, ChatPrompter, make_prompter, tokenize_records
from utils.data.records import DataError, load_records
from utils.model import generation, loading

SYS, Q1, A1, Q2, A2 = "你是一名医生。", "头痛怎么办？", "多休息，少熬夜。", "还需要吃药吗？", "疼得厉害可以吃布洛芬。"

# The same two-turn conversation in each of the record formats utils/data/chat.py accepts.
RECORDS = {
    "folded": {"instruction": f" <user>: {Q1} <bot>: {A1} <user>: {Q2}", "input": "", "output": A2},
    "history": {"history": [[Q1, A1]], "instruction": Q2, "output": A2},
    "messages": {
        "messages": [
            {"role": "user", "content": Q1},
            {"role": "assistant", "content": A1},
            {"role": "user", "content": Q2},
            {"role": "assistant", "content": A2},
        ]
    },
}

# Independent of apply_chat_template: each model's format written out by hand as
# (text, learnt) segments, the system prompt given.
EXPECTED_SEGMENTS = {
    "qwen2": [
        (f"<|im_start|>system\n{SYS}<|im_end|>\n<|im_start|>user\n{Q1}<|im_end|>\n<|im_start|>assistant\n", False),
        (f"{A1}<|im_end|>", True),
        (f"\n<|im_start|>user\n{Q2}<|im_end|>\n<|im_start|>assistant\n", False),
        (f"{A2}<|im_end|>", True),
    ],
    "llama3": [
        (
            f"<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n{SYS}<|eot_id|><|start_header_id|>user"
            f"<|end_header_id|>\n\n{Q1}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
            False,
        ),
        (f"{A1}<|eot_id|>", True),
        (
            f"<|start_header_id|>user<|end_header_id|>\n\n{Q2}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
            False,
        ),
        (f"{A2}<|eot_id|>", True),
    ],
    "gemma": [  # no system role: the system prompt opens the first user turn
        (f"<bos><start_of_turn>user\n{SYS}\n\n{Q1}<end_of_turn>\n<start_of_turn>model\n", False),
        (f"{A1}<end_of_turn>", True),
        (f"\n<start_of_turn>user\n{Q2}<end_of_turn>\n<start_of_turn>model\n", False),
        (f"{A2}<end_of_turn>", True),
    ],
}


@pytest.fixture(scope="module")
def arch(tmp_path_factory):
    """name -> (folder, tokenizer) of a tiny checkpoint, built once per module."""
    built = {}

    def get(name):
        if name not in built:
            path = build(name, tmp_path_factory.mktemp(name))
            built[name] = (path, loading.load_tokenizer(path))
        return built[name]

    return get


def expected_example(tokenizer, segments):
    ids, labels = [], []
    for text, learnt in segments:
        piece = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids += piece
        labels += piece if learnt else [IGNORE_INDEX] * len(piece)
    return {"input_ids": ids, "labels": labels}


@pytest.mark.parametrize("name", CHAT_ARCHS)
@pytest.mark.parametrize("form", RECORDS)
def test_multi_turn_masks_are_exact(arch, name, form):
    _, tokenizer = arch(name)
    expected = expected_example(tokenizer, EXPECTED_SEGMENTS[name])
    examples, dropped = tokenize_records(tokenizer, ChatPrompter(SYS), [RECORDS[form]], cutoff_len=512)
    assert dropped == 0 and examples == [expected]
    learnt = [t for t in expected["labels"] if t != IGNORE_INDEX]
    eot = end_of_turn_id(name, tokenizer)
    assert learnt.count(eot) == 2 and learnt[-1] == eot  # each answer ends with the end-of-turn token
    assert tokenizer.decode(learnt, skip_special_tokens=True) == A1 + A2


@pytest.mark.parametrize("name", CHAT_ARCHS)
def test_generation_prompt_is_the_training_prefix(arch, name):
    """infer renders the same text the model was trained on, up to the answer (no double bos)."""
    _, tokenizer = arch(name)
    prompter = ChatPrompter(SYS)
    [prompt] = prompter.prompts(tokenizer, [RECORDS["folded"]])
    expected = expected_example(tokenizer, EXPECTED_SEGMENTS[name][:3])["input_ids"]
    assert tokenizer(prompt)["input_ids"] == expected
    inference_record = {"messages": RECORDS["messages"]["messages"][:3]}
    assert prompter.prompts(tokenizer, [inference_record]) == [prompt]
    with_golden = {"messages": RECORDS["messages"]["messages"]}  # a final assistant turn is the golden answer
    assert prompter.prompts(tokenizer, [with_golden]) == [prompt]


def test_default_system_prompt_input_and_truncation(arch):
    _, tokenizer = arch("qwen2")
    record = {"instruction": Q1, "input": "男，30岁", "output": A1}
    [example], _ = tokenize_records(tokenizer, ChatPrompter(), [record], cutoff_len=512)
    text = tokenizer.decode(example["input_ids"])
    assert text.startswith("<|im_start|>system\nYou are Qwen") and f"{Q1}\n男，30岁<|im_end|>" in text
    assert example["input_ids"][-1] == end_of_turn_id("qwen2", tokenizer)
    cut = len(example["input_ids"]) - 2  # the end of turn and one answer token do not fit
    [short], _ = tokenize_records(tokenizer, ChatPrompter(), [record], cutoff_len=cut)
    assert short["input_ids"] == example["input_ids"][:cut] and short["labels"] == example["labels"][:cut]
    assert end_of_turn_id("qwen2", tokenizer) not in short["input_ids"][-3:]
    [everything], _ = tokenize_records(tokenizer, ChatPrompter(), [record], cutoff_len=512, train_on_inputs=True)
    assert everything["labels"] == everything["input_ids"] == example["input_ids"]
    prompt_len = sum(1 for label in example["labels"] if label == IGNORE_INDEX)
    examples, dropped = ChatPrompter().tokenize(tokenizer, [record], cutoff_len=prompt_len)
    assert examples == [] and dropped == 1  # the prompt alone fills cutoff_len: nothing to learn


def test_record_formats_and_system_field():
    record = dict(RECORDS["history"], system="记录自己的系统提示")
    messages = record_messages(record, system_prompt="flag")
    assert messages[0] == {"role": "system", "content": "记录自己的系统提示"} and len(messages) == 5
    assert record_messages(RECORDS["folded"], "flag") == record_messages(RECORDS["messages"], "flag")
    assert record_messages(RECORDS["folded"], with_answer=False)[-1] == {"role": "user", "content": Q2}
    with pytest.raises(DataError, match="start and end with '<user>:'"):
        record_messages({"instruction": " <user>: a <bot>: b", "output": "c"})


def test_bad_chat_records_name_file_line_and_field(tmp_path):
    cases = [
        ({"messages": [{"role": "doctor", "content": "x"}]}, "field 'messages[0].role'"),
        ({"messages": [{"role": "user", "content": "x"}]}, "last message must be an assistant"),
        ({"messages": [{"role": "assistant", "content": "x"}]}, "first message after the system one must be a user"),
        ({"messages": "hi"}, "field 'messages': expected a non-empty list"),
        ({"instruction": "q", "output": "a", "history": [["only one"]]}, "field 'history[0]'"),
        ({"instruction": "q", "output": "a", "system": 3}, "field 'system'"),
    ]
    for record, message in cases:
        path = write_jsonl(tmp_path / "bad.jsonl", [{"instruction": "q", "output": "a"}, record])
        with pytest.raises(DataError, match=r"bad.jsonl:2: .*" + re.escape(message)):
            load_records(path)
    questions = write_jsonl(tmp_path / "q.jsonl", [{"messages": [{"role": "user", "content": "x"}]}])
    assert load_records(questions, require_output=False).records  # inference needs no answer


def test_text_templates_refuse_chat_records_and_chat_needs_a_template(tokenizer):
    with pytest.raises(DataError, match="record 1: field 'messages' needs the tokenizer's chat template"):
        tokenize_records(tokenizer, make_prompter("med_template"), [RECORDS["messages"]], 256)
    with pytest.raises(ValueError, match="has no chat template"):
        tokenize_records(tokenizer, make_prompter("chat"), [RECORDS["folded"]], 256)  # the tiny LLaMA has none
    with pytest.raises(ValueError, match="only used with the chat template"):
        make_prompter("med_template", system_prompt="x")


@pytest.mark.parametrize("name", CHAT_ARCHS)
def test_generation_stops_at_end_of_turn(arch, name):
    """Force the end-of-turn token at step 3: generation stops there; without it in the stop ids it runs on."""
    from transformers import AutoModelForCausalLM, LogitsProcessor, LogitsProcessorList

    path, tokenizer = arch(name)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    loading.sync_special_tokens(model, tokenizer)
    eot = end_of_turn_id(name, tokenizer)
    assert eot not in [model.generation_config.eos_token_id]  # the base config alone would not stop
    config = generation.make_generation_config(model, tokenizer, num_beams=1, max_new_tokens=12)
    assert eot in config.eos_token_id and tokenizer.eos_token_id in config.eos_token_id

    class ForceEndOfTurnAt(LogitsProcessor):
        def __init__(self, prompt_len, step):
            self.prompt_len, self.step = prompt_len, step

        def __call__(self, input_ids, scores):
            scores = scores.clone()
            if input_ids.shape[1] - self.prompt_len == self.step:
                scores[:, :] = -float("inf")
                scores[:, eot] = 0.0
            else:  # no stop token elsewhere, so the run length shows what stopped it
                scores[:, [eot, tokenizer.eos_token_id]] = -float("inf")
            return scores

    [prompt] = ChatPrompter().prompts(tokenizer, [{"instruction": Q1}])
    inputs = tokenizer([prompt], return_tensors="pt")
    n = inputs["input_ids"].shape[1]
    force = LogitsProcessorList([ForceEndOfTurnAt(n, 3)])
    with torch.no_grad():
        stopped = model.generate(**inputs, generation_config=config, logits_processor=force)[0, n:].tolist()
        config.eos_token_id = [tokenizer.eos_token_id]
        ran_on = model.generate(**inputs, generation_config=config, logits_processor=force)[0, n:].tolist()
    assert len(stopped) == 4 and stopped[-1] == eot
    assert len(ran_on) == 12 and ran_on[3] == eot


EXPECTED_TARGETS = {
    "llama3": ["q_proj", "v_proj"],
    "qwen2": ["q_proj", "v_proj"],
    "gemma": ["q_proj", "v_proj"],
    "bloom": ["query_key_value"],
    "gpt_neox": ["query_key_value"],
}


@pytest.mark.parametrize("name", EXPECTED_TARGETS)
def test_lora_targets_by_architecture(arch, name):
    from transformers import AutoModelForCausalLM

    path, _ = arch(name)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert loading.resolve_lora_targets(model, "auto") == EXPECTED_TARGETS[name]
    assert loading.resolve_lora_targets(model, ["all-linear"]) == "all-linear"
    names = loading.linear_layer_names(model)
    assert set(EXPECTED_TARGETS[name]) <= set(names) and "lm_head" not in names and "embed_out" not in names
    wrong = "query_key_value" if name in ("llama3", "qwen2", "gemma") else "q_proj"
    with pytest.raises(
        ValueError, match=rf"{wrong}: no such linear layer .* its linear layers are .*{EXPECTED_TARGETS[name][0]}"
    ):
        loading.resolve_lora_targets(model, [wrong])


def test_pad_token_never_hard_coded(arch):
    _, qwen = arch("qwen2")  # no pad, no unk: eos pads (the mask, not the id, hides padding)
    assert qwen.pad_token == "<|endoftext|>"
    path, _ = arch("llama3")
    from transformers import AutoTokenizer

    llama3 = AutoTokenizer.from_pretrained(path)
    llama3.add_special_tokens({"additional_special_tokens": ["<|finetune_right_pad_id|>"]})
    assert llama3.pad_token is None and llama3.unk_token is None
    loading.resolve_pad_token(llama3)  # Llama-3.1 reserves a pad token: use it rather than eos
    assert llama3.pad_token == "<|finetune_right_pad_id|>" and llama3.pad_token_id not in (0, llama3.eos_token_id)


def test_demo_and_training_review_render_chat_prompts(arch):
    """generate.py's multi-turn prompt and the sample-answer callback go through the chat template too."""
    import generate

    _, tokenizer = arch("qwen2")
    prompter = ChatPrompter(SYS)
    history = [
        {"role": "user", "content": RECORDS["messages"]["messages"][0]["content"]},
        {"role": "assistant", "content": RECORDS["messages"]["messages"][1]["content"]},
    ]
    question = RECORDS["messages"]["messages"][2]["content"]
    prompt, dropped = generate.fit_prompt(tokenizer, prompter, history, question, "", 8, None)
    assert dropped == 0
    assert prompt == prompter.prompts(tokenizer, [{"messages": RECORDS["messages"]["messages"][:3]}])[0]
    assert prompt.count("<|im_start|>assistant") == 2 and prompt.endswith("<|im_start|>assistant\n")
