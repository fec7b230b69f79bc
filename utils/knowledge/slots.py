"""Filling a style's phrasings (data/knowledge/styles.json) from an entry's fields: a slot is
(text, facts), and every filled text comes back with the facts it states, so an answer's facts are
checked rather than trusted."""

from __future__ import annotations

import random
import re

from utils.knowledge.schema import PLACEHOLDER, Entry

MAX_VALUES = 6  # at most this many values of one field in one answer (typicality order, see utils/knowledge/cmekg.py)
# "{exams}等检查" with exams ending in 检查 would read "血常规检查等检查": the template's word is dropped
DOUBLED = re.compile(r"\{(\w+)\}等(检查|药物治疗|辅助治疗|药物|治疗)")


def fill(template: str, slots: dict[str, tuple[str, list[dict]]]) -> tuple[str, list[dict]]:
    """Fill {placeholders} from slots (text, facts); return the text and the facts it states."""
    template = DOUBLED.sub(
        lambda m: (
            m.group(0)
            if not slots.get(m.group(1), ("",))[0].endswith(("检查", "治疗", "药物"))
            else "{" + m.group(1) + "}等"
        ),
        template,
    )
    facts: list[dict] = []
    for key in PLACEHOLDER.findall(template):
        for fact in slots[key][1]:
            if fact not in facts:
                facts.append(fact)
    return PLACEHOLDER.sub(lambda m: slots[m.group(1)][0], template), facts


def fits(template: str, slots: dict) -> bool:
    """Every placeholder of ``template`` has a slot."""
    return all(k in slots for k in PLACEHOLDER.findall(template))


def usable(templates: list[str], slots: dict, must: tuple[str, ...] = ()) -> list[str]:
    """Templates whose placeholders all have a value and that state every ``must`` slot the entry has."""
    ok = [t for t in templates if fits(t, slots) and all("{" + m + "}" in t for m in must if m in slots)]
    if not ok:
        return []
    most = max(len(set(PLACEHOLDER.findall(t))) for t in ok)
    return [t for t in ok if len(set(PLACEHOLDER.findall(t))) >= most - 1]


def field_slot(entry: Entry, key: str, values: list[str] | None = None, sep: str = "、", tag_entity: bool = False):
    """The slot of one field: its values (the first MAX_VALUES unless ``values`` are given) joined by ``sep``,
    one fact per value (``tag_entity``: each fact names the entry, for answers about two entities)."""
    values = entry.get(key)[:MAX_VALUES] if values is None else values
    facts = [
        {"field": key, "value": v, "source": entry.source, **({"entity": entry.name} if tag_entity else {})}
        for v in values
    ]
    return sep.join(values), facts


def compose(parts: list[list[str]], slots: dict, rng: random.Random) -> tuple[str, list[dict]]:
    """Prose joined from one phrasing of every part whose placeholders the slots can fill."""
    text, facts = "", []
    for options in parts:
        ok = [t for t in options if fits(t, slots)]
        if ok:
            piece, piece_facts = fill(rng.choice(ok), slots)
            text += piece
            facts += [f for f in piece_facts if f not in facts]
    return text, facts
