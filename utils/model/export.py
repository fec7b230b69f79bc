"""Merge a LoRA adapter into its base and write a plain Hugging Face checkpoint that knows its prompt.

:func:`export_checkpoint` is what ``export_hf_checkpoint.py`` runs and what ``serve_api.py`` calls
when its merged checkpoint is missing or stale. Stages: what to merge (flags, then HuaTuo's
``$BASE_MODEL`` / ``$LORA_WEIGHTS``, then the adapter's run_config.json) -> the base in 16/32 bit,
never quantized (the merge adds B@A into these weights) -> the merge -> safetensors shards, the
tokenizer with a chat template that renders the training prompt, a generation config that stops at
the end of a turn, and ``run_config.json`` saying what was merged, written into a staged sibling
folder and moved into place.
"""

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from utils.args import ModelArgs, flag
from utils.cli import UserError
from utils.data.chat import stop_token_ids
from utils.data.chat_template import chat_template_for
from utils.files import file_sha256, staged_folder, write_json
from utils.model import adapters, loading
from utils.model.runinfo import run_config

logger = logging.getLogger(__name__)

DEFAULT_LORA = "./lora-llama-med"


@dataclass
class MergeModelArgs(ModelArgs):
    """The base an adapter is merged into: HuaTuo's export read it from $BASE_MODEL, and so do export and serve."""

    base_model: str = flag(
        "", "HF model folder or hub id; '' = $BASE_MODEL, else the adapter's run_config.json, else the tiny LLaMA"
    )


CHAT_TEMPLATE_FILE = "chat_template.jinja"  # what transformers saves and vLLM's --chat-template reads
DTYPE_NAMES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}  # config.json dtype -> --precision
PRECISION_DTYPES = {short: name for name, short in DTYPE_NAMES.items()}  # --precision -> dtype name


# ----------------------------------------------------------------------------------------------
# what to merge: flags, then the environment (as HuaTuo's export), then the adapter's run_config.json


def resolve_settings(base_model: str, lora_weights: str, prompt_template: str, system_prompt: str) -> dict:
    """Base model, adapter, template and system prompt to use (``adapters.settings``, the rule every
    script follows), with HuaTuo's environment variables: a flag wins over $BASE_MODEL /
    $LORA_WEIGHTS, which win over the adapter's run_config.json. ``trained_with``: its training flags."""
    lora_weights = lora_weights or os.environ.get("LORA_WEIGHTS", "") or DEFAULT_LORA
    chosen = adapters.settings(
        lora_weights, base_model or os.environ.get("BASE_MODEL", ""), prompt_template, system_prompt
    )
    recorded = adapters.read_run_config(chosen["lora_weights"])
    if not recorded:
        logger.warning(
            "%s has no run_config.json: cannot check that the base and prompt are the ones it was trained with",
            lora_weights,
        )
    return {**chosen, "trained_with": recorded.get("flags", {})}


def base_precision(config) -> str:
    """fp32 / bf16 / fp16: the dtype a base checkpoint is saved in (config.json ``dtype``/``torch_dtype``)."""
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    name = str(dtype).removeprefix("torch.") if dtype is not None else ""
    if name not in DTYPE_NAMES:
        logger.warning("the base's config.json names no float dtype (%r): writing fp32", name or None)
        return "fp32"
    return DTYPE_NAMES[name]


# ----------------------------------------------------------------------------------------------
# base in 16/32 bit, then the merge


@dataclass
class Base:
    """The base, ready to take the adapter's weights."""

    folder: str  # its local folder
    tokenizer: object  # with the chat template that renders the training prompt
    model: object  # 16/32-bit, on the CPU
    precision: str  # fp32 | bf16 | fp16
    pre_quantized: bool  # the checkpoint itself was saved quantized (dequantized here)


def load_base(settings: dict, precision: str, trust_remote_code: bool) -> Base:
    """The base in ``precision`` (auto: its own dtype), never quantized; the prompt is checked first:
    a template that cannot render the training prompt stops us before the merge."""
    from transformers import AutoConfig

    folder = loading.resolve_base_model(settings["base_model"])
    tokenizer = loading.load_tokenizer(folder, trust_remote_code)
    config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    if precision == "auto":
        precision = base_precision(config)
        logger.info("writing the merged weights in %s, the base's dtype (--precision to choose another)", precision)
    tokenizer.chat_template = chat_template_for(tokenizer, settings["prompt_template"], settings["system_prompt"])
    trained_on = settings["trained_with"]
    if trained_on.get("load_8bit") or trained_on.get("load_4bit"):
        logger.warning(
            "the adapter was trained on a %s base: merging it into a %s copy of the base instead "
            "(quantized weights cannot hold the merged sum); outputs can differ slightly from the quantized model's",
            "8-bit" if trained_on.get("load_8bit") else "4-bit",
            precision,
        )
    model = loading.load_model(folder, precision=precision, device_map={"": "cpu"}, trust_remote_code=trust_remote_code)
    pre_quantized = getattr(config, "quantization_config", None) is not None
    if pre_quantized:
        logger.warning("%s is saved quantized: dequantizing it to %s before merging", folder, precision)
        model = model.dequantize()
        model.to(loading.DTYPES[precision])
    if any(type(m).__module__.startswith("bitsandbytes") for m in model.modules()):
        raise UserError(f"{folder}: quantized layers remain after loading in {precision}; refusing to merge into them")
    return Base(folder, tokenizer, model, precision, pre_quantized)


def merge(base: Base, lora_weights: str, adapter_config: dict):
    """The base with the adapter's B@A added into its weights, frozen, stopping where training ended an
    answer (eos, and a chat template's end-of-turn token)."""
    model = adapters.load_adapter(base.model, lora_weights)
    logger.info(
        "merging %s (r=%s, alpha=%s, targets=%s)",
        lora_weights,
        adapter_config.get("r"),
        adapter_config.get("lora_alpha"),
        adapter_config.get("target_modules"),
    )
    merged = model.merge_and_unload(safe_merge=True)  # safe_merge: refuse NaN/inf instead of writing them
    merged.config.use_cache = True
    for param in merged.parameters():
        param.requires_grad_(False)
    loading.sync_special_tokens(merged, base.tokenizer)
    merged.generation_config.eos_token_id = stop_token_ids(base.tokenizer, merged.generation_config.eos_token_id)
    return merged


# ----------------------------------------------------------------------------------------------
# save into a temporary sibling, then move into place: a kill never leaves half a checkpoint


def save(out: Path, merged, base: Base, description: dict, max_shard_size: str) -> None:
    """Shards, tokenizer, chat_template.jinja, generation config and ``description`` as run_config.json."""
    with staged_folder(out) as tmp:
        merged.save_pretrained(str(tmp), safe_serialization=True, max_shard_size=max_shard_size)
        base.tokenizer.save_pretrained(str(tmp))
        (tmp / CHAT_TEMPLATE_FILE).write_text(base.tokenizer.chat_template, encoding="utf-8")
        merged.generation_config.save_pretrained(str(tmp))
        write_json(tmp / "run_config.json", description)


def check_request(output_dir: str, precision: str, overwrite: bool) -> None:
    if precision != "auto" and precision not in loading.DTYPES:
        raise UserError(
            f"precision must be auto or one of {', '.join(loading.DTYPES)} (the merged weights' dtype), got "
            f"{precision!r}"
        )
    if (Path(output_dir) / "config.json").exists() and not overwrite:
        raise UserError(f"{output_dir} already holds a model (config.json); pass --overwrite to replace it")


def export_checkpoint(
    base_model: str = "",
    lora_weights: str = "",
    output_dir: str = "./llama-med-merged",
    max_shard_size: str = "5GB",
    precision: str = "auto",
    prompt_template: str = "",
    system_prompt: str = "",
    trust_remote_code: bool = False,
    overwrite: bool = False,
) -> str:
    """Merge ``lora_weights`` into its base and write the checkpoint into ``output_dir`` (returned);
    the flags of export_hf_checkpoint.py, which records them in the checkpoint's run_config.json."""
    flags = dict(locals())
    check_request(output_dir, precision, overwrite)
    settings = resolve_settings(base_model, lora_weights, prompt_template, system_prompt)
    lora_weights = settings["lora_weights"]
    adapter_config = json.loads((Path(lora_weights) / adapters.ADAPTER_CONFIG).read_text(encoding="utf-8"))
    base = load_base(settings, precision, trust_remote_code)
    merged = merge(base, lora_weights, adapter_config)
    resolved = {
        "base_model": base.folder,
        "dtype": PRECISION_DTYPES[base.precision],
        "base_pre_quantized": base.pre_quantized,
        "prompt_template": settings["prompt_template"],
        "system_prompt": settings["system_prompt"],
        "stop_token_ids": merged.generation_config.eos_token_id,
    }
    adapter = {
        "path": str(Path(lora_weights).resolve()),
        "config": adapter_config,
        "trained_with": settings["trained_with"],
        "weights_sha256": file_sha256(adapters.weights_file(lora_weights)),
    }
    out = Path(output_dir)
    save(out, merged, base, run_config(flags, resolved=resolved, adapter=adapter), max_shard_size)
    shards = sorted(p.name for p in out.glob("*.safetensors"))
    logger.info(
        "merged checkpoint written to %s (%d shard(s), %s, prompt %s)",
        out,
        len(shards),
        resolved["dtype"],
        settings["prompt_template"],
    )
    return str(out)
