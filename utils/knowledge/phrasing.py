"""Who is asking and how a reply opens: wrappers around a record's core question and answer.

A templated core question ("X有哪些症状？") reads the same in every record; people write "医生你好，想问下
X有哪些症状？谢谢！", and a doctor online answers "您好，…以上内容仅供参考，不能代替医生面诊。". These
wrappers add that variety and nothing else: the phrasings (data/knowledge/phrasings.json) carry no
facts about the patient, no urgency and no names of drugs, tests or departments, and the core text is
kept verbatim, so every fact of the record is still checked against its entry.

    rng = random.Random(f"{seed}:phrasing:{task_id}")
    instruction = wrap_question(core_question, rng)                # patient, student or online voice
    instruction = wrap_question(core_question, rng, voice="family")  # only when the caller says so
    output = wrap_answer(core_answer, rng, describes_symptoms=style in ("vignette", "triage"))

Voices match utils.knowledge.paraphrase.VOICES (patient, family, student, online); with none named, one is drawn by
the weights in phrasings.json (patient 5, online 3, student 2). A family voice ("帮家里人问一下") is never
drawn by default: it is the caller's decision that the question can be asked for someone
else. A first-person question (我, 自己) is asked by the patient: family and student voices fall back
to the patient voice for it.
"""

from __future__ import annotations

import functools
import os
import random
import re

from utils.knowledge.schema import DEFAULT_KB_DIR, KnowledgeError, display_path, read_json

DEFAULT_PHRASINGS_PATH = os.path.join(DEFAULT_KB_DIR, "phrasings.json")
VOICES = ("patient", "family", "student", "online")
QUESTION_PARTS = ("greetings", "leads", "closers")
ANSWER_PARTS = ("greetings", "leads", "symptom_leads", "reminders", "closers")

# the core already greets or opens with the doctor ("医生说我可能是…"): no greeting and no lead before it
# ("想问一下，医生您好，…", "医生，问一下医生说…" do not read)
GREETED = re.compile(r"^(医生|大夫|老师|您好|你好|在吗)")
# the core already opens with a request or an imperative: an inline lead ("请问请简单介绍…") would double it
REQUESTED = re.compile(r"^(请|麻烦|想|问|能|可以|帮|比较|对比|给我|简单|关于|分不清|从|听说)")
FIRST_PERSON = re.compile(r"[我俺]|自己")
ENDS_SENTENCE = re.compile(r"[。！？!?…]$")
# an answer that already sends the reader to a doctor gets no second reminder
HAS_REMINDER = re.compile(r"遵医嘱|仅供参考|面诊|咨询医生|专业医生|医生指导|医生根据|由医生|请勿自行|告知医生|医生建议")
# an answer that already opens from the description gets no "根据您的描述，"
FROM_DESCRIPTION = re.compile(r"^(根据|结合|从)")


@functools.cache
def load_phrasings(path: str = DEFAULT_PHRASINGS_PATH) -> dict:
    """The wrappers (data/knowledge/phrasings.json), loaded once and checked for shape."""
    shown = display_path(path)
    data = read_json(path, "phrasings")
    errors = []

    def check(where: str, value) -> None:
        if not isinstance(value, list) or not value or not all(isinstance(s, str) for s in value):
            errors.append(f"{shown}: {where}: expected a non-empty list of strings")
        elif any("{" in s or "}" in s for s in value):
            errors.append(f"{shown}: {where}: wrappers are literal text, no {{placeholders}}")

    questions, answers = data.get("question"), data.get("answer")
    if not isinstance(questions, dict) or not isinstance(answers, dict):
        raise KnowledgeError([f"{shown}: expected objects 'question' (per voice) and 'answer'"])
    weights = questions.get("default_voice_weights")
    if (
        not isinstance(weights, dict)
        or set(weights) != set(VOICES)
        or weights.get("family") != 0
        or not all(isinstance(w, int) and w >= 0 for w in weights.values())
        or not sum(weights.values())
    ):
        errors.append(
            f"{shown}: question.default_voice_weights: expected a non-negative int per voice of {VOICES}, "
            "family 0 (a family voice is the caller's decision)"
        )
    for voice in VOICES:
        if not isinstance(questions.get(voice), dict):
            errors.append(f"{shown}: question: voice '{voice}' is missing")
            continue
        for part in QUESTION_PARTS:
            check(f"question.{voice}.{part}", questions[voice].get(part))
    for part in ANSWER_PARTS:
        check(f"answer.{part}", answers.get(part))
    if errors:
        raise KnowledgeError(errors)
    return data


def _is_inline(lead: str) -> bool:
    """'请问' runs into the question; '想问一下，' is a clause of its own."""
    return bool(lead) and lead[-1] not in "，,：:。！？!?"


def wrap_question(
    question: str, rng: random.Random, voice: str | None = None, phrasings_path: str = DEFAULT_PHRASINGS_PATH
) -> str:
    """The question with a greeting, a lead and a closer of one voice around it; the question itself verbatim.

    voice: one of VOICES, or None to draw one by the file's default_voice_weights (never family) from rng.
    """
    questions = load_phrasings(phrasings_path)["question"]
    if voice is None:
        weights = questions["default_voice_weights"]
        voice = rng.choices(VOICES, weights=[weights[v] for v in VOICES])[0]
    if voice not in VOICES:
        raise ValueError(f"voice must be one of {VOICES} or None, got {voice!r}")
    core = question.strip()
    if voice in ("family", "student") and FIRST_PERSON.search(core):
        voice = "patient"  # "帮家里人问一下，医生说我可能是…" contradicts itself
    parts = questions[voice]
    greeting, lead, closer = (rng.choice(parts[k]) for k in QUESTION_PARTS)  # always three draws: stable streams
    if GREETED.match(core):
        greeting, lead = "", ""
    elif _is_inline(lead) and (REQUESTED.match(core) or not core.endswith(("？", "?"))):
        lead = ""
    elif lead and core.startswith(lead[:2]):
        lead = ""  # "我想了解一下，我想了解一下X" / "想问一下，想问一下X"
    if closer and not ENDS_SENTENCE.search(core):
        core += "。"
    return greeting + lead + core + closer


def wrap_answer(
    answer: str, rng: random.Random, describes_symptoms: bool = False, phrasings_path: str = DEFAULT_PHRASINGS_PATH
) -> str:
    """The answer with a neutral greeting/lead and a reminder/closer around it; the answer itself verbatim.

    describes_symptoms: the question described the asker's symptoms (vignette, triage), so the answer
    may open with "根据您的描述，"; otherwise it never does.
    """
    parts = load_phrasings(phrasings_path)["answer"]
    greeting, lead, symptom_lead, reminder, closer = (rng.choice(parts[k]) for k in ANSWER_PARTS)
    from_description = rng.random() < 0.5  # drawn always, so the stream does not depend on the flag
    core = answer.strip()
    if describes_symptoms and from_description and not FROM_DESCRIPTION.match(core):
        lead = symptom_lead
    if GREETED.match(core):
        greeting = ""
    if HAS_REMINDER.search(core):
        reminder = ""
    if (reminder or closer) and not ENDS_SENTENCE.search(core):
        core += "。"
    return greeting + lead + core + reminder + closer
