"""Chat models: records rendered through the tokenizer's own chat template, loss on assistant turns.

``--prompt_template_name chat`` (finetune.py) / ``--prompt_template chat`` (infer.py) replace the
text templates of ``templates/`` with the base model's chat template (``apply_chat_template``), so a
Qwen, Llama-3, Gemma, ... chat model is tuned and queried in the format it was trained on, and
generation stops at its end-of-turn token (``<|im_end|>``, ``<|eot_id|>``, ``<end_of_turn>``).

Records (every format may carry ``"system": "..."``, which overrides ``--system_prompt``):

* the seed's ``{"instruction", "input", "output"}``: one user turn (``instruction``, then ``input`` on
  its own line when non-empty) and one assistant turn (``output``);
* the seed's medical-literature folding, ``instruction = " <user>: ... <bot>: ... <user>: ..."``: the
  folded turns become user/assistant turns, ``output`` the last assistant turn;
* ``"history": [[user, assistant], ...]`` (LLaMA-Factory / Firefly style) before ``instruction``;
* ``"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]`` (OpenAI style); for
  training it ends with an assistant turn, for inference a final assistant turn is the golden answer.

Labels: the loss covers every assistant turn's tokens and the end-of-turn token that closes it;
everything else (system, user turns, the template's headers, the text after the last turn) is -100.
The spans come from prefix renders: the tokens of ``render(messages[:i], add_generation_prompt=True)``
are followed in the full conversation by assistant turn ``i`` up to and including its end-of-turn
token. Templates that rewrite earlier turns when later ones follow are refused (no exact mask).
"""

import logging
import re
from dataclasses import dataclass

from utils.data import IGNORE_INDEX, DataError, _common_prefix_len

logger = logging.getLogger(__name__)

CHAT_TEMPLATE_NAME = "chat"
ROLES = ("system", "user", "assistant")
FOLDED_TURN = re.compile(r"\s*<(user|bot)>:\s*")  # the seed's literature folding
PROBE = "PROBE"  # assistant text used to find what the template puts after an answer


# ----------------------------------------------------------------------------------------------
# records -> messages


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


def unfold_instruction(instruction: str) -> list[dict]:
    """The seed's ``" <user>: a <bot>: b <user>: c"`` as user/assistant messages; plain text as one user turn."""
    text = instruction.strip()
    if not text.startswith(("<user>:", "<bot>:")):
        return [{"role": "user", "content": instruction}]
    parts = FOLDED_TURN.split(" " + text)[1:]  # [role, text, role, text, ...]
    messages = [{"role": "user" if role == "user" else "assistant", "content": content} for role, content in zip(parts[::2], parts[1::2])]
    if messages[-1]["role"] != "user" or messages[0]["role"] != "user":
        raise DataError(f"folded dialogue must start and end with '<user>:': {instruction[:60]!r}...")
    return messages


def record_messages(record: dict, system_prompt: str = "", with_answer: bool = True) -> list[dict]:
    """The conversation of a record; ``with_answer=False`` leaves out the answer to generate."""
    if "messages" in record:
        messages = [dict(role=m["role"], content=m["content"]) for m in record["messages"]]
        if not with_answer and messages[-1]["role"] == "assistant":
            messages = messages[:-1]
    else:
        messages = []
        for user, assistant in record.get("history") or []:
            messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
        messages += unfold_instruction(record["instruction"])
        if record.get("input"):
            messages[-1]["content"] += "\n" + record["input"]
        if with_answer:
            messages.append({"role": "assistant", "content": record["output"]})
    system = record.get("system") or system_prompt
    if messages[0]["role"] == "system":
        if record.get("system"):
            messages[0]["content"] = record["system"]
    elif system:
        messages.insert(0, {"role": "system", "content": system})
    return messages


def question_of(record: dict) -> str:
    """What to print as the question: ``instruction``, or the last user message."""
    if "instruction" in record:
        return record["instruction"]
    return [m["content"] for m in record["messages"] if m["role"] == "user"][-1]


# ----------------------------------------------------------------------------------------------
# rendering and tokenization through one tokenizer's chat template


def _is_special(tokenizer, token_id: int) -> bool:
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    return token_id in set(tokenizer.all_special_ids) or bool(getattr(added.get(token_id), "special", False))


@dataclass
class ChatFormat:
    """One tokenizer's chat template: render text, encode it, find its end-of-turn token."""

    tokenizer: object
    adds_bos: bool  # the tokenizer puts bos in front of any text by itself
    adds_eos: bool  # ... and eos at the end (add_eos_token=True)
    end_of_turn: int  # the token closing an assistant turn

    @classmethod
    def of(cls, tokenizer) -> "ChatFormat":
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                f"{getattr(tokenizer, 'name_or_path', 'the tokenizer')} has no chat template: --prompt_template chat needs a "
                "chat model's tokenizer; use a text template instead (med_template, or bloom_deploy for Bloom/Huozi)"
            )
        probe = tokenizer("a")["input_ids"]
        fmt = cls(
            tokenizer,
            adds_bos=tokenizer.bos_token_id is not None and bool(probe) and probe[0] == tokenizer.bos_token_id,
            adds_eos=tokenizer.eos_token_id is not None and bool(probe) and probe[-1] == tokenizer.eos_token_id,
            end_of_turn=-1,
        )
        fmt.end_of_turn = fmt._find_end_of_turn()
        return fmt

    def _find_end_of_turn(self) -> int:
        text = self.render([{"role": "user", "content": "hi"}, {"role": "assistant", "content": PROBE}])
        tail = text[text.rindex(PROBE) + len(PROBE) :]
        ids = self.tokenizer(tail, add_special_tokens=False)["input_ids"] if tail else []
        if not ids or not _is_special(self.tokenizer, ids[0]):
            raise ValueError(
                f"the chat template puts no special token after an assistant message (it puts {tail[:20]!r}): no "
                "end-of-turn token to learn and stop at; use a text template instead"
            )
        return ids[0]

    def render(self, messages: list[dict], add_generation_prompt: bool = False) -> str:
        """The template's text, less a leading bos that the tokenizer adds by itself when encoding."""
        from jinja2.exceptions import TemplateError

        try:
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
        except TemplateError as err:
            if messages and messages[0]["role"] == "system" and len(messages) > 1:
                # Templates without a system role (Gemma) get the system prompt in the first user turn.
                first = dict(messages[1], content=messages[0]["content"] + "\n\n" + messages[1]["content"])
                return self.render([first] + messages[2:], add_generation_prompt)
            raise ValueError(f"the tokenizer's chat template refused the conversation: {err}") from None
        bos = self.tokenizer.bos_token
        if self.adds_bos and bos and text.startswith(bos):
            text = text[len(bos) :]
        return text

    def encode(self, text: str) -> list[int]:
        ids = self.tokenizer(text)["input_ids"]
        return ids[:-1] if self.adds_eos and ids and ids[-1] == self.tokenizer.eos_token_id else ids

    def tokenize(self, messages: list[dict], cutoff_len: int, train_on_inputs: bool = False) -> dict:
        """Token ids and labels of a conversation: assistant turns and their end-of-turn token learnt."""
        full_text = self.render(messages)
        ids = self.encode(full_text)
        labels = [IGNORE_INDEX] * len(ids)
        end = len(ids)
        for i, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            before, through = self.render(messages[:i], True), self.render(messages[: i + 1])
            if not (through.startswith(before) and full_text.startswith(through)):
                raise ValueError(
                    "the chat template renders earlier turns differently once later turns follow; "
                    "its assistant turns cannot be masked exactly (train on single-turn records)"
                )
            start = _common_prefix_len(self.encode(before), ids)
            end = _common_prefix_len(self.encode(through), ids)
            if self.end_of_turn in ids[start:end]:  # stop after the end of turn (Qwen and Gemma add "\n")
                end = start + ids[start:end].index(self.end_of_turn) + 1
            labels[start:end] = ids[start:end]
        if messages[-1]["role"] == "assistant":  # nothing to learn after the last answer
            ids, labels = ids[:end], labels[:end]
        if train_on_inputs:
            labels = list(ids)
        return {"input_ids": ids[:cutoff_len], "labels": labels[:cutoff_len]}


class ChatPrompter:
    """Stands in for ``Prompter`` when the template name is ``chat``."""

    is_chat = True
    template_name = CHAT_TEMPLATE_NAME

    def __init__(self, system_prompt: str = ""):
        self.system_prompt = system_prompt
        self._formats: dict[int, ChatFormat] = {}

    def format(self, tokenizer) -> ChatFormat:
        if id(tokenizer) not in self._formats:
            fmt = self._formats[id(tokenizer)] = ChatFormat.of(tokenizer)
            eot = fmt.end_of_turn
            logger.info("prompts through the tokenizer's chat template; end of turn %r (id %d)", tokenizer.convert_ids_to_tokens(eot), eot)
        return self._formats[id(tokenizer)]

    def prompt(self, tokenizer, record: dict) -> str:
        """The generation prompt of a record (add_generation_prompt=True)."""
        return self.format(tokenizer).render(record_messages(record, self.system_prompt, with_answer=False), True)

    def get_response(self, output: str) -> str:
        return output.strip()  # generation returns the new tokens only


def make_prompter(name: str, system_prompt: str = ""):
    """``Prompter(name)``, or a :class:`ChatPrompter` for ``chat``."""
    from utils.prompter import Prompter

    if name == CHAT_TEMPLATE_NAME:
        return ChatPrompter(system_prompt)
    if system_prompt:
        raise ValueError("--system_prompt is only used with the chat template (--prompt_template chat)")
    return Prompter(name)


def prompts_for(prompter, tokenizer, records: list[dict]) -> list[str]:
    """Generation prompts for ``records`` with a text template or the chat template."""
    if getattr(prompter, "is_chat", False):
        return [prompter.prompt(tokenizer, r) for r in records]
    for i, record in enumerate(records, start=1):
        for name in ("messages", "history", "system"):
            if record.get(name):
                raise DataError(
                    f"record {i}: field '{name}' needs the tokenizer's chat template (--prompt_template chat); "
                    f"the text template {prompter.template_name!r} has no place for it"
                )
    return [prompter.generate_prompt(r["instruction"], r.get("input")) for r in records]


def tokenize_chat_records(tokenizer, prompter: ChatPrompter, records: list[dict], cutoff_len: int, train_on_inputs: bool = False):
    """``tokenize_records`` for the chat template: (examples, dropped)."""
    fmt = prompter.format(tokenizer)
    examples, dropped = [], 0
    for i, record in enumerate(records, start=1):
        try:
            example = fmt.tokenize(record_messages(record, prompter.system_prompt), cutoff_len, train_on_inputs)
        except DataError as err:
            raise DataError(f"record {i}: {err}") from None
        if any(label != IGNORE_INDEX for label in example["labels"]):
            examples.append(example)
        else:
            dropped += 1
    return examples, dropped


def stop_token_ids(tokenizer, eos_token_id=None) -> list[int]:
    """Ids that end generation: the generation config's eos (int or list), the tokenizer's eos and,
    when the tokenizer has a chat template, its end-of-turn token."""
    ids = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id or [])
    ids.append(tokenizer.eos_token_id)
    if getattr(tokenizer, "chat_template", None):
        try:
            ids.append(ChatFormat.of(tokenizer).end_of_turn)
        except ValueError as err:  # a template without an end-of-turn token: eos alone stops
            logger.info("no end-of-turn token added to the stop ids: %s", err)
    return list(dict.fromkeys(i for i in ids if i is not None))
