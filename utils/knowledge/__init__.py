"""The knowledge base and what is built from it: the KB schema, the cMeKG import and its lexicon, the
clinical rules, phrasing, the kb-mcq exam, the audit, the review sheet and the data card.

A dataset build (build_dataset.py is its command line), in the order it runs: ``build`` (the whole build)
loads ``inputs``, splits entities (``schema.split_entities``), plans candidate ``tasks`` (with
``findings``, ``slots`` and ``answer_checks``), draws them in ``selection``, paraphrases them through an
LLM in ``paraphrase`` when asked, and writes the files in ``outputs``.

Imports the base modules and ``utils.data``; nothing that loads a model."""
