"""The knowledge base and what is built from it: the KB schema, the cMeKG import and its lexicon, the
clinical rules, phrasing, the kb-mcq exam, the audit, the review sheet and the data card.

Imports the base modules and ``utils.data``; nothing that loads a model."""
