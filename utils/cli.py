"""Entry point wrapper: user errors (bad data, bad flags, missing files) end as one clear line;
everything else (a bug, a failing GPU, a library error) keeps its traceback.

Flag spellings HuaTuo's scripts differ on are accepted in either form (``FLAG_ALIASES``):
finetune.py's ``--prompt_template_name`` and infer/generate's ``--prompt_template`` name the same thing.
"""

import inspect
import logging
import os
import sys


class UserError(ValueError):
    """What a user got wrong (a flag, a path, a data record): ``run`` prints it as one line.

    A ValueError subclass, so code that catches ValueError still does; but only this type (and
    FileNotFoundError) is shortened, so a ValueError raised by a library or by a bug shows its traceback."""


USER_ERRORS = (UserError, FileNotFoundError)
FLAG_ALIASES = {"prompt_template_name": "prompt_template", "prompt_template": "prompt_template_name"}


def with_aliases(fn, argv: list[str]) -> list[str]:
    """``argv`` with each aliased flag that ``fn`` lacks renamed to the spelling it has (and ``--help``
    kept for Fire's help even where ``fn`` takes ``**flags``)."""
    params = inspect.signature(fn).parameters
    if any(arg in ("--help", "-h") for arg in argv):
        return ["--", "--help"]
    out = []
    for arg in argv:
        name, eq, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        key = name.replace("-", "_")
        if key in FLAG_ALIASES and key not in params and FLAG_ALIASES[key] in params:
            arg = f"--{FLAG_ALIASES[key]}{eq}{value}"
        out.append(arg)
    return out


def run(fn, help: str = "") -> None:
    """``fire.Fire(fn)``; a user error prints ``error: <message>`` and exits 2 (HUATUO_DEBUG=1 re-raises).

    ``help`` is what ``--help`` prints (``utils.args.help_text`` of the script's flag groups): Fire's own
    help cannot show the meaning of a flag that arrives through ``**flags``."""
    import fire

    argv = sys.argv[1:]
    if help and any(arg in ("--help", "-h") for arg in argv):
        print(help)
        return
    try:
        fire.Fire(fn, command=with_aliases(fn, argv))
    except USER_ERRORS as err:
        if os.environ.get("HUATUO_DEBUG"):
            raise
        logging.getLogger(fn.__module__).debug("user error", exc_info=True)
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
