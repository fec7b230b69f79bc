"""Evaluation: answer metrics, reference loss, the LLM judge, lm-eval tasks, report tables.

Imports the base modules, ``utils.data``, ``utils.knowledge`` and ``utils.model``."""
