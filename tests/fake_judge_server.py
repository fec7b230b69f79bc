"""A loopback judge: the kb fake OpenAI server answering judge prompts with CMCOQA scores.

Scores follow from the judged answer, so a test can check each recorded score:
完整性 = min(3, len // 10), 深刻性 = min(3, len // 20), 专业性 = 3 if "医生" in the answer else 1.
A reply is malformed when a hash of (seed, question, attempt) falls under ``malformed_rate``; the
next byte of that hash picks the kind: prose, a score out of range, a missing dimension or cut-off JSON (so a
test's expectations do not depend on the order concurrent calls arrive in). Good replies
alternate between bare JSON and JSON in a code fence after a sentence. Transport failures come
from the parent's ``script`` ("500", "429", ...). Every call is logged in ``log`` as
(question, attempt, "ok" | malformed kind | HTTP status).
"""

import hashlib
import json

from fake_openai_server import FakeOpenAI

from utils.eval.judge import ANSWER_END, ANSWER_START, QUESTION_START

MALFORMED_KINDS = ("prose", "range", "missing", "truncated")


def expected_scores(answer: str) -> dict:
    return {
        "完整性": min(3, len(answer) // 10),
        "深刻性": min(3, len(answer) // 20),
        "专业性": 3 if "医生" in answer else 1,
    }


def is_malformed(seed: int, question: str, attempt: int, rate: float) -> bool:
    digest = hashlib.sha256(f"{seed}:{question}:{attempt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


def malformed_kind(seed: int, question: str, attempt: int) -> str:
    """Which way a malformed reply is broken: the byte after the ones ``is_malformed`` reads, so it is
    fixed per (question, attempt) whatever order concurrent calls arrive in."""
    digest = hashlib.sha256(f"{seed}:{question}:{attempt}".encode()).digest()
    return MALFORMED_KINDS[digest[8] % len(MALFORMED_KINDS)]


class FakeJudge(FakeOpenAI):
    def __init__(self, malformed_rate: float = 1 / 3, **kwargs):
        super().__init__(**kwargs)
        self.malformed_rate = malformed_rate
        self.attempts: dict[str, int] = {}
        self.log: list[tuple[str, int, str]] = []

    def _handle(self, h) -> None:
        request = json.loads(h.rfile.read(int(h.headers.get("Content-Length") or 0)) or b"{}")
        outcome = self._next_outcome()  # the parent's script / failure_rate: transport failures
        user = request["messages"][1]["content"]
        material = user.rsplit(QUESTION_START, 1)[1]  # the rubric above names the markers too
        question, answer = (part.strip() for part in material.rsplit(ANSWER_END, 1)[0].split(ANSWER_START, 1))
        if outcome in ("429", "500", "503", "400"):
            with self._lock:
                self.log.append((question, 0, outcome))
            return self._send(h, int(outcome), json.dumps({"error": {"message": f"injected {outcome}"}}))
        with self._lock:
            attempt = self.attempts[question] = self.attempts.get(question, 0) + 1
            n = len(self.log)
            kind = (
                malformed_kind(0, question, attempt)
                if is_malformed(0, question, attempt, self.malformed_rate)
                else "ok"
            )
            self.log.append((question, attempt, kind))
        scores = {**expected_scores(answer), "理由": "测试"}
        if kind == "ok":
            content = json.dumps(scores, ensure_ascii=False)
            if n % 2:
                content = f"评分如下：\n```json\n{content}\n```"
        elif kind == "prose":
            content = "这个回答总体不错，我给两分。"
        elif kind == "range":
            content = json.dumps({**scores, "完整性": 5}, ensure_ascii=False)
        elif kind == "missing":
            content = json.dumps({k: v for k, v in scores.items() if k != "专业性"}, ensure_ascii=False)
        else:
            content = json.dumps(scores, ensure_ascii=False)[:12]
        body = {
            "id": f"chatcmpl-{n}",
            "object": "chat.completion",
            "model": request.get("model"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        }
        self._send(h, 200, json.dumps(body, ensure_ascii=False))

    @staticmethod
    def _send(h, status: int, text: str) -> None:
        body = text.encode("utf-8")
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Retry-After", "0")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)
