"""Serve a tuned adapter over the OpenAI API, asking it with the prompt it was trained on.

Two engines do the serving; this script prepares what they need and starts them:

* ``transformers`` (default): ``transformers serve`` on the merged checkpoint, exported first when
  it is missing or was merged from another adapter, base or prompt (export_hf_checkpoint.py writes
  the training prompt into its chat template). It listens on a private loopback port behind a thin front on HOST:PORT.
* ``vllm`` (GPU): ``vllm serve BASE --enable-lora --lora-modules NAME=ADAPTER`` with the same chat
  template and stop ids written beside the adapter (``ADAPTER/serving/``); vLLM is optional.

    python serve_api.py --lora_weights ./lora-llama-med              # http://127.0.0.1:8000/v1
    python serve_api.py --lora_weights ./lora-llama-med --api_key s3cret --port 8001
    python serve_api.py --engine vllm --base_model /models/llama-7b-hf --lora_weights ./lora-llama-med
    python serve_api.py --engine vllm --dry_run                      # print the command, start nothing

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
import contextlib
import json
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

import export_hf_checkpoint
from utils.cli import UserError
from utils.model import adapters, generation, loading
from utils.model.runinfo import file_sha256

logger = logging.getLogger("serve_api")

ENGINES = ("transformers", "vllm")
LOOPBACK = ("127.0.0.1", "localhost", "::1")
FORWARD_TIMEOUT = 600.0  # seconds one answer may take before the front gives up on the engine


# ----------------------------------------------------------------------------------------------
# engine command lines


def transformers_command(
    model: str, port: int, device: str = "auto", dtype: str = "auto", extra: str = ""
) -> list[str]:
    """``transformers serve`` pinned to the merged folder ``model`` (a name relative to its cwd), on loopback."""
    exe = shutil.which("transformers", path=str(Path(sys.executable).parent))  # the CLI of this Python's transformers
    cli = [exe] if exe else [sys.executable, "-m", "transformers.cli.transformers"]
    return [
        *cli,
        "serve",
        model,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--device",
        device,
        "--dtype",
        dtype,
        "--log-level",
        "warning",
        *shlex.split(extra),
    ]


def vllm_command(
    base_model: str,
    adapter: str,
    name: str,
    serving_dir: Path,
    host: str,
    port: int,
    rank: int,
    api_key: str = "",
    trust_remote_code: bool = False,
    extra: str = "",
) -> list[str]:
    """``vllm serve`` for base + LoRA adapter ``name``, asking with the adapter's chat template and stop ids."""
    cmd = [
        "vllm",
        "serve",
        base_model,
        "--enable-lora",
        "--lora-modules",
        f"{name}={adapter}",
        "--max-lora-rank",
        str(rank),
        "--chat-template",
        str(serving_dir / export_hf_checkpoint.CHAT_TEMPLATE_FILE),
        "--generation-config",
        str(serving_dir),
        "--host",
        host,
        "--port",
        str(port),
    ]
    if api_key:
        cmd += ["--api-key", api_key]
    if trust_remote_code:
        cmd.append("--trust-remote-code")
    return cmd + shlex.split(extra)


# ----------------------------------------------------------------------------------------------
# what the engines read: the merged checkpoint (transformers) or the template beside the adapter (vLLM)


def ensure_merged(settings: dict, merged_dir: Path, trust_remote_code: bool) -> None:
    """Export the adapter into ``merged_dir`` unless that folder already holds this adapter, base and prompt."""
    lora = settings["lora_weights"]
    base = loading.resolve_base_model(settings["base_model"])
    want = {
        "adapter": str(Path(lora).resolve()),
        "weights_sha256": file_sha256(adapters.weights_file(lora)),
        "prompt_template": settings["prompt_template"],
        "system_prompt": settings["system_prompt"],
    }
    recorded = export_hf_checkpoint.trained_with(str(merged_dir))  # the merged folder's own run_config.json
    if (merged_dir / "config.json").exists() and not recorded:
        raise UserError(
            f"{merged_dir} holds a model that export_hf_checkpoint.py did not write; pass another --merged_dir"
        )
    if recorded:
        resolved, adapter = recorded.get("resolved", {}), recorded.get("adapter", {})
        have = {
            "adapter": adapter.get("path"),
            "weights_sha256": adapter.get("weights_sha256"),
            "prompt_template": resolved.get("prompt_template"),
            "system_prompt": resolved.get("system_prompt"),
        }
        if have == want and adapters.same_base(resolved.get("base_model", ""), base):
            logger.info("%s is up to date with %s: serving it", merged_dir, lora)
            return
        logger.info("%s was merged from another adapter, base or prompt: exporting again", merged_dir)
    export_hf_checkpoint.main(
        base_model=base,
        lora_weights=lora,
        output_dir=str(merged_dir),
        prompt_template=settings["prompt_template"],
        system_prompt=settings["system_prompt"],
        trust_remote_code=trust_remote_code,
        overwrite=bool(recorded),
    )


def write_vllm_files(settings: dict, trust_remote_code: bool) -> tuple[str, Path, int]:
    """(base model, folder holding chat_template.jinja + generation_config.json, LoRA rank) for vLLM."""
    from transformers import GenerationConfig

    from utils.data.chat import stop_token_ids
    from utils.data.chat_template import chat_template_for

    lora = settings["lora_weights"]
    base = loading.resolve_base_model(settings["base_model"])
    tokenizer = loading.load_tokenizer(base, trust_remote_code)
    tokenizer.chat_template = chat_template_for(tokenizer, settings["prompt_template"], settings["system_prompt"])
    try:
        gen = GenerationConfig.from_pretrained(base)
    except OSError:  # a base without generation_config.json
        gen = GenerationConfig(eos_token_id=tokenizer.eos_token_id)
    gen.eos_token_id = stop_token_ids(tokenizer, gen.eos_token_id)
    folder = Path(lora) / "serving"
    folder.mkdir(exist_ok=True)
    (folder / export_hf_checkpoint.CHAT_TEMPLATE_FILE).write_text(tokenizer.chat_template, encoding="utf-8")
    gen.save_pretrained(str(folder))
    rank = int(json.loads((Path(lora) / "adapter_config.json").read_text(encoding="utf-8")).get("r", 16))
    return base, folder, rank


# ----------------------------------------------------------------------------------------------
# the front: validate, then forward to the engine on its loopback port


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
    model_config = ConfigDict(
        extra="allow"
    )  # other OpenAI fields go to the engine, which refuses what it does not know
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


def build_front(backend_url: str, model_name: str, tokenizer, context: int | None, api_key: str = ""):
    """The FastAPI app on HOST:PORT in front of the engine at ``backend_url`` (see the module docstring)."""
    import httpx
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response, StreamingResponse
    from jinja2.exceptions import TemplateError

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

    async def parse(request: Request, schema: type[BaseModel]) -> dict:
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
        body.pop("model", None)  # the engine is pinned to the one model
        return body

    def check_room(body: dict, prompt_tokens: int, limit_field: str) -> None:
        """The answer must fit in the context after the prompt; no max_tokens = all the room there is."""
        room = (
            context - prompt_tokens if context else generation.LIMITS["max_new_tokens"][1]
        )  # context unknown: our own limit
        asked = body.get(limit_field) or body.get("max_tokens")
        if room < 1 or (asked is not None and asked > room):
            why = (
                f"this model's context is {context} tokens and the prompt takes {prompt_tokens}"
                if context
                else "answer length limit"
            )
            raise ApiError(400, f"{why}: {limit_field} can be at most {max(room, 0)}, got {asked}", param=limit_field)
        if asked is None:
            body["max_tokens"] = min(room, generation.LIMITS["max_new_tokens"][1])

    async def forward(path: str, body: dict):
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

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = await parse(request, ChatRequest)
        messages = [
            {
                "role": m["role"],
                "content": m["content"]
                if isinstance(m["content"], str)
                else " ".join(part["text"] for part in m["content"]),
            }
            for m in body["messages"]
        ]
        try:  # as the engine will render it: the template refuses what the model has no place for
            ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)[
                "input_ids"
            ]
        except TemplateError as err:
            raise ApiError(400, f"the conversation does not fit this model's prompt: {err}", param="messages") from None
        check_room(body, len(ids), "max_completion_tokens" if body.get("max_completion_tokens") else "max_tokens")
        return await forward("/v1/chat/completions", body)

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await parse(request, CompletionRequest)
        check_room(body, len(tokenizer(body["prompt"])["input_ids"]), "max_tokens")
        return await forward("/v1/completions", body)

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


# ----------------------------------------------------------------------------------------------
# processes and ports


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def check_can_listen(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        try:
            sock.bind((host, port))
        except OSError as err:
            raise UserError(f"cannot serve on {host}:{port}: {err.strerror} (pass --port or PORT=...)") from None


def wait_until_healthy(url: str, proc: subprocess.Popen, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=5).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise UserError(
                f"the engine did not answer {url} within {timeout:.0f} s (raise --startup_timeout for big models)"
            )
        time.sleep(0.5)
    raise UserError(f"the engine exited with status {proc.returncode} while loading (its log is above)")


def run_front(app, host: str, port: int, backend: subprocess.Popen, banner: str) -> None:
    """Serve ``app`` until interrupted (Ctrl-C, SIGTERM) or until the engine exits."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))

    async def serve() -> None:
        async def watch() -> None:
            while not server.started:
                await asyncio.sleep(0.1)
            print(banner, flush=True)
            while not server.should_exit:
                if backend.poll() is not None:
                    logger.error("the engine exited with status %s: stopping", backend.returncode)
                    server.should_exit = True
                await asyncio.sleep(1)

        watcher = asyncio.create_task(watch())
        await server.serve()
        watcher.cancel()

    asyncio.run(serve())


# ----------------------------------------------------------------------------------------------


def main(
    engine: str = "transformers",  # transformers (merged checkpoint, CPU or GPU) | vllm (base + adapter, GPU)
    base_model: str = "",  # HF model folder or hub id; "" = $BASE_MODEL, else the adapter's run_config.json, else the tiny LLaMA
    lora_weights: str = "",  # adapter folder; "" = $LORA_WEIGHTS, else ./lora-llama-med
    merged_dir: str = "",  # transformers: merged checkpoint to serve (exported when missing or stale); "" = <lora_weights>-merged
    prompt_template: str = "",  # "" = the adapter's run_config.json (a different one is used with a warning)
    system_prompt: str = "",  # chat adapters only: default system message; "" = the adapter's run_config.json
    host: str = "127.0.0.1",  # interface to listen on; 0.0.0.0 exposes the model to your network
    port: int = 8000,  # TCP port of the OpenAI API
    api_key: str = "",  # clients must send Authorization: Bearer KEY ("" = no key)
    device: str = "auto",  # transformers: auto | cpu | cuda:0 ...
    precision: str = "auto",  # transformers: auto | bf16 | fp16 | fp32, as in infer.py (auto: fp32 on CPU, bf16/fp16 on GPU)
    engine_args: str = "",  # extra arguments for the engine's command line, e.g. "--continuous-batching"
    startup_timeout: int = 900,  # seconds the engine may take to load the model
    dry_run: bool = False,  # print what would be run and exit
    trust_remote_code: bool = False,  # run model code shipped with the checkpoint (only if you trust it)
):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per forwarded request otherwise
    if engine not in ENGINES:
        raise UserError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if host not in LOOPBACK and not api_key:
        logger.warning("listening on %s without --api_key: anyone who reaches this machine can use the model", host)
    settings = export_hf_checkpoint.resolve_settings(base_model, lora_weights, prompt_template, system_prompt)
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/v1"

    common = dict(
        host=host,
        port=port,
        url=url,
        api_key=api_key,
        engine_args=engine_args,
        dry_run=dry_run,
        trust_remote_code=trust_remote_code,
    )
    if engine == "vllm":
        serve_vllm(settings, **common)
    else:
        serve_transformers(
            settings,
            merged_dir=merged_dir,
            device=device,
            precision=precision,
            startup_timeout=startup_timeout,
            **common,
        )


def serve_vllm(settings: dict, *, host, port, url, api_key, engine_args, dry_run, trust_remote_code) -> None:
    """``vllm serve`` base + adapter (this process becomes vLLM)."""
    lora = settings["lora_weights"]
    base, serving_dir, rank = write_vllm_files(settings, trust_remote_code)
    name = Path(lora).resolve().name
    cmd = vllm_command(
        base, str(Path(lora).resolve()), name, serving_dir, host, port, rank, api_key, trust_remote_code, engine_args
    )
    print(f"base URL: {url}\nmodel:    {name}\ncommand:  {shlex.join(cmd)}", flush=True)
    if dry_run:
        return
    if shutil.which("vllm") is None:
        raise FileNotFoundError(
            "vLLM is not installed (pip install vllm, on a machine with a GPU); or use --engine transformers"
        )
    check_can_listen(host, port)
    os.execvp(cmd[0], cmd)  # vLLM owns the console and the signals from here


def serve_transformers(
    settings: dict,
    *,
    merged_dir,
    device,
    precision,
    startup_timeout,
    host,
    port,
    url,
    api_key,
    engine_args,
    dry_run,
    trust_remote_code,
) -> None:
    """Export when needed, start ``transformers serve`` on a private loopback port, serve the front until stopped."""
    lora = settings["lora_weights"]
    merged = Path(merged_dir or f"{str(lora).rstrip('/')}-merged").resolve()
    backend_port = free_port()
    dtype = str(loading.DTYPES[loading.resolve_precision(precision)]).removeprefix("torch.")  # as infer.py computes
    cmd = transformers_command(merged.name, backend_port, device, dtype, engine_args)
    if dry_run:
        print(
            f"base URL: {url}\nmodel:    {merged.name}\nexport:   {lora} -> {merged} (when missing or stale)\n"
            f"command:  (cd {shlex.quote(str(merged.parent))} && {shlex.join(cmd)})  behind the front on {host}:{port}"
        )
        return
    check_can_listen(host, port)
    ensure_merged(settings, merged, trust_remote_code)

    from transformers import AutoConfig, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(merged))
    context = getattr(AutoConfig.from_pretrained(str(merged)), "max_position_embeddings", None)
    context = context or (tokenizer.model_max_length if tokenizer.model_max_length < 10**7 else None)  # else: unknown
    env = dict(
        os.environ, HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_UPDATE_CHECK="1"
    )  # nothing to fetch
    logger.info("starting the engine: %s", shlex.join(cmd))
    # uvicorn re-raises the SIGTERM it stopped on: make it an exit that runs the `finally` below
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    backend = subprocess.Popen(cmd, cwd=merged.parent, env=env)
    try:
        wait_until_healthy(f"http://127.0.0.1:{backend_port}/health", backend, startup_timeout)
        app = build_front(f"http://127.0.0.1:{backend_port}", merged.name, tokenizer, context, api_key)
        banner = f"serving {merged.name} (OpenAI API) at {url}\n  base URL: {url}\n  model:    {merged.name}"
        run_front(app, host, port, backend, banner)
    finally:
        backend.terminate()  # the engine never outlives its front
        with contextlib.suppress(subprocess.TimeoutExpired):
            backend.wait(timeout=30)
        backend.kill()  # a no-op once it has exited


if __name__ == "__main__":
    from utils.cli import run

    run(main)
