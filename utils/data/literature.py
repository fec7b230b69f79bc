"""HuaTuo's medical-literature dialogue format: the one home of ``<user>`` / ``<bot>`` folding.

HuaTuo trains and asks dialogues as single instructions with the history folded in:
``" <user>: Q1 <bot>: A1 <user>: Q2"`` (its liver_cancer.json; ``templates/literature_template.json``);
the answer to the last user turn is the output. A single-turn question of that data is folded too
(``" <user>: Q"``). Used by infer.py's chat modes, infer_literature.py, the Gradio demo (through the
prompter, so the same question gives the same prompt everywhere) and the chat template, which unfolds
such records into user/assistant messages for training and inference.

``chat`` runs HuaTuo's console loop over user turns from a terminal (prompting) or a pipe (one user
turn per line, EOF ends; ``read_turns``); ``/reset`` forgets the history and ``/exit`` ends.
"""

import logging
import re
import sys

from utils.data.records import DataError

logger = logging.getLogger(__name__)

TAGS = {"user": "<user>", "assistant": "<bot>"}
FOLDED_TURN = re.compile(r"\s*<(user|bot)>:\s*")
RESET, EXIT = "/reset", ("/exit", "/quit")


def fold(history: list[dict], question: str) -> str:
    """``" <user>: q1 <bot>: a1 <user>: question"``: the user/assistant messages of ``history``
    (``{"role", "content"}``; other roles and empty texts are left out) followed by ``question``."""
    turns = [(m.get("role"), (m.get("content") or "").strip()) for m in history]
    past = "".join(f" {TAGS[role]}: {text}" for role, text in turns if role in TAGS and text)
    return f"{past} {TAGS['user']}: {question}"


def instruction(history: list[dict], question: str, fold_single: bool) -> str:
    """The instruction that asks ``question`` after ``history``: folded when there is a history, and
    for a single question too when the template's data folds every question (``fold_single``)."""
    has_history = any((m.get("content") or "").strip() for m in history if m.get("role") in TAGS)
    return fold(history, question) if has_history or fold_single else question


def is_folded(text: str) -> bool:
    return text.strip().startswith((f"{TAGS['user']}:", f"{TAGS['assistant']}:"))


def unfold(text: str) -> list[dict]:
    """``" <user>: a <bot>: b <user>: c"`` as user/assistant messages; plain text is one user message."""
    if not is_folded(text):
        return [{"role": "user", "content": text}]
    parts = FOLDED_TURN.split(" " + text.strip())[1:]  # [role, text, role, text, ...]
    messages = [{"role": "user" if role == "user" else "assistant", "content": content} for role, content in zip(parts[::2], parts[1::2])]
    if messages[-1]["role"] != "user" or messages[0]["role"] != "user":
        raise DataError(f"folded dialogue must start and end with '<user>:': {text[:60]!r}...")
    return messages


# ----------------------------------------------------------------------------------------------
# the console loop


def read_turns(stream=None, interactive: bool | None = None, prompt: str = "用户: "):
    """User turns: prompted with ``input`` on a terminal, else one per line of ``stream`` until EOF."""
    stream = sys.stdin if stream is None else stream
    if interactive is None:
        interactive = stream.isatty()
    while True:
        if interactive:
            try:
                line = input(prompt)
            except EOFError:
                return
        else:
            line = stream.readline()
            if not line:
                return
        line = line.strip()
        if line:
            yield line


def chat(answer_fn, turns, keep_history: bool = True, max_history_turns: int = 5, fold_single: bool = True, show=None) -> list[dict]:
    """Answer each turn with ``answer_fn(instruction)``, hand each answer to ``show(answer)`` as it comes
    (the caller prints it), and return one record per turn.

    With ``keep_history`` the last ``max_history_turns`` exchanges (0 = all) are folded into each
    instruction; without it every turn is a single question (folded when ``fold_single``). Answers
    are kept on one line (newlines become spaces, as HuaTuo's loop did), which is also how they
    enter the history.
    """
    history: list[dict] = []
    records = []
    for user in turns:
        if user in EXIT:
            break
        if user == RESET:
            history.clear()
            logger.info("history cleared")
            continue
        context = history[-2 * max_history_turns :] if max_history_turns > 0 else history
        text = instruction(context if keep_history else [], user, fold_single)
        answer = " ".join(answer_fn(text).split())
        if show is not None:
            show(answer)
        history += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
        records.append({"turn": len(records) + 1, "user": user, "instruction": text, "input": "", "model_output": answer})
    return records
