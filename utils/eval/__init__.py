"""Evaluation: answer metrics and reference loss, the LLM judge.

Imports the base modules, ``utils.data``, ``utils.knowledge`` and ``utils.model``."""
