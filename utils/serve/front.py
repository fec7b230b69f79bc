"""The validating front in HOST:PORT before an OpenAI-compatible engine on a loopback port.

Why a front for ``transformers serve`` (5.24): it answers 500 to a body without ``messages``, a
message of unknown role or non-text content, a negative or non-numeric ``max_tokens``, and to a
conversation the chat template refuses (a system message to a text-template model); it generates
whatever ``max_tokens`` asks, past the model's context; it has no API key; and it also exposes
``/load_model`` (download and load any Hub model) and ``/reset``. The front validates each request
(OpenAI error bodies: 400 invalid request, 401 key, 404 unknown model or path), renders the chat
template once to check that prompt + ``max_tokens`` fit the context, and forwards only
``/v1/chat/completions``, ``/v1/completions``, ``/v1/models`` and ``/health``, streaming untouched.
Generation itself is the engine's, unchanged.
"""

import asyncio
import json
import logging
from contextlib import asynccontextmanager
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from utils.model import generation

logger = logging.getLogger(__name__)

FORWARD_TIMEOUT = 600.0  # seconds one answer may take before the front gives up on the engine


# ----------------------------------------------------------------------------------------------
# what a request may hold


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart]


class CommonParams(BaseModel):
    # other OpenAI fields go to the engine, which refuses what it does not know
    model_config = ConfigDict(extra="allow")
    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    seed: int | None = None
    stream: bool = False


class ChatRequest(CommonParams):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)


class CompletionRequest(CommonParams):
    prompt: str = Field(min_length=1)


# ----------------------------------------------------------------------------------------------
# checks


async def read_body(request, schema: type[BaseModel], model_name: str) -> dict:
    """The request's JSON body checked against ``schema``, naming ``model_name`` or no model; the
    fields the client set, without ``model`` (the engine is pinned to the one model)."""
    try:
        raw = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ApiError(400, f"the request body is not JSON: {err}") from None
    if not isinstance(raw, dict):
        raise ApiError(400, "the request body must be a JSON object")
    try:
        body = schema.model_validate(raw).model_dump(exclude_unset=True)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        raise ApiError(400, f"field '{field}': {first['msg']}", param=field) from None
    if body.get("model") not in (None, model_name):
        raise ApiError(
            404,
            f"the model '{body['model']}' does not exist; this server serves '{model_name}'",
            "model",
            "model_not_found",
        )
    body.pop("model", None)
    return body


def check_room(body: dict, prompt_tokens: int, limit_field: str, context: int | None) -> None:
    """The answer must fit in the context after the prompt; no max_tokens = all the room there is."""
    cap = generation.LIMITS["max_new_tokens"][1]
    room = context - prompt_tokens if context else cap  # context unknown: our own limit
    asked = body.get(limit_field) or body.get("max_tokens")
    if room < 1 or (asked is not None and asked > room):
        why = (
            f"this model's context is {context} tokens and the prompt takes {prompt_tokens}"
            if context
            else "answer length limit"
        )
        raise ApiError(400, f"{why}: {limit_field} can be at most {max(room, 0)}, got {asked}", param=limit_field)
    if asked is None:
        body["max_tokens"] = min(room, cap)


def chat_prompt_tokens(tokenizer, messages: list[dict]) -> int:
    """The prompt's length as the engine will render it; the template refuses what the model has no place for."""
    from jinja2.exceptions import TemplateError

    plain = [
        {
            "role": m["role"],
            "content": m["content"]
            if isinstance(m["content"], str)
            else " ".join(part["text"] for part in m["content"]),
        }
        for m in messages
    ]
    try:
        rendered = tokenizer.apply_chat_template(plain, add_generation_prompt=True, tokenize=True, return_dict=True)
    except TemplateError as err:
        raise ApiError(400, f"the conversation does not fit this model's prompt: {err}", param="messages") from None
    return len(rendered["input_ids"])


async def forward(client, path: str, body: dict):
    """The engine's reply to ``body`` at ``path``, streamed through when the client asked for a stream."""
    import httpx
    from fastapi.responses import Response, StreamingResponse

    try:
        if not body.get("stream"):
            reply = await client.post(path, json=body)
            return Response(reply.content, reply.status_code, media_type=reply.headers.get("content-type"))
        reply = await client.send(client.build_request("POST", path, json=body), stream=True)
    except httpx.HTTPError as err:
        raise ApiError(
            503, f"the engine is not answering ({type(err).__name__}); try again shortly", code="engine_unavailable"
        ) from None

    async def chunks():
        try:
            async for chunk in reply.aiter_raw():
                yield chunk
        finally:  # a client that goes away closes the engine's stream, which stops the generation
            await reply.aclose()

    return StreamingResponse(chunks(), status_code=reply.status_code, media_type=reply.headers.get("content-type"))


# ----------------------------------------------------------------------------------------------
# the app


def build_front(backend_url: str, model_name: str, tokenizer, context: int | None, api_key: str = ""):
    """The FastAPI app on HOST:PORT in front of the engine at ``backend_url`` (see the module docstring)."""
    import httpx
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response

    client = httpx.AsyncClient(base_url=backend_url, timeout=httpx.Timeout(FORWARD_TIMEOUT, connect=10.0))

    @asynccontextmanager
    async def lifespan(_app):
        yield
        await client.aclose()

    app = FastAPI(
        title="HuaTuo OpenAI-compatible API", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan
    )

    @app.exception_handler(ApiError)
    async def api_error(_request, err: ApiError):
        return JSONResponse(
            {"error": {"message": err.message, "type": "invalid_request_error", "param": err.param, "code": err.code}},
            status_code=err.status,
        )

    @app.middleware("http")
    async def check_key(request: Request, call_next):
        if api_key and request.url.path != "/health" and request.headers.get("authorization") != f"Bearer {api_key}":
            return await api_error(
                request,
                ApiError(401, "missing or wrong API key (send Authorization: Bearer KEY)", code="invalid_api_key"),
            )
        return await call_next(request)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = await read_body(request, ChatRequest, model_name)
        limit_field = "max_completion_tokens" if body.get("max_completion_tokens") else "max_tokens"
        check_room(body, chat_prompt_tokens(tokenizer, body["messages"]), limit_field, context)
        return await forward(client, "/v1/chat/completions", body)

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await read_body(request, CompletionRequest, model_name)
        check_room(body, len(tokenizer(body["prompt"])["input_ids"]), "max_tokens", context)
        return await forward(client, "/v1/completions", body)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": 0, "owned_by": "local"}]}

    @app.get("/health")
    async def health():
        try:
            reply = await client.get("/health")
        except httpx.HTTPError:
            return JSONResponse({"status": "unhealthy", "reason": "engine not answering"}, status_code=503)
        return Response(reply.content, reply.status_code, media_type=reply.headers.get("content-type"))

    return app


def run_front(app, host: str, port: int, backend, on_ready) -> None:
    """Serve ``app`` until interrupted (Ctrl-C, SIGTERM) or until the engine process ``backend`` exits;
    ``on_ready()`` is called once the front listens (the script prints where)."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))

    async def serve() -> None:
        async def watch() -> None:
            while not server.started:
                await asyncio.sleep(0.1)
            on_ready()
            while not server.should_exit:
                if backend.poll() is not None:
                    logger.error("the engine exited with status %s: stopping", backend.returncode)
                    server.should_exit = True
                await asyncio.sleep(1)

        watcher = asyncio.create_task(watch())
        await server.serve()
        watcher.cancel()

    asyncio.run(serve())
