"""Training: batching (packing, padded batches, rank balance) and the Trainer built on it, callbacks,
checkpoints and resume, experiment tracking.

Imports the base modules, ``utils.data`` and ``utils.model``."""
