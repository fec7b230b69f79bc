"""Moved: reading records is ``utils/records.py``, tokenizing them ``utils/prompter.py``.

Kept only for evaluate.py (renamed to score.py on another branch), which the lead switches to
``utils.records`` at merge; then this file goes.
"""

from utils.records import DataError, load_records  # noqa: F401
