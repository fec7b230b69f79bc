"""Multi-turn dialogue in the seed's medical-literature format.

The seed trains and asks dialogues as single instructions with the history folded in:
``" <user>: Q1 <bot>: A1 <user>: Q2"`` (see its liver_cancer.json and
``templates/literature_template.json``); the answer to the last user turn is the output. ``chat``
runs that loop from a terminal (prompting) or from a pipe (one user turn per line, EOF ends).
In a terminal, ``/reset`` forgets the history and ``/exit`` ends.
"""

import logging
import sys

logger = logging.getLogger(__name__)

USER, BOT = "<user>", "<bot>"
RESET, EXIT = "/reset", ("/exit", "/quit")


def fold(history: list[tuple[str, str]], user: str) -> str:
    """The seed's instruction for ``user`` after the (user, bot) turns of ``history``."""
    past = "".join(f" {USER}: {u} {BOT}: {b}" for u, b in history)
    return f"{past} {USER}: {user}"


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


def chat(answer_fn, turns, keep_history: bool = True, max_history_turns: int = 5, interactive: bool = False) -> list[dict]:
    """Answer each turn with ``answer_fn(instruction)``; print the answers; return one record per turn.

    With ``keep_history`` the last ``max_history_turns`` exchanges (0 = all) are folded into each
    instruction; without it every turn is a single-turn question, folded the same way.
    Answers are printed on one line each (newlines become spaces, as the seed's loop did), which
    is also how they enter the history.
    """
    history: list[tuple[str, str]] = []
    records = []
    for user in turns:
        if user in EXIT:
            break
        if user == RESET:
            history.clear()
            logger.info("history cleared")
            continue
        context = history[-max_history_turns:] if keep_history and max_history_turns > 0 else history if keep_history else []
        instruction = fold(context, user)
        answer = " ".join(answer_fn(instruction).split())
        print(f"助手: {answer}" if interactive else answer, flush=True)
        history.append((user, answer))
        records.append({"turn": len(records) + 1, "user": user, "instruction": instruction, "input": "", "model_output": answer})
    return records
