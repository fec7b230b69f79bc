"""OpenAI-compatible chat endpoints through the maintained `openai` client, and one "ask, parse, retry" loop.

    client = make_client("https://api.openai.com/v1", api_key=os.environ.get("OPENAI_API_KEY"), timeout=60,
    max_retries=5)
    reply = ask_json(client, "gpt-4o-mini", messages, parse=my_parser, max_attempts=3, retry_prompt="...{reason}...")

Transport problems (HTTP 429 and 5xx with Retry-After honoured, timeouts, dropped connections) are
retried inside the client (`max_retries`, exponential backoff). `ask_json` handles what the client
cannot: a reply that is not what was asked for. Each unusable reply (prose instead of JSON, a
missing field, a body cut off mid-JSON) is asked again, the reason appended to the conversation,
up to `max_attempts` calls; then `ReplyError` says why. Errors the client gives up on (`openai.APIError`)
are left to the caller. The API key is sent in a header only and never logged.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass

from utils.cli import UserError

logger = logging.getLogger(__name__)


class ReplyError(UserError):  # the judge model never answered in the protocol: one line, not a traceback
    """A model reply (or every reply, after retries) was unusable; the message says why."""

    def __init__(self, message: str, attempts: int = 1, raw: str = ""):
        super().__init__(message)
        self.attempts = attempts
        self.raw = raw


@dataclass
class Reply:
    value: object  # what `parse` returned
    attempts: int  # calls made, this one included
    raw: str  # the reply text


def make_client(base_url: str, api_key: str | None = None, timeout: float = 60.0, max_retries: int = 5):
    """An ``openai.OpenAI`` client for any OpenAI-compatible endpoint."""
    import openai

    # the client insists on a key; without one it sends the placeholder local servers (vLLM,
    # transformers serve) accept, "EMPTY"
    return openai.OpenAI(base_url=base_url, api_key=api_key or "EMPTY", timeout=timeout, max_retries=max_retries)


def api_errors() -> tuple[type[Exception], ...]:
    """What the client raises once its own retries are spent (or at once, for 400/401/404)."""
    import openai

    return (openai.APIError,)


def json_objects(text: str):
    """Every JSON object that starts somewhere in ``text`` (code fences and prose around it allowed)."""
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text or ""):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            yield value


def ask_json(
    client, model: str, messages: list[dict], parse, max_attempts: int = 3, retry_prompt: str = "", **params
) -> Reply:
    """Ask until ``parse(reply_text)`` succeeds (it raises ReplyError with a reason when it does not).

    After an unusable reply the conversation gets that reply and ``retry_prompt.format(reason=...)``
    (when given), so the model sees what was wrong. A response body the client cannot decode counts
    as an unusable reply. Raises ReplyError after ``max_attempts`` calls.
    """
    conversation = list(messages)
    reason, raw = "no attempt made", ""
    for attempt in range(1, max(1, max_attempts) + 1):
        try:
            completion = client.chat.completions.create(model=model, messages=conversation, **params)
            raw = completion.choices[0].message.content
        except (ValueError, AttributeError, IndexError, TypeError) as e:  # a 200 whose body is not the protocol's JSON
            reason, raw = f"malformed response body ({type(e).__name__})", ""
            logger.debug("attempt %d: %s", attempt, reason)
            continue
        try:
            if not isinstance(raw, str):
                raise ReplyError(f"message content is {type(raw).__name__}, not text")
            return Reply(value=parse(raw), attempts=attempt, raw=raw)
        except ReplyError as e:
            reason = str(e)
            logger.debug("attempt %d unusable (%s): %.80r", attempt, reason, raw)
            if retry_prompt:
                conversation = list(messages) + [
                    {"role": "assistant", "content": raw or ""},
                    {"role": "user", "content": retry_prompt.format(reason=reason)},
                ]
    raise ReplyError(
        f"{max_attempts} unusable repl{'y' if max_attempts == 1 else 'ies'}; last: {reason}",
        attempts=max(1, max_attempts),
        raw=(raw or "")[:2000],
    )
