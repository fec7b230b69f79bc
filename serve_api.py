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

The front (``utils/serve/front.py``, where the reasons are) validates every request and checks that
prompt + ``max_tokens`` fit the context; the engines and what they read are ``utils/serve/engines.py``.
Generation itself is the engine's, unchanged.
"""

import contextlib
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from utils.args import AdapterArgs, ModelArgs, PromptArgs, flag, help_text, parse
from utils.cli import UserError
from utils.model import export, loading
from utils.serve import engines
from utils.serve.front import build_front, run_front

logger = logging.getLogger("serve_api")

ENGINES = ("transformers", "vllm")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class ServeModelArgs(export.MergeModelArgs):
    """The base model (16/32 bit: --load_8bit / --load_4bit are refused; vLLM's own quantization
    goes in --engine_args)."""

    precision: str = flag(
        "auto", "transformers engine: auto | bf16 | fp16 | fp32, as in infer.py (auto: fp32 on CPU, bf16/fp16 on GPU)"
    )


@dataclass
class ServeAdapterArgs(AdapterArgs):
    """The adapter to serve (--use_lora False is refused: serve the base with its own engine instead)."""

    lora_weights: str = flag("", f"adapter folder; '' = $LORA_WEIGHTS, else {export.DEFAULT_LORA}")


@dataclass
class ServeArgs:
    """The engine, and where the OpenAI API listens."""

    engine: str = flag("transformers", "transformers (merged checkpoint, CPU or GPU) | vllm (base + adapter, GPU)")
    merged_dir: str = flag(
        "", "transformers: merged checkpoint to serve (exported when missing or stale); '' = <lora_weights>-merged"
    )
    host: str = flag("127.0.0.1", "interface to listen on; 0.0.0.0 exposes the model to your network")
    port: int = flag(8000, "TCP port of the OpenAI API")
    api_key: str = flag("", "clients must send Authorization: Bearer KEY ('' = no key)")
    device: str = flag("auto", "transformers: auto | cpu | cuda:0 ...")
    engine_args: str = flag("", "extra arguments for the engine's command line, e.g. '--continuous-batching'")
    startup_timeout: int = flag(900, "seconds the engine may take to load the model")
    dry_run: bool = flag(False, "print what would be run and exit")


GROUPS = (ServeModelArgs, ServeAdapterArgs, PromptArgs, ServeArgs)


def main(**flags):
    model, adapter, prompt, run = parse(GROUPS, flags)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per forwarded request otherwise
    if run.engine not in ENGINES:
        raise UserError(f"engine must be one of {', '.join(ENGINES)}, got {run.engine!r}")
    if model.load_8bit or model.load_4bit:
        raise UserError("serving reads 16/32-bit weights: drop --load_8bit/--load_4bit (vLLM: --engine_args)")
    if not adapter.use_lora:
        raise UserError("--use_lora False: this server serves an adapter; serve a plain base with its engine directly")
    if run.host not in LOOPBACK and not run.api_key:
        logger.warning("listening on %s without --api_key: anyone who reaches this machine can use the model", run.host)
    settings = export.resolve_settings(
        model.base_model, adapter.lora_weights, prompt.prompt_template, prompt.system_prompt
    )
    url = f"http://{'[' + run.host + ']' if ':' in run.host else run.host}:{run.port}/v1"
    if run.engine == "vllm":
        serve_vllm(settings, model, run, url)
    else:
        serve_transformers(settings, model, run, url)


def serve_vllm(settings: dict, model: ModelArgs, run: ServeArgs, url: str) -> None:
    """``vllm serve`` base + adapter (this process becomes vLLM)."""
    lora = settings["lora_weights"]
    base, serving_dir, rank = engines.write_vllm_files(settings, model.trust_remote_code)
    name = Path(lora).resolve().name
    cmd = engines.vllm_command(
        base,
        str(Path(lora).resolve()),
        name,
        serving_dir,
        run.host,
        run.port,
        rank,
        run.api_key,
        model.trust_remote_code,
        run.engine_args,
    )
    print(f"base URL: {url}\nmodel:    {name}\ncommand:  {shlex.join(cmd)}", flush=True)
    if run.dry_run:
        return
    if shutil.which("vllm") is None:
        raise FileNotFoundError(
            "vLLM is not installed (pip install vllm, on a machine with a GPU); or use --engine transformers"
        )
    engines.check_can_listen(run.host, run.port)
    os.execvp(cmd[0], cmd)  # vLLM owns the console and the signals from here


def serve_transformers(settings: dict, model: ModelArgs, run: ServeArgs, url: str) -> None:
    """Export when needed, start ``transformers serve`` on a private loopback port, serve the front until stopped."""
    lora = settings["lora_weights"]
    merged = Path(run.merged_dir or f"{str(lora).rstrip('/')}-merged").resolve()
    backend_port = engines.free_port()
    dtype = str(loading.DTYPES[loading.resolve_precision(model.precision)]).removeprefix("torch.")  # as infer.py
    cmd = engines.transformers_command(merged.name, backend_port, run.device, dtype, run.engine_args)
    if run.dry_run:
        print(
            f"base URL: {url}\nmodel:    {merged.name}\nexport:   {lora} -> {merged} (when missing or stale)\n"
            f"command:  (cd {shlex.quote(str(merged.parent))} && {shlex.join(cmd)})  behind the front on "
            f"{run.host}:{run.port}"
        )
        return
    engines.check_can_listen(run.host, run.port)
    engines.ensure_merged(settings, merged, model.trust_remote_code)
    tokenizer, context = engines.merged_context(merged)
    # nothing to fetch: the engine reads the merged folder only
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_UPDATE_CHECK="1")
    logger.info("starting the engine: %s", shlex.join(cmd))
    # uvicorn re-raises the SIGTERM it stopped on: make it an exit that runs the `finally` below
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    backend = subprocess.Popen(cmd, cwd=merged.parent, env=env)
    try:
        engines.wait_until_healthy(f"http://127.0.0.1:{backend_port}/health", backend, run.startup_timeout)
        app = build_front(f"http://127.0.0.1:{backend_port}", merged.name, tokenizer, context, run.api_key)
        banner = f"serving {merged.name} (OpenAI API) at {url}\n  base URL: {url}\n  model:    {merged.name}"
        run_front(app, run.host, run.port, backend, on_ready=lambda: print(banner, flush=True))
    finally:
        backend.terminate()  # the engine never outlives its front
        with contextlib.suppress(subprocess.TimeoutExpired):
            backend.wait(timeout=30)
        backend.kill()  # a no-op once it has exited


if __name__ == "__main__":
    from utils.cli import run

    run(main, help_text(GROUPS, __doc__))
