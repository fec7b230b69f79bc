"""Read and validate data files: instruction records, questions and infer.py results.

Data files hold records ``{"instruction", "input", "output"}`` (``input`` may be missing, empty or
null; extra fields are kept and ignored), either as JSON Lines (HuaTuo's ``llama_data.json``) or as
one JSON array (HuaTuo's ``liver_cancer.json``). Every problem is reported as
``FILE:LINE: field 'NAME': what is wrong`` so a hand-edited file can be fixed without guessing.
"""

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from utils.cli import UserError

logger = logging.getLogger(__name__)

ROLES = ("system", "user", "assistant")


class DataError(UserError):
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


class _Decoder(json.JSONDecoder):
    """Strict JSON: a duplicate key, NaN/Infinity or an out-of-range number is a problem that names
    the field (plain ``json`` keeps the last duplicate and accepts NaN silently)."""

    def __init__(self):
        self.problems: list[str] = []
        super().__init__(object_pairs_hook=self._object, parse_constant=self._constant, parse_float=self._float)

    def _constant(self, name):
        return _NonFinite(name)

    def _float(self, text):
        value = float(text)
        return value if value not in (float("inf"), float("-inf")) else _NonFinite(text)

    def _object(self, pairs):
        obj = {}
        for key, value in pairs:
            if key in obj:
                self.problems.append(f"field '{key}': duplicate key (it appears twice in the record; keep one)")
            bad = [v for v in (value if isinstance(value, list) else [value]) if isinstance(v, _NonFinite)]
            if bad:
                self.problems.append(f"field '{key}': {bad[0]} is not a valid JSON number (use null, a number or a " f"string)")
            obj[key] = value
        return obj

    def decode_value(self, text: str, pos: int = 0):
        """(value, end, problem): ``problem`` is None or ``"field 'x': ..."``; JSON syntax errors raise."""
        self.problems = []
        try:
            value, end = self.raw_decode(text, pos)
        except RecursionError:
            raise json.JSONDecodeError("nested too deeply", text, pos) from None
        if isinstance(value, _NonFinite):
            self.problems.append(f"record: {value} is not a valid JSON value")
        return value, end, (self.problems[0] if self.problems else None)


class _NonFinite:
    def __init__(self, text):
        self.text = text

    def __str__(self):
        return self.text


def _iter_json_array(path: Path, text: str):
    """Yield (line, value, problem) for each element of a top-level JSON array, keeping line numbers.

    A syntax error inside an array cannot be skipped (where the next record starts is unknown), so
    it is an error even with on_bad_record="skip"."""
    decoder = _Decoder()
    pos = text.index("[") + 1
    n = len(text)
    expect_value = True
    after_comma = False
    while True:
        while pos < n and text[pos] in " \t\r\n":
            pos += 1
        if pos >= n:
            raise DataError(f"{path}:{_line_of(text, pos)}: invalid JSON: the array is not closed with ']'")
        if text[pos] == "]":
            if after_comma:
                raise DataError(f"{path}:{_line_of(text, pos)}: invalid JSON: trailing comma before ']'")
            rest = text[pos + 1 :].strip()
            if rest:
                raise DataError(
                    f"{path}:{_line_of(text, pos + 1 + text[pos + 1:].index(rest[0]))}: invalid JSON: extra data after "
                    "the array (a file is either one JSON array or JSON Lines, not both)"
                )
            return
        if not expect_value:
            if text[pos] != ",":
                raise DataError(f"{path}:{_line_of(text, pos)}: invalid JSON: expected ',' or ']' between records")
            pos += 1
            expect_value = after_comma = True
            continue
        try:
            value, end, problem = decoder.decode_value(text, pos)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{err.lineno}: invalid JSON: {err.msg} (column {err.colno})") from None
        yield _line_of(text, pos), value, problem
        pos = end
        expect_value = after_comma = False


def _iter_json_lines(path: Path, raw: bytes):
    """Yield (line, value, problem) per non-blank line; a line that is not JSON is a problem of its record."""
    decoder = _Decoder()
    for lineno, line in enumerate(raw.split(b"\n"), start=1):
        try:  # decoded per line, so that one bad byte costs one record under on_bad_record="skip"
            text = line.decode("utf-8-sig" if lineno == 1 else "utf-8").rstrip("\r")
        except UnicodeDecodeError as err:
            yield lineno, None, f"not valid UTF-8 (byte 0x{line[err.start]:02x} at column {err.start + 1})"
            continue
        if not text.strip():
            continue
        try:
            value, end, problem = decoder.decode_value(text.strip())
            if end != len(text.strip()):
                raise json.JSONDecodeError("extra data after the record (one record per line)", text.strip(), end)
        except json.JSONDecodeError as err:
            yield lineno, None, f"invalid JSON: {err.msg} (column {err.colno})"
            continue
        yield lineno, value, problem


def check_record(record, require_output: bool = True) -> str | None:
    """Return ``"field 'x': problem"`` for an invalid record, or None when it is usable."""
    if not isinstance(record, dict):
        return f"record: expected a JSON object with 'instruction' and 'output', got {type(record).__name__}"
    if "messages" in record:  # chat records (utils/data/chat.py)
        return check_chat_fields(record, require_output)
    for name in ("instruction", "output") if require_output else ("instruction",):
        value = record.get(name)
        if name not in record:
            return f"field '{name}': missing"
        if not isinstance(value, str):
            return f"field '{name}': expected a string, got {type(value).__name__}"
        if not value.strip():
            return f"field '{name}': empty"
    for name, value in record.items():
        if isinstance(value, str) and not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return f"field '{name}': holds an invalid \\u escape (a lone UTF-16 surrogate)"
    if "output" in record and not require_output and not isinstance(record["output"], (str, type(None))):
        return f"field 'output': expected a string, got {type(record['output']).__name__}"
    value = record.get("input")
    if value is not None and not isinstance(value, str):
        return f"field 'input': expected a string or null, got {type(value).__name__}"
    return check_chat_fields(record, require_output)  # optional 'history' and 'system' fields


def load_records(
    path: str | Path, require_output: bool = True, on_bad_record: str = "error", check=None
) -> LoadedData:
    """Read and validate a data file (JSON Lines or a JSON array).

    ``on_bad_record="error"`` raises :class:`DataError` at the first bad record;
    ``"skip"`` leaves bad records out and lists each in ``LoadedData.skipped``.
    ``check(record) -> "field 'x': problem" | None`` replaces :func:`check_record` for other
    record kinds (the judge's open questions).
    """
    if on_bad_record not in ("error", "skip"):
        raise UserError(f"on_bad_record must be 'error' or 'skip', got {on_bad_record!r}")
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: data file not found")
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"{path}:1: the file is empty")
    if raw.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"["):
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            line = raw[: err.start].count(b"\n") + 1
            raise DataError(f"{path}:{line}: not valid UTF-8 (byte 0x{raw[err.start]:02x} at offset {err.start})") from None
        items = _iter_json_array(path, text)
    else:
        items = _iter_json_lines(path, raw)

    loaded = LoadedData(records=[], lines=[])
    for lineno, record, problem in items:
        problem = problem or (check(record) if check else check_record(record, require_output))
        if problem:
            message = f"{path}:{lineno}: {problem}"
            if on_bad_record == "error":  # the hint names the flag of the scripts that read data records
                raise DataError(message + ("" if check else " (pass --on_bad_record skip to leave bad records out)"))
            loaded.skipped.append(message)
            continue
        loaded.records.append(record)
        loaded.lines.append(lineno)
    if loaded.skipped:
        for message in loaded.skipped[:20]:
            logger.warning("skipped: %s", message)
        logger.warning(
            "%s: %d bad record(s) skipped, %d kept%s", path, len(loaded.skipped), len(loaded.records),
            " (first 20 listed above)" if len(loaded.skipped) > 20 else "",
        )
    if not loaded.records:
        raise DataError(f"{path}: no usable records" + (f" ({len(loaded.skipped)} skipped)" if loaded.skipped else ""))
    return loaded


def check_chat_fields(record: dict, require_output: bool = True) -> str | None:
    """``"field 'x': problem"`` for bad ``messages`` / ``history`` / ``system`` fields, else None."""
    if record.get("system") is not None and not isinstance(record["system"], str):
        return f"field 'system': expected a string or null, got {type(record['system']).__name__}"
    if "history" in record and record["history"] is not None:
        history = record["history"]
        if not isinstance(history, list):
            return f"field 'history': expected a list of [user, assistant] pairs, got {type(history).__name__}"
        for i, pair in enumerate(history):
            if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(t, str) for t in pair)):
                return f"field 'history[{i}]': expected a [user, assistant] pair of strings"
    if "messages" not in record:
        return None
    messages = record["messages"]
    if not isinstance(messages, list) or not messages:
        return "field 'messages': expected a non-empty list of {role, content} objects"
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            return f"field 'messages[{i}]': expected an object with 'role' and 'content'"
        if message.get("role") not in ROLES:
            return f"field 'messages[{i}].role': expected one of {', '.join(ROLES)}, got {message.get('role')!r}"
        if not isinstance(message.get("content"), str):
            return f"field 'messages[{i}].content': expected a string, got {type(message.get('content')).__name__}"
        if message["role"] == "system" and i > 0:
            return f"field 'messages[{i}].role': a system message may only come first"
        if message["role"] != "system" and not message["content"].strip():
            return f"field 'messages[{i}].content': empty"
    turns = [m["role"] for m in messages if m["role"] != "system"]
    if not turns or turns[0] != "user":
        return "field 'messages': the first message after the system one must be a user message"
    if require_output and turns[-1] != "assistant":
        return "field 'messages': the last message must be an assistant message (the answer to learn)"
    return None


def question_of(record: dict) -> str:
    """The question a record asks, for printing and tables: ``instruction`` (and ``input`` on its own
    line when non-empty), or the last user message of a ``messages`` record."""
    if "instruction" in record:
        return record["instruction"] + (f"\n{record['input']}" if record.get("input") else "")
    return [m["content"] for m in record["messages"] if m["role"] == "user"][-1]


# ----------------------------------------------------------------------------------------------
# infer.py results (read by the score script, compare.py and judge.py)


def check_result(record) -> str | None:
    """``"field 'x': problem"`` for a record that is not an infer.py result, else None."""
    problem = check_record(record, require_output=False)
    if problem:
        return problem
    if not isinstance(record.get("model_output"), str):
        return "field 'model_output': missing or not a string (expected infer.py --output_file results)"
    facts = record.get("facts")
    if facts is not None and not (isinstance(facts, list) and all(isinstance(f, dict) and "value" in f for f in facts)):
        return "field 'facts': expected a list of {\"field\", \"value\"} objects"
    return None


def read_results(path: str | Path) -> LoadedData:
    """An ``infer.py --output_file`` results file: every record has a question and a string ``model_output``."""
    return load_records(path, check=check_result)


# ----------------------------------------------------------------------------------------------
# the validation split

SPLIT_SEED = 2023  # HuaTuo's; the split does not move with --seed


def split_validation(records: list, val_set_size: int, source: str = "the data") -> tuple[list, list]:
    """(train, validation): ``val_set_size`` records held out by a fixed permutation (seed 2023, as the
    seed's ``train_test_split``); the training records keep that shuffled order."""
    import numpy as np

    if not 0 <= val_set_size < len(records):
        raise UserError(f"val_set_size ({val_set_size}) must be at least 0 and smaller than the {len(records)} " f"records of {source}")
    order = np.random.default_rng(SPLIT_SEED).permutation(len(records))
    return [records[i] for i in order[val_set_size:]], [records[i] for i in order[:val_set_size]]
