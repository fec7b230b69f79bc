"""Hostile input: a corpus of malformed data files, each an error naming file, line and field, or
(with on_bad_record="skip") left out and counted. Never a traceback, never a silent drop."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from utils.data.records import DataError, load_records

REPO_ROOT = Path(__file__).resolve().parent.parent
GOOD = '{"instruction": "发烧怎么办？", "input": "", "output": "多喝水，必要时就医。"}'
GOOD2 = '{"instruction": "头痛的原因", "output": "紧张、睡眠不足等。"}'


def lines(*rows: str) -> bytes:
    return ("\n".join(rows) + "\n").encode("utf-8")


# name -> (file bytes, expectation)
#   ("ok", n)                           accepted: n records
# ("bad", line, fragment, kept)       error at `line` whose message holds `fragment`; skip mode keeps `kept`, skips the
# rest
#   ("fatal", line, fragment)           an error in both modes (the file's structure is broken)
CASES = {
    "bom": (b"\xef\xbb\xbf" + lines(GOOD, GOOD2), ("ok", 2)),
    "crlf": (lines(GOOD, GOOD2).replace(b"\n", b"\r\n"), ("ok", 2)),
    "bom_crlf_array": (b"\xef\xbb\xbf[\r\n" + GOOD.encode() + b",\r\n" + GOOD2.encode() + b"\r\n]\r\n", ("ok", 2)),
    "blank_lines": (b"\n\n" + lines(GOOD, "", "   ", GOOD2), ("ok", 2)),
    "u2028_in_string": (lines(GOOD, '{"instruction": "a\u2028b", "output": "c\u2029d"}'), ("ok", 2)),
    "null_input": (lines('{"instruction": "问", "input": null, "output": "答"}'), ("ok", 1)),
    "extra_fields": (lines('{"instruction": "问", "output": "答", "source": {"book": "x"}, "id": 3}'), ("ok", 1)),
    "long_record": (
        lines(GOOD, json.dumps({"instruction": "问", "output": "很长的回答。" * 3000}, ensure_ascii=False)),
        ("ok", 2),
    ),
    "invalid_json": (lines(GOOD, '{"instruction": "a" "output": "b"}', GOOD2), ("bad", 2, "invalid JSON", 2)),
    "truncated_last_line": (lines(GOOD, GOOD2)[:-1] + b'\n{"instruction": "x", "outp', ("bad", 3, "invalid JSON", 2)),
    "trailing_comma_object": (lines(GOOD, '{"instruction": "a", "output": "b",}'), ("bad", 2, "invalid JSON", 1)),
    "trailing_comma_array": (("[" + GOOD + ",\n" + GOOD2 + ",\n]").encode(), ("fatal", 3, "trailing comma")),
    "array_not_closed": (("[" + GOOD + ",\n" + GOOD2 + "\n").encode(), ("fatal", 3, "not closed")),
    "array_syntax_error": (("[" + GOOD + ',\n{"instruction": }\n]').encode(), ("fatal", 2, "invalid JSON")),
    "mixed_array_then_lines": (("[" + GOOD + "]\n" + GOOD2 + "\n").encode(), ("fatal", 2, "not both")),
    "mixed_lines_then_array": (lines(GOOD, "[" + GOOD2 + "]"), ("bad", 2, "got list", 1)),
    "missing_output": (lines(GOOD, '{"instruction": "a"}'), ("bad", 2, "field 'output': missing", 1)),
    "missing_instruction": (lines('{"output": "b"}', GOOD), ("bad", 1, "field 'instruction': missing", 1)),
    "empty_output": (lines(GOOD, '{"instruction": "a", "output": ""}'), ("bad", 2, "field 'output': empty", 1)),
    "whitespace_instruction": (
        lines(GOOD, '{"instruction": " \\t\\n", "output": "b"}'),
        ("bad", 2, "field 'instruction': empty", 1),
    ),
    "output_number": (
        lines(GOOD, '{"instruction": "a", "output": 42}'),
        ("bad", 2, "field 'output': expected a string, got int", 1),
    ),
    "instruction_list": (
        lines('{"instruction": ["a"], "output": "b"}', GOOD),
        ("bad", 1, "field 'instruction': expected a string", 1),
    ),
    "input_nested_object": (
        lines(GOOD, '{"instruction": "a", "input": {"age": 5}, "output": "b"}'),
        ("bad", 2, "field 'input'", 1),
    ),
    "output_nested_object": (
        lines(GOOD, '{"instruction": "a", "output": {"text": "b"}}'),
        ("bad", 2, "field 'output': expected a string, got dict", 1),
    ),
    "output_null": (
        lines(GOOD, '{"instruction": "a", "output": null}'),
        ("bad", 2, "field 'output': expected a string, got NoneType", 1),
    ),
    "duplicate_key": (
        lines(GOOD, '{"instruction": "a", "output": "b", "output": "c"}'),
        ("bad", 2, "field 'output': duplicate key", 1),
    ),
    "nan_value": (
        lines(GOOD, '{"instruction": "a", "output": "b", "score": NaN}'),
        ("bad", 2, "field 'score': NaN", 1),
    ),
    "infinity_output": (
        lines(GOOD, '{"instruction": "a", "output": Infinity}'),
        ("bad", 2, "field 'output': Infinity", 1),
    ),
    "huge_number": (lines(GOOD, '{"instruction": "a", "output": "b", "w": 1e999}'), ("bad", 2, "field 'w': 1e999", 1)),
    "record_is_string": (lines('"just text"', GOOD), ("bad", 1, "expected a JSON object", 1)),
    "record_is_null": (lines(GOOD, "null"), ("bad", 2, "got NoneType", 1)),
    "array_of_arrays": (("[[" + GOOD + "]]").encode(), ("bad", 1, "got list", 0)),
    "non_utf8_line": (
        lines(GOOD) + b'{"instruction": "\xb2\xa1", "output": "b"}\n' + lines(GOOD2),
        ("bad", 2, "not valid UTF-8", 2),
    ),
    "gbk_file": ('{"instruction": "发烧", "output": "喝水"}\n'.encode("gbk"), ("bad", 1, "not valid UTF-8", 0)),
    "utf16_file": (lines(GOOD).decode().encode("utf-16"), ("bad", 1, "not valid UTF-8", 0)),
    "non_utf8_array": (
        b"[" + GOOD.encode() + b',\n{"instruction": "\xff", "output": "b"}]',
        ("fatal", 2, "not valid UTF-8"),
    ),
    "lone_surrogate": (lines(GOOD, '{"instruction": "a\\ud800", "output": "b"}'), ("bad", 2, "field 'instruction'", 1)),
    "raw_control_char": (lines(GOOD, '{"instruction": "a\x01b", "output": "c"}'), ("bad", 2, "invalid JSON", 1)),
    "bom_in_middle": (lines(GOOD) + b"\xef\xbb\xbf" + lines(GOOD2), ("bad", 2, "invalid JSON", 1)),
    "two_records_one_line": (lines(GOOD + " " + GOOD2), ("bad", 1, "extra data", 0)),
    "deep_nesting": (lines(GOOD, "[" * 100000 + "]" * 100000), ("bad", 2, "invalid JSON", 1)),
    "empty_file": (b"", ("fatal", 1, "empty")),
    "whitespace_file": (b"\n \r\n\t\n", ("fatal", 1, "empty")),
    "empty_array": (b"[]", ("fatal", None, "no usable records")),
}


def write_case(tmp_path, name):
    path = tmp_path / f"{name}.json"
    path.write_bytes(CASES[name][0])
    return path


@pytest.mark.parametrize("name", sorted(CASES))
def test_malformed_corpus(tmp_path, name):
    path = write_case(tmp_path, name)
    expect = CASES[name][1]
    if expect[0] == "ok":
        assert len(load_records(path).records) == expect[1]
        assert len(load_records(path, on_bad_record="skip").skipped) == 0
        return
    with pytest.raises(DataError) as err:
        load_records(path)
    message = str(err.value)
    line, fragment = expect[1], expect[2]
    assert message.startswith(f"{path}:{line}:" if line else f"{path}:"), message
    assert fragment in message, message
    if expect[0] == "fatal":
        with pytest.raises(DataError):
            load_records(path, on_bad_record="skip")
        return
    kept = expect[3]
    if kept == 0:
        with pytest.raises(DataError, match=r"no usable records \(\d+ skipped\)"):
            load_records(path, on_bad_record="skip")
        return
    loaded = load_records(path, on_bad_record="skip")
    assert len(loaded.records) == kept
    assert loaded.skipped and loaded.skipped[0].startswith(f"{path}:{line}:") and fragment in loaded.skipped[0]
    # nothing dropped silently: every non-blank line (JSON Lines) is either kept or counted
    raw_lines = [l for l in path.read_bytes().split(b"\n") if l.strip()]
    if not path.read_bytes().lstrip(b"\xef\xbb\xbf \r\n").startswith(b"["):
        assert len(loaded.records) + len(loaded.skipped) == len(raw_lines)


def test_corpus_is_large_enough():
    assert sum(1 for _, expect in CASES.values() if expect[0] != "ok") >= 25


def test_a_record_beyond_cutoff_len_is_cut_and_counted(tokenizer, tmp_path):
    from utils.data.prompter import Prompter, tokenize_records

    records = load_records(write_case(tmp_path, "long_record")).records
    examples, dropped = tokenize_records(tokenizer, Prompter(), records, cutoff_len=64)
    assert dropped == 0 and len(examples[1]["input_ids"]) == 64
    assert examples[1]["input_ids"][-1] != tokenizer.eos_token_id  # cut: no EOS (finetune.py counts these)


SCRIPT_CASES = [
    "invalid_json",
    "duplicate_key",
    "non_utf8_line",
    "nan_value",
    "empty_file",
    "mixed_array_then_lines",
    "deep_nesting",
]


@pytest.mark.slow
@pytest.mark.parametrize("script", ["finetune.py", "infer.py"])
def test_scripts_report_bad_files_in_one_line(tmp_path, script):
    """Through the real command line: exit code 2, one line naming file:line, no traceback."""
    flag = "--data_path" if script == "finetune.py" else "--instruct_dir"
    for name in SCRIPT_CASES:
        path = write_case(tmp_path, name)
        result = subprocess.run(
            [sys.executable, script, flag, str(path)], capture_output=True, text=True, cwd=REPO_ROOT, timeout=300
        )
        assert result.returncode == 2, (name, result.stderr[-2000:])
        assert "Traceback" not in result.stderr, (name, result.stderr[-2000:])
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith(f"error: {path}:"), (name, last)


@pytest.mark.slow
def test_finetune_skip_mode_counts_skipped_records_in_run_config(tiny_base, train_file, tmp_path):
    lines_ = train_file.read_bytes().split(b"\n")
    lines_[3] = b'{"instruction": "a", "output": "b", "output": "c"}'
    lines_[7] = b'{"instruction": "\xff"'
    data = tmp_path / "dirty.json"
    data.write_bytes(b"\n".join(lines_))
    out = tmp_path / "out"
    result = subprocess.run(
        [
            sys.executable,
            "finetune.py",
            "--base_model",
            tiny_base,
            "--data_path",
            str(data),
            "--output_dir",
            str(out),
            "--on_bad_record",
            "skip",
            "--val_set_size",
            "8",
            "--micro_batch_size",
            "4",
            "--batch_size",
            "4",
            "--cutoff_len",
            "64",
            "--max_steps",
            "1",
            "--wandb_project=",
        ],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 bad record(s) skipped, 158 kept" in result.stderr
    config = json.loads((out / "run_config.json").read_text())
    assert config["data"]["skipped_records"] == 2 and config["data"]["records"] == 158
    assert config["data"]["skipped"][0].startswith(f"{data}:4: field 'output': duplicate key")
