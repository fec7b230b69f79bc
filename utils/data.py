"""Read and validate instruction data; tokenize records and mask their labels.

Data files hold records ``{"instruction", "input", "output"}`` (``input`` may be missing, empty or
null; extra fields are kept and ignored), either as JSON Lines (the seed's ``llama_data.json``) or as
one JSON array (the seed's ``liver_cancer.json``). Every problem is reported as
``FILE:LINE: field 'NAME': what is wrong`` so a hand-edited file can be fixed without guessing.
"""

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100  # label value the loss ignores (prompt tokens, padding)


class DataError(ValueError):
    """A data file problem; the message names the file, the line and the field."""


@dataclass
class LoadedData:
    records: list[dict]
    lines: list[int]  # line in the file where each record starts
    skipped: list[str] = field(default_factory=list)  # one message per bad record skipped


# ----------------------------------------------------------------------------------------------
# reading


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _iter_json_array(path: Path, text: str):
    """Yield (line, value) for each element of a top-level JSON array, keeping line numbers."""
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1
    n = len(text)
    expect_value = True
    while True:
        while pos < n and text[pos] in " \t\r\n":
            pos += 1
        if pos >= n:
            raise DataError(f"{path}:{_line_of(text, pos)}: invalid JSON: the array is not closed with ']'")
        if text[pos] == "]":
            rest = text[pos + 1 :].strip()
            if rest:
                raise DataError(f"{path}:{_line_of(text, pos + 1)}: invalid JSON: extra data after the array")
            return
        if not expect_value:
            if text[pos] != ",":
                raise DataError(f"{path}:{_line_of(text, pos)}: invalid JSON: expected ',' or ']' between records")
            pos += 1
            expect_value = True
            continue
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{err.lineno}: invalid JSON: {err.msg} (column {err.colno})") from None
        yield _line_of(text, pos), value
        pos = end
        expect_value = False


def _iter_json_lines(path: Path, text: str):
    for lineno, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            yield lineno, json.loads(raw)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{lineno}: invalid JSON: {err.msg} (column {err.colno})") from None


def check_record(record, require_output: bool = True) -> str | None:
    """Return ``"field 'x': problem"`` for an invalid record, or None when it is usable."""
    if not isinstance(record, dict):
        return f"record: expected a JSON object with 'instruction' and 'output', got {type(record).__name__}"
    for name in ("instruction", "output") if require_output else ("instruction",):
        value = record.get(name)
        if name not in record:
            return f"field '{name}': missing"
        if not isinstance(value, str):
            return f"field '{name}': expected a string, got {type(value).__name__}"
        if not value.strip():
            return f"field '{name}': empty"
    if "output" in record and not require_output and not isinstance(record["output"], (str, type(None))):
        return f"field 'output': expected a string, got {type(record['output']).__name__}"
    value = record.get("input")
    if value is not None and not isinstance(value, str):
        return f"field 'input': expected a string or null, got {type(value).__name__}"
    return None


def load_records(path: str | Path, require_output: bool = True, on_bad_record: str = "error") -> LoadedData:
    """Read and validate a data file (JSON Lines or a JSON array).

    ``on_bad_record="error"`` raises :class:`DataError` at the first bad record;
    ``"skip"`` leaves bad records out and lists each in ``LoadedData.skipped``.
    """
    if on_bad_record not in ("error", "skip"):
        raise ValueError(f"on_bad_record must be 'error' or 'skip', got {on_bad_record!r}")
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: data file not found")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not valid UTF-8 (byte 0x{raw[err.start]:02x} at offset {err.start})") from None
    if not text.strip():
        raise DataError(f"{path}:1: the file is empty")

    items = _iter_json_array(path, text) if text.lstrip().startswith("[") else _iter_json_lines(path, text)
    loaded = LoadedData(records=[], lines=[])
    for lineno, record in items:
        problem = check_record(record, require_output)
        if problem:
            message = f"{path}:{lineno}: {problem}"
            if on_bad_record == "error":
                raise DataError(message)
            loaded.skipped.append(message)
            continue
        loaded.records.append(record)
        loaded.lines.append(lineno)
    if loaded.skipped:
        logger.warning("%s: skipped %d bad record(s); first: %s", path, len(loaded.skipped), loaded.skipped[0])
    if not loaded.records:
        raise DataError(f"{path}: no usable records" + (f" ({len(loaded.skipped)} skipped)" if loaded.skipped else ""))
    return loaded


# ----------------------------------------------------------------------------------------------
# tokenization and label masking


def _common_prefix_len(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _assemble(prompt_ids: list[int], full_ids: list[int], eos: int, cutoff_len: int, train_on_inputs: bool) -> dict:
    if full_ids and full_ids[-1] == eos:  # tokenizers configured with add_eos_token=True
        full_ids = full_ids[:-1]
    n_prompt = _common_prefix_len(prompt_ids, full_ids)
    if len(full_ids) + 1 <= cutoff_len:
        input_ids = full_ids + [eos]
    else:
        input_ids = full_ids[:cutoff_len]
    labels = list(input_ids)
    if not train_on_inputs:
        n_masked = min(n_prompt, len(labels))
        labels[:n_masked] = [IGNORE_INDEX] * n_masked
    return {"input_ids": input_ids, "labels": labels}


def _eos_id(tokenizer, eos_token_id: int | None) -> int:
    eos = tokenizer.eos_token_id if eos_token_id is None else eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no eos token; pass eos_token_id")
    return eos


def tokenize_example(
    tokenizer,
    prompt: str,
    response: str,
    cutoff_len: int,
    train_on_inputs: bool = False,
    eos_token_id: int | None = None,
) -> dict:
    """Token ids and labels for ``prompt`` followed by ``response``.

    * The whole text is tokenized at once (as the model will see it), with the tokenizer's own
      special tokens (bos for LLaMA, none for Qwen). The prompt's tokens are those it shares
      with the tokenization of the prompt alone; they get label -100 unless ``train_on_inputs``.
    * EOS is appended when the full text plus EOS fits in ``cutoff_len``. A longer example is cut to
      ``cutoff_len`` tokens with no EOS: its answer is unfinished, so it must not learn to stop there.
    * The unmasked labels are therefore exactly the response tokens plus EOS (or the response tokens
      that fit).
    """
    eos = _eos_id(tokenizer, eos_token_id)
    prompt_ids = tokenizer(prompt)["input_ids"]
    full_ids = tokenizer(prompt + response)["input_ids"]
    return _assemble(prompt_ids, full_ids, eos, cutoff_len, train_on_inputs)


def tokenize_records(tokenizer, prompter, records: list[dict], cutoff_len: int, train_on_inputs: bool = False):
    """:func:`tokenize_example` for every record, with batched tokenizer calls.

    Returns (examples, dropped): ``dropped`` counts records whose prompt alone fills
    ``cutoff_len``, leaving no answer token to learn from.
    """
    eos = _eos_id(tokenizer, None)
    if not records:  # e.g. val_set_size=0; the tokenizer fails on an empty batch
        return [], 0
    prompts = [prompter.generate_prompt(r["instruction"], r.get("input")) for r in records]
    prompt_ids = tokenizer(prompts)["input_ids"]
    full_ids = tokenizer([p + r["output"] for p, r in zip(prompts, records)])["input_ids"]
    examples, dropped = [], 0
    for p_ids, f_ids in zip(prompt_ids, full_ids):
        example = _assemble(p_ids, f_ids, eos, cutoff_len, train_on_inputs)
        if train_on_inputs or any(label != IGNORE_INDEX for label in example["labels"]):
            examples.append(example)
        else:
            dropped += 1
    return examples, dropped
