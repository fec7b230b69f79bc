"""The model: tokenizer and base loading (precision, quantization, attention), hub ids, adapter folders,
the embedded tiny base, the memory plan, generation, loading for inference, export of a merged checkpoint,
and the run description written beside outputs.

Imports the base modules and ``utils.data``."""
