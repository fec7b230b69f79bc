"""Entry point wrapper: user errors (bad data, bad flags, missing files) end as one clear line;
everything else (a bug, a failing GPU, a library error) keeps its traceback.
Flags themselves (types, spellings, presets, ``--help``) are utils/args.py's.
"""

import logging
import os
import sys


class UserError(ValueError):
    """What a user got wrong (a flag, a path, a data record): ``run`` prints it as one line.

    A ValueError subclass, so code that catches ValueError still does; but only this type (and
    FileNotFoundError) is shortened, so a ValueError raised by a library or by a bug shows its traceback."""


USER_ERRORS = (UserError, FileNotFoundError)


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
        fire.Fire(fn, command=argv)
    except USER_ERRORS as err:
        if os.environ.get("HUATUO_DEBUG"):
            raise
        logging.getLogger(fn.__module__).debug("user error", exc_info=True)
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
