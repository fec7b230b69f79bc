"""Entry point wrapper: user errors (bad data, bad flags, missing files) end as one clear line."""

import logging
import os
import sys

from utils.data import DataError

USER_ERRORS = (DataError, FileNotFoundError, ValueError)


def run(fn) -> None:
    """``fire.Fire(fn)``; a user error prints ``error: <message>`` and exits 2 (HUATUO_DEBUG=1 re-raises)."""
    import fire

    try:
        fire.Fire(fn)
    except USER_ERRORS as err:
        if os.environ.get("HUATUO_DEBUG"):
            raise
        logging.getLogger(fn.__module__).debug("user error", exc_info=True)
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
