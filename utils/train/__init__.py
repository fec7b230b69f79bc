"""Training: batching (packing, padded batches, rank balance), the Trainers built on it, training
arguments, the run's layout and memory plan, examples, callbacks, checkpoints and resume, experiment tracking.

Imports the base modules, ``utils.data`` and ``utils.model``."""
