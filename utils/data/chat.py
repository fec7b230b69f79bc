"""Chat models: records rendered through the tokenizer's own chat template, loss on assistant turns.

``--prompt_template_name chat`` (finetune.py) / ``--prompt_template chat`` (infer.py) replace the
text templates of ``templates/`` with the base model's chat template (``apply_chat_template``), so a
Qwen, Llama-3, Gemma, ... chat model is tuned and queried in the format it was trained on, and
generation stops at its end-of-turn token (``<|im_end|>``, ``<|eot_id|>``, ``<end_of_turn>``).

Records (every format may carry ``"system": "..."``, which overrides ``--system_prompt``):

* HuaTuo's ``{"instruction", "input", "output"}``: one user turn (``instruction``, then ``input`` on
  its own line when non-empty) and one assistant turn (``output``);
* HuaTuo's medical-literature folding, ``instruction = " <user>: ... <bot>: ... <user>: ..."``: the
  folded turns become user/assistant turns, ``output`` the last assistant turn;
* ``"history": [[user, assistant], ...]`` (LLaMA-Factory / Firefly style) before ``instruction``;
* ``"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]`` (OpenAI style); for
  training it ends with an assistant turn, for inference a final assistant turn is the golden answer.

Labels (set by ``utils.data.prompter.ChatPrompter`` from :meth:`ChatFormat.assistant_spans`): the loss
covers every assistant turn's tokens and the end-of-turn token that closes it; everything else
(system, user turns, the template's headers, the text after the last turn) is masked. The spans
come from prefix renders: the tokens of ``render(messages[:i], add_generation_prompt=True)`` are
followed in the full conversation by assistant turn ``i`` up to and including its end-of-turn
token. Templates that rewrite earlier turns when later ones follow are refused (no exact mask).
"""

import logging
from dataclasses import dataclass

from utils.data import literature
from utils.cli import UserError

logger = logging.getLogger(__name__)

CHAT_TEMPLATE_NAME = "chat"
PROBE = "PROBE"  # assistant text used to find what the template puts after an answer


# ----------------------------------------------------------------------------------------------
# records -> messages


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
        messages += literature.unfold(record["instruction"])
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
            raise UserError(
                f"{getattr(tokenizer, 'name_or_path', 'the tokenizer')} has no chat template: --prompt_template chat " f"needs a "
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
            raise UserError(
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
            raise UserError(f"the tokenizer's chat template refused the conversation: {err}") from None
        bos = self.tokenizer.bos_token
        if self.adds_bos and bos and text.startswith(bos):
            text = text[len(bos) :]
        return text

    def encode(self, text: str) -> list[int]:
        ids = self.tokenizer(text)["input_ids"]
        return ids[:-1] if self.adds_eos and ids and ids[-1] == self.tokenizer.eos_token_id else ids

    def assistant_spans(self, messages: list[dict]) -> tuple[list[int], list[tuple[int, int]]]:
        """Token ids of a conversation and the [start, end) span of every assistant turn, its
        end-of-turn token included; the ids end with the last answer's span when the conversation
        ends with one (nothing to learn after it)."""
        full_text = self.render(messages)
        ids = self.encode(full_text)
        spans, end = [], len(ids)
        for i, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            before, through = self.render(messages[:i], True), self.render(messages[: i + 1])
            if not (through.startswith(before) and full_text.startswith(through)):
                raise UserError(
                    "the chat template renders earlier turns differently once later turns follow; "
                    "its assistant turns cannot be masked exactly (train on single-turn records)"
                )
            start = common_prefix_len(self.encode(before), ids)
            end = common_prefix_len(self.encode(through), ids)
            if self.end_of_turn in ids[start:end]:  # stop after the end of turn (Qwen and Gemma add "\n")
                end = start + ids[start:end].index(self.end_of_turn) + 1
            spans.append((start, end))
        if messages[-1]["role"] == "assistant":
            ids = ids[:end]
        return ids, spans


def common_prefix_len(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


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
