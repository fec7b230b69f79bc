"""A small client for OpenAI-compatible chat-completions endpoints (stdlib only).

    client = ChatClient("https://api.openai.com/v1", "gpt-4o-mini", api_key=os.environ["OPENAI_API_KEY"])
    text = client.chat([{"role": "user", "content": "你好"}], temperature=0.7)

Transport problems are retried with exponential backoff and jitter: HTTP 429 and 5xx (honouring
Retry-After), timeouts, refused or dropped connections, and bodies that are not the protocol's JSON
(e.g. truncated). Other HTTP errors (400, 401, 404, ...) fail at once. When retries run out, or on a
non-retryable error, `LLMError` is raised. The API key is sent in the Authorization header only and
never logged.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import logging
import random
import socket
import time
import urllib.error
import urllib.request

logger = logging.getLogger(__name__)

RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class LLMError(RuntimeError):
    """A chat call failed for good; `status` is the last HTTP status (None for transport errors)."""

    def __init__(self, message: str, status: int | None = None, retryable: bool = False, attempts: int = 1):
        super().__init__(message)
        self.status = status
        self.retryable = retryable
        self.attempts = attempts


def _retry_after_seconds(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class ChatClient:
    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout: float = 60.0,  # seconds per HTTP request
        max_retries: int = 5,  # retries after the first attempt
        backoff_base: float = 1.0,  # seconds; attempt n waits about base * 2**n
        backoff_max: float = 60.0,  # seconds; cap on one wait, Retry-After included
        seed: int | None = None,  # for the jitter only
    ):
        base_url = base_url.rstrip("/")
        self.url = base_url if base_url.endswith("/chat/completions") else base_url + "/chat/completions"
        self.model = model
        self._api_key = api_key
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._rng = random.Random(seed)

    def __repr__(self) -> str:  # never shows the key
        return f"ChatClient(url={self.url!r}, model={self.model!r}, timeout={self.timeout}, max_retries={self.max_retries})"

    def backoff(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number `attempt` (0-based): Retry-After, else exp. + jitter."""
        if retry_after is not None:
            return min(self.backoff_max, retry_after)
        cap = min(self.backoff_max, self.backoff_base * (2 ** attempt))
        return cap * (0.5 + 0.5 * self._rng.random())

    def _post(self, payload: dict) -> tuple[int, dict, bytes]:
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        request = urllib.request.Request(self.url, data=json.dumps(payload).encode("utf-8"), headers=headers, method="POST")
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            return response.status, dict(response.headers), response.read()

    def chat(self, messages: list[dict], **params) -> str:
        """The assistant message content for `messages`; extra params (temperature, ...) are passed on."""
        payload = {"model": self.model, "messages": messages, **params}
        last = "no attempt made"
        last_status = None
        for attempt in range(self.max_retries + 1):
            retry_after = None
            try:
                _, _, body = self._post(payload)
                try:
                    data = json.loads(body.decode("utf-8"))
                    content = data["choices"][0]["message"]["content"]
                except (UnicodeDecodeError, json.JSONDecodeError, KeyError, IndexError, TypeError) as e:
                    raise LLMError(f"malformed response body ({type(e).__name__}: {str(e)[:80]})", retryable=True) from None
                if not isinstance(content, str):
                    raise LLMError(f"message content is {type(content).__name__}, not a string", retryable=True)
                return content
            except urllib.error.HTTPError as e:
                last_status = e.code
                last = f"HTTP {e.code} {e.reason}"
                retry_after = _retry_after_seconds(e.headers.get("Retry-After") if e.headers else None)
                e.close()
                if e.code not in RETRYABLE_STATUS:
                    raise LLMError(f"{self.url}: {last} (not retried)", status=e.code, attempts=attempt + 1) from None
            except LLMError as e:
                last = str(e)
            except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError,
                    http.client.HTTPException, OSError) as e:
                reason = getattr(e, "reason", e)
                last = f"{type(e).__name__}: {reason}"
            if attempt == self.max_retries:
                break
            wait = self.backoff(attempt, retry_after)
            logger.debug("chat attempt %d failed (%s); retrying in %.2fs", attempt + 1, last, wait)
            time.sleep(wait)
        raise LLMError(f"{self.url}: giving up after {self.max_retries + 1} attempt(s); last error: {last}",
                       status=last_status, retryable=True, attempts=self.max_retries + 1)
