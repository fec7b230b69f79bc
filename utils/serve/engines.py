"""The engines behind the front, and what they read.

* ``transformers serve`` on the merged checkpoint (:func:`ensure_merged` exports it when it is missing
  or was merged from another adapter, base or prompt; ``utils/model/export.py``), pinned to loopback.
* ``vllm serve BASE --enable-lora`` with the adapter's chat template and stop ids written beside the
  adapter (:func:`write_vllm_files`, ``ADAPTER/serving/``).

Plus the process plumbing: a free loopback port, a check that HOST:PORT can be bound, waiting until
the engine answers ``/health``.
"""

import contextlib
import json
import logging
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from utils.cli import UserError
from utils.files import file_sha256
from utils.model import adapters, export, loading

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------
# command lines


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
        str(serving_dir / export.CHAT_TEMPLATE_FILE),
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
    recorded = adapters.read_run_config(merged_dir)  # what export wrote beside the merged weights
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
    export.export_checkpoint(
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
    (folder / export.CHAT_TEMPLATE_FILE).write_text(tokenizer.chat_template, encoding="utf-8")
    gen.save_pretrained(str(folder))
    rank = int(json.loads((Path(lora) / adapters.ADAPTER_CONFIG).read_text(encoding="utf-8")).get("r", 16))
    return base, folder, rank


def merged_context(merged: Path) -> tuple[object, int | None]:
    """(the merged checkpoint's tokenizer, its context length in tokens, None when unknown)."""
    from transformers import AutoConfig, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(merged))
    context = getattr(AutoConfig.from_pretrained(str(merged)), "max_position_embeddings", None)
    context = context or (tokenizer.model_max_length if tokenizer.model_max_length < 10**7 else None)  # else: unknown
    return tokenizer, context


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
