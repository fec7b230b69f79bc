"""Records and prompts: read and validate {instruction, input, output} files, fill templates (text or the
tokenizer's chat template), tokenize with the loss mask, the <user>/<bot> literature dialogues.

Imports only the base modules (``utils/*.py``)."""
