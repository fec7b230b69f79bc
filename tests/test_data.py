import json
import subprocess
import sys

import pytest
from conftest import REPO_ROOT, seed_file, write_jsonl

from utils.data.prompter import IGNORE_INDEX, Prompter, tokenize_example, tokenize_records
from utils.data.records import DataError, load_records

PROMPTER = Prompter("med_template")
RECORD = {"instruction": "高血压患者需要注意什么？", "input": "", "output": "低盐饮食，规律服药，定期测量血压。"}


def expected(tokenizer, prompt, response):
    """Independent statement of the rule: prompt tokens masked, then the response tokens, then EOS."""
    prompt_ids = tokenizer.encode(prompt)
    full_ids = tokenizer.encode(prompt + response)
    assert full_ids[: len(prompt_ids)] == prompt_ids, "the template must end at a token boundary"
    response_ids = full_ids[len(prompt_ids) :]
    return full_ids + [tokenizer.eos_token_id], [IGNORE_INDEX] * len(prompt_ids) + response_ids + [
        tokenizer.eos_token_id
    ]


def test_labels_are_exactly_response_tokens_plus_eos(tokenizer):
    prompt = PROMPTER.generate_prompt(RECORD["instruction"])
    example = tokenize_example(tokenizer, prompt, RECORD["output"], cutoff_len=256)
    ids, labels = expected(tokenizer, prompt, RECORD["output"])
    assert example["input_ids"] == ids
    assert example["labels"] == labels
    assert example["input_ids"][0] == tokenizer.bos_token_id
    unmasked = [t for t in example["labels"] if t != IGNORE_INDEX]
    assert unmasked[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(unmasked[:-1]) == RECORD["output"]


def test_train_on_inputs_keeps_every_label(tokenizer):
    prompt = PROMPTER.generate_prompt(RECORD["instruction"])
    example = tokenize_example(tokenizer, prompt, RECORD["output"], cutoff_len=256, train_on_inputs=True)
    assert example["labels"] == example["input_ids"]


def test_cutoff_boundaries_have_no_off_by_one(tokenizer):
    prompt = PROMPTER.generate_prompt(RECORD["instruction"])
    ids, labels = expected(tokenizer, prompt, RECORD["output"])
    n = len(ids)  # text + EOS
    fits = tokenize_example(tokenizer, prompt, RECORD["output"], cutoff_len=n)
    assert fits["input_ids"] == ids and fits["labels"] == labels
    # one token short: the text is cut to cutoff_len and gets no EOS (its answer is unfinished)
    cut = tokenize_example(tokenizer, prompt, RECORD["output"], cutoff_len=n - 1)
    assert cut["input_ids"] == ids[: n - 1] and cut["labels"] == labels[: n - 1]
    assert tokenizer.eos_token_id not in cut["input_ids"]
    cut5 = tokenize_example(tokenizer, prompt, RECORD["output"], cutoff_len=n - 5)
    assert len(cut5["input_ids"]) == n - 5 and cut5["labels"] == labels[: n - 5]


def test_records_whose_prompt_fills_cutoff_are_counted_not_hidden(tokenizer):
    long = dict(RECORD, instruction="很长的问题" * 100)
    examples, dropped = tokenize_records(tokenizer, PROMPTER, [RECORD, long, RECORD], cutoff_len=64)
    assert dropped == 1 and len(examples) == 2


def test_batched_tokenization_equals_per_example(tokenizer):
    records = [RECORD, dict(RECORD, input="补充信息：65岁"), dict(RECORD, output="只答一句。")]
    examples, _ = tokenize_records(tokenizer, PROMPTER, records, cutoff_len=40)
    for record, example in zip(records, examples):
        prompt = PROMPTER.generate_prompt(record["instruction"], record["input"])
        assert example == tokenize_example(tokenizer, prompt, record["output"], cutoff_len=40)


def test_reads_json_lines_and_arrays_with_optional_input(tmp_path):
    records = [
        {"instruction": "问1", "input": "", "output": "答1"},
        {"instruction": "问2", "output": "答2"},
        {"instruction": "问3", "input": None, "output": "答3", "extra": [1]},
    ]
    lines = write_jsonl(tmp_path / "a.json", records)
    array = tmp_path / "b.json"
    array.write_text(json.dumps(records, ensure_ascii=False, indent=2))
    for path in (lines, array):
        loaded = load_records(path)
        assert loaded.records == records
    assert load_records(array).lines == [2, 7, 11]


@pytest.mark.parametrize(
    "content, message",
    [
        (
            '{"instruction": "问", "output": "答"}\n{"instruction": "问", "output": 3}\n',
            r":2: field 'output': expected a string, got int",
        ),
        ('{"instruction": "问", "output": "答"}\n\n{"output": "答"}\n', r":3: field 'instruction': missing"),
        ('{"instruction": "问", "output": "答"}\n{"instruction": "问", "output": "答"\n', r":2: invalid JSON"),
        (
            '[{"instruction": "问", "output": "答"},\n {"instruction": "问", "input": 5, "output": "答"}]',
            r":2: field 'input': expected a string or null",
        ),
        ('{"instruction": "问", "output": "  "}\n', r":1: field 'output': empty"),
        ("", r":1: the file is empty"),
    ],
)
def test_malformed_files_name_file_line_and_field(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=rf"bad\.json{message}"):
        load_records(path)


@pytest.mark.slow
def test_bad_data_on_the_command_line_is_one_clear_line_not_a_traceback(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"instruction": "问", "output": "答"}\n{"instruction": "问", "outptu": "答"}\n', encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "finetune.py"), "--data_path", str(path), "--wandb_project", ""],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert f"{path}:2: field 'output': missing" in result.stderr
    assert "Traceback" not in result.stderr


def test_seed_training_file_loads_completely():
    path = seed_file("llama_data.json")
    loaded = load_records(path)
    assert len(loaded.records) == 8658 and not loaded.skipped
    literature = load_records(seed_file("liver_cancer.json"))
    assert all(r["instruction"].lstrip().startswith("<user>:") for r in literature.records)


def test_no_records_tokenize_to_nothing(tokenizer):
    assert tokenize_records(tokenizer, PROMPTER, [], cutoff_len=64) == ([], 0)
