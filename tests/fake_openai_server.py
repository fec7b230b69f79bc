"""A real HTTP server on loopback that speaks the OpenAI chat-completions protocol, for tests.

It answers `POST .../chat/completions` with a message whose content is a JSON object
{"instruction", "output"} built from the material in the prompt (the `资料(JSON)：` line that
build_dataset.py sends): the instruction is the reference question and the output states every
fact value verbatim. Failures can be injected, each counted:

    "429"       HTTP 429 with a Retry-After header
    "500"/"503" HTTP 500 / 503
    "slow"      sleeps `slow_seconds` (longer than the client's timeout) before answering
    "truncated" a 200 whose JSON body is cut in half
    "nonjson"   a valid body whose message content is prose, not JSON
    "empty"     a valid body whose JSON content has an empty "output"
    "400"       HTTP 400 (not retryable)
    "invented"  a well-formed answer that also names a drug the facts do not hold (INVENTED_DRUG)

`script` lists outcomes for the first calls in order ("ok" for a normal answer); after it runs
out, each call fails with probability `failure_rate`, drawing the kind from `kinds`.

    with FakeOpenAI(failure_rate=0.2) as server:
        openai.OpenAI(base_url=server.base_url, api_key="k").chat.completions.create(model="m", messages=[...])
        server.calls, server.outcomes
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MARKER = "资料(JSON)："
ALL_KINDS = ("429", "500", "503", "slow", "truncated", "nonjson", "empty")
INVENTED_DRUG = "头孢曲松"  # a drug of the shipped KB


def answer_for(messages: list[dict]) -> dict:
    """The {"instruction", "output"} a perfect model would give for build_dataset's prompt."""
    # the prompt with the material (a re-ask appends the bad reply and the reason after it)
    user = next((m["content"] for m in reversed(messages) if m.get("role") == "user" and MARKER in m["content"]), "")
    if MARKER not in user:
        return {"instruction": "你好", "output": "你好，请问有什么可以帮您？"}
    material = json.loads(user.split(MARKER, 1)[1].strip())
    values = []
    for fact in material.get("facts", []):
        if fact["value"] not in values:
            values.append(fact["value"])
    entity = material["entity"] if isinstance(material["entity"], str) else "和".join(material["entity"])
    reference = material.get("reference_answer", "")
    advice = "".join(part + "。" for part in reference.split("。") if "120" in part)  # an emergency keeps its advice
    output = advice + f"关于{entity}：" + ("、".join(values) if values else "请咨询医生") + "。"
    return {"instruction": material["reference_question"], "output": output}


class FakeOpenAI:
    def __init__(
        self,
        failure_rate: float = 0.0,
        kinds=ALL_KINDS,
        script=(),
        slow_seconds: float = 1.0,
        retry_after: str = "0",
        delay: float = 0.0,
        seed: int = 0,
    ):
        self.failure_rate = failure_rate
        self.kinds = tuple(kinds)
        self.script = list(script)
        self.slow_seconds = slow_seconds  # for "slow": should exceed the client's timeout
        self.retry_after = retry_after  # Retry-After header value sent with 429
        self.delay = delay  # seconds added to every call (to make runs slow enough to kill)
        self.calls = 0
        self.outcomes: Counter = Counter()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> FakeOpenAI:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                fake._handle(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ------------------------------------------------------------------ requests
    def _next_outcome(self) -> str:
        with self._lock:
            self.calls += 1
            if self.script:
                outcome = self.script.pop(0)
            elif self._rng.random() < self.failure_rate:
                outcome = self._rng.choice(self.kinds)
            else:
                outcome = "ok"
            self.outcomes[outcome] += 1
            return outcome

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        request = json.loads(h.rfile.read(length) or b"{}")
        outcome = self._next_outcome()
        if self.delay:
            time.sleep(self.delay)
        try:
            if outcome in ("429", "500", "503", "400"):
                body = json.dumps({"error": {"message": f"injected {outcome}"}}).encode()
                h.send_response(int(outcome))
                if outcome == "429":
                    h.send_header("Retry-After", self.retry_after)
                h.send_header("Content-Type", "application/json")
                h.send_header("Content-Length", str(len(body)))
                h.end_headers()
                h.wfile.write(body)
                return
            if outcome == "slow":
                time.sleep(self.slow_seconds)
            answer = answer_for(request.get("messages", []))
            if outcome == "nonjson":
                content = "抱歉，我不能按要求输出JSON。" + answer["output"]
            elif outcome == "invented":
                content = json.dumps(
                    {**answer, "output": answer["output"] + f"也可以使用{INVENTED_DRUG}。"}, ensure_ascii=False
                )
            elif outcome == "empty":
                content = json.dumps({"instruction": answer["instruction"], "output": ""}, ensure_ascii=False)
            else:
                content = json.dumps(answer, ensure_ascii=False)
            body = json.dumps(
                {
                    "id": f"chatcmpl-{self.calls}",
                    "object": "chat.completion",
                    "model": request.get("model"),
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
                    ],
                },
                ensure_ascii=False,
            ).encode("utf-8")
            if outcome == "truncated":
                body = body[: len(body) // 2]
            h.send_response(200)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout); that is the point of "slow"


def main(failure_rate: float = 0.0, seconds: float = 3600.0):
    """Run a server for manual tries: prints its base URL, serves for `seconds`."""
    with FakeOpenAI(failure_rate=failure_rate) as server:
        print(server.base_url, flush=True)
        time.sleep(seconds)


if __name__ == "__main__":
    import fire

    fire.Fire(main)
