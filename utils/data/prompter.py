"""Prompters: one interface for text templates and the tokenizer's chat template.

A prompter builds the generation prompts of records, tokenizes training records with their labels
masked, and splits an answer out of a generation, for training and inference alike, so the two
cannot drift. :func:`make_prompter` gives

* :class:`Prompter` for a text template: a data file ``templates/NAME.json`` (schema in
  ``templates/README.md``, found relative to this file so scripts work from any directory);
* :class:`ChatPrompter` for ``chat``: the base model's own chat template (``utils/data/chat.py``).

Both have ``template_name``, ``system_prompt``, ``folds_dialogue`` (single questions are asked in
the literature format, ``utils/data/literature.py``), ``prompts(tokenizer, records)``,
``tokenize(tokenizer, records, cutoff_len, train_on_inputs)`` and ``get_response(text)``; callers
never ask which kind they hold.

Labels: the loss covers the answer and the token that ends it (EOS, or a chat template's end of
turn); prompt tokens get :data:`IGNORE_INDEX` unless ``train_on_inputs``. An example longer than
``cutoff_len`` is cut with no EOS: its answer is unfinished, so it must not learn to stop there.
"""

import json
import logging
from pathlib import Path

from utils.data.chat import CHAT_TEMPLATE_NAME, ChatFormat, common_prefix_len, record_messages
from utils.data.records import DataError
from utils.cli import UserError
from utils.files import REPO_ROOT

logger = logging.getLogger(__name__)

TEMPLATES_DIR = REPO_ROOT / "templates"
DEFAULT_TEMPLATE = "med_template"
REQUIRED_KEYS = ("prompt_input", "prompt_no_input", "response_split")
IGNORE_INDEX = -100  # label value the loss ignores (prompt tokens, padding)


def template_path(name: str) -> Path:
    """``templates/NAME.json`` for a bare name; a path to a JSON file is taken as it is."""
    candidate = Path(name)
    if candidate.suffix == ".json" and candidate.is_file():
        return candidate
    path = TEMPLATES_DIR / f"{name}.json"
    if not path.is_file():
        raise UserError(f"unknown prompt template {name!r}: no file {path} (available: " f"{', '.join(available_templates())}, chat)")
    return path


def available_templates() -> list[str]:
    return sorted(p.stem for p in TEMPLATES_DIR.glob("*.json"))


def make_prompter(name: str = DEFAULT_TEMPLATE, system_prompt: str = ""):
    """The prompter for ``--prompt_template(_name) NAME``: a text template, or ``chat``."""
    if name == CHAT_TEMPLATE_NAME:
        return ChatPrompter(system_prompt)
    if system_prompt:
        raise UserError("--system_prompt is only used with the chat template (--prompt_template chat)")
    return Prompter(name)


def tokenize_records(tokenizer, prompter, records: list[dict], cutoff_len: int, train_on_inputs: bool = False):
    """``prompter.tokenize(...)``: (examples, dropped), where ``dropped`` counts records whose prompt alone
    fills ``cutoff_len``, leaving no answer token to learn from."""
    return prompter.tokenize(tokenizer, records, cutoff_len, train_on_inputs)


def _keep(examples: list[dict]) -> tuple[list[dict], int]:
    kept = [e for e in examples if any(label != IGNORE_INDEX for label in e["labels"])]
    return kept, len(examples) - len(kept)


# ----------------------------------------------------------------------------------------------
# text templates


def _eos_id(tokenizer, eos_token_id: int | None) -> int:
    eos = tokenizer.eos_token_id if eos_token_id is None else eos_token_id
    if eos is None:
        raise UserError("the tokenizer has no eos token; pass eos_token_id")
    return eos


def _assemble(prompt_ids: list[int], full_ids: list[int], eos: int, cutoff_len: int, train_on_inputs: bool) -> dict:
    if full_ids and full_ids[-1] == eos:  # tokenizers configured with add_eos_token=True
        full_ids = full_ids[:-1]
    n_prompt = common_prefix_len(prompt_ids, full_ids)
    if len(full_ids) + 1 <= cutoff_len:
        input_ids = full_ids + [eos]
    else:
        input_ids = full_ids[:cutoff_len]
    labels = list(input_ids)
    if not train_on_inputs:
        n_masked = min(n_prompt, len(labels))
        labels[:n_masked] = [IGNORE_INDEX] * n_masked
    return {"input_ids": input_ids, "labels": labels}


def tokenize_example(tokenizer, prompt: str, response: str, cutoff_len: int, train_on_inputs: bool = False, eos_token_id: int | None = None) -> dict:
    """Token ids and labels for ``prompt`` followed by ``response``.

    The whole text is tokenized at once (as the model will see it), with the tokenizer's own special
    tokens (bos for LLaMA, none for Qwen). The prompt's tokens are those it shares with the
    tokenization of the prompt alone. The unmasked labels are exactly the response tokens plus EOS
    (or the response tokens that fit).
    """
    eos = _eos_id(tokenizer, eos_token_id)
    return _assemble(tokenizer(prompt)["input_ids"], tokenizer(prompt + response)["input_ids"], eos, cutoff_len, train_on_inputs)


class Prompter:
    """A text template of ``templates/``."""

    system_prompt = ""

    def __init__(self, template_name: str = DEFAULT_TEMPLATE):
        self.template_name = template_name or DEFAULT_TEMPLATE
        path = template_path(self.template_name)
        try:
            self.template = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise UserError(f"{path}:{err.lineno}: invalid JSON in prompt template: {err.msg}") from None
        missing = [key for key in REQUIRED_KEYS if not isinstance(self.template.get(key), str)]
        if missing:
            raise UserError(f"{path}: prompt template lacks string field(s) {', '.join(missing)}")
        if "{instruction}" not in self.template["prompt_no_input"]:
            raise UserError(f"{path}: field 'prompt_no_input' must contain {{instruction}}")
        if "{instruction}" not in self.template["prompt_input"] or "{input}" not in self.template["prompt_input"]:
            raise UserError(f"{path}: field 'prompt_input' must contain {{instruction}} and {{input}}")
        self.response_split = self.template["response_split"]
        self.folds_dialogue = bool(self.template.get("folded_dialogue", False))
        logger.info("prompt template %s: %s", self.template_name, self.template.get("description", ""))

    def generate_prompt(self, instruction: str, input: str | None = None, label: str | None = None) -> str:
        """The prompt for ``instruction`` (and ``input`` when non-empty), followed by ``label`` if given."""
        if input:
            prompt = self.template["prompt_input"].format(instruction=instruction, input=input)
        else:
            prompt = self.template["prompt_no_input"].format(instruction=instruction)
        if label:
            prompt = f"{prompt}{label}"
        return prompt

    def prompts(self, tokenizer, records: list[dict]) -> list[str]:
        """Generation prompts of ``records`` (the tokenizer is not needed by a text template)."""
        for i, record in enumerate(records, start=1):
            for name in ("messages", "history", "system"):
                if record.get(name):
                    raise DataError(
                        f"record {i}: field '{name}' needs the tokenizer's chat template (--prompt_template chat); "
                        f"the text template {self.template_name!r} has no place for it"
                    )
        return [self.generate_prompt(r["instruction"], r.get("input")) for r in records]

    def tokenize(self, tokenizer, records: list[dict], cutoff_len: int, train_on_inputs: bool = False):
        """:func:`tokenize_example` for every record, with batched tokenizer calls: (examples, dropped)."""
        if not records:  # val_set_size=0
            return [], 0
        eos = _eos_id(tokenizer, None)
        prompts = self.prompts(tokenizer, records)
        prompt_ids = tokenizer(prompts)["input_ids"]
        full_ids = tokenizer([p + r["output"] for p, r in zip(prompts, records)])["input_ids"]
        return _keep([_assemble(p, f, eos, cutoff_len, train_on_inputs) for p, f in zip(prompt_ids, full_ids)])

    def get_response(self, output: str) -> str:
        """The answer part of a decoded generation: the text after the last response marker.

        A generation that does not contain the marker (a model that rewrote the prompt, or a decode
        of only the new tokens) is returned whole rather than raising, as HuaTuo's did.
        """
        head, marker, tail = output.rpartition(self.response_split)
        return (tail if marker else output).strip()


# ----------------------------------------------------------------------------------------------
# the tokenizer's chat template


class ChatPrompter:
    """The base model's own chat template (``--prompt_template chat``)."""

    template_name = CHAT_TEMPLATE_NAME
    folds_dialogue = False  # a single question is one user message; a folded history is unfolded

    def __init__(self, system_prompt: str = ""):
        self.system_prompt = system_prompt
        self._formats: dict[int, ChatFormat] = {}

    def format(self, tokenizer) -> ChatFormat:
        if id(tokenizer) not in self._formats:
            fmt = self._formats[id(tokenizer)] = ChatFormat.of(tokenizer)
            eot = fmt.end_of_turn
            logger.info("prompts through the tokenizer's chat template; end of turn %r (id %d)", tokenizer.convert_ids_to_tokens(eot), eot)
        return self._formats[id(tokenizer)]

    def prompts(self, tokenizer, records: list[dict]) -> list[str]:
        """Generation prompts (add_generation_prompt=True) of ``records``."""
        fmt = self.format(tokenizer)
        return [fmt.render(record_messages(r, self.system_prompt, with_answer=False), True) for r in records]

    def tokenize(self, tokenizer, records: list[dict], cutoff_len: int, train_on_inputs: bool = False):
        """Token ids and labels: every assistant turn and its end-of-turn token learnt; (examples, dropped)."""
        fmt = self.format(tokenizer) if records else None
        examples = []
        for i, record in enumerate(records, start=1):
            try:
                ids, spans = fmt.assistant_spans(record_messages(record, self.system_prompt))
            except DataError as err:
                raise DataError(f"record {i}: {err}") from None
            labels = list(ids) if train_on_inputs else [IGNORE_INDEX] * len(ids)
            for start, end in spans:
                labels[start:end] = ids[start:end]
            examples.append({"input_ids": ids[:cutoff_len], "labels": labels[:cutoff_len]})
        return _keep(examples)

    def get_response(self, output: str) -> str:
        return output.strip()  # generation returns the new tokens only
