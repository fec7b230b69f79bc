"""``python -m utils.knowledge validate [PATH ...]``: the knowledge-base check, under its old name."""

import sys

from utils.knowledge.schema import main

main(*sys.argv[1:])
