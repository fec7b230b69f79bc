"""Serving: the OpenAI-compatible front (request validation, prompt building, engines).

Imports the base modules, ``utils.data`` and ``utils.model``."""
