"""What an answer may not say beyond its facts: prevention (a vaccine, prophylaxis) presented as
treatment, or urgency in its own words. The templates and the LLM paraphrases are held to the same checks."""

from __future__ import annotations

from utils.knowledge import clinical
from utils.knowledge.schema import NOT_TREATMENT_PHRASES, TREATMENT_FIELDS


def prevention_as_treatment(output: str, facts: list[dict]) -> str | None:
    """A phrase of NOT_TREATMENT_PHRASES in an answer that states treatment (the text of its other facts,
    e.g. the test 动物接种, aside), else None."""
    if not any(f["field"] in TREATMENT_FIELDS for f in facts):
        return None
    for f in sorted(facts, key=lambda f: -len(f["value"])):
        if f["field"] not in TREATMENT_FIELDS:
            output = output.replace(f["value"], "")
    return next((p for p in NOT_TREATMENT_PHRASES if p in output), None)


def urges(output: str, facts: list[dict]) -> bool:
    """The answer tells the reader to act urgently in its own words: a fact it states (our 中暑 is treated in
    急诊科, a test may be an 急诊CT) is knowledge, not advice, and is left out of the check."""
    for f in sorted(facts, key=lambda f: -len(f["value"])):
        output = output.replace(f["value"], "")
    return clinical.states_urgency(output)
