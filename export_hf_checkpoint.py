"""Merge a LoRA adapter into its base model and save a plain Hugging Face checkpoint that knows its prompt.

The result loads with ``AutoModelForCausalLM.from_pretrained`` alone (no peft): safetensors shards,
the tokenizer with a chat template that renders the adapter's training prompt (med_template,
literature_template with its folded history, alpaca, ... or the base's own template for ``chat``
adapters; also saved as ``chat_template.jinja``), a generation config that stops at the end of a
turn, and ``run_config.json`` saying what was merged. So ``transformers serve`` / vLLM ask the tuned
model exactly as infer.py does (scripts/serve.sh).

    # the adapter trained by finetune.py on the embedded tiny LLaMA
    python export_hf_checkpoint.py --lora_weights ./lora-llama-med --output_dir ./llama-med-merged

    # as HuaTuo did: base and adapter from the environment (flags win over them)
    BASE_MODEL=meta-llama/Llama-2-7b-hf LORA_WEIGHTS=./lora-llama-med python export_hf_checkpoint.py

    # fp32 weights in 2 GB shards instead of the base's own dtype
    python export_hf_checkpoint.py --lora_weights ./lora-llama-med --precision fp32 --max_shard_size 2GB

Base model, prompt template and system prompt default to what the adapter's ``run_config.json``
records (finetune.py writes it); a flag that disagrees with it is used, with a warning. The weights
keep the base's dtype (its config.json ``dtype`` / ``torch_dtype``): a 7B fp16 base gives a 13 GB
checkpoint, not a 27 GB fp32 one.

Adapters trained on an 8-bit/4-bit base (``--load_8bit``/``--load_4bit`` in finetune.py) are merged
into a 16/32-bit copy of the same base: quantized weights cannot hold the sum exactly, so the merge
never happens inside them. A base checkpoint that is itself saved quantized is dequantized first.
"""

import json
import logging
import os
from pathlib import Path

from utils.cli import UserError
from utils.data.chat import stop_token_ids
from utils.data.chat_template import chat_template_for
from utils.files import staged_folder
from utils.model import adapters, loading
from utils.model.runinfo import file_sha256, run_config, write_json

logger = logging.getLogger("export_hf_checkpoint")

DEFAULT_LORA = "./lora-llama-med"
CHAT_TEMPLATE_FILE = "chat_template.jinja"  # what transformers saves and vLLM's --chat-template reads
DTYPE_NAMES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}  # config.json dtype -> --precision


# ----------------------------------------------------------------------------------------------
# what to merge: flags, then the environment (as HuaTuo's export), then the adapter's run_config.json


def trained_with(lora_weights: str) -> dict:
    """The adapter's run_config.json (flags and resolved settings of its training), {} when absent."""
    path = Path(lora_weights) / "run_config.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UserError(f"{path}:{err.lineno}: invalid JSON: {err.msg}") from None


def resolve_settings(base_model: str, lora_weights: str, prompt_template: str, system_prompt: str) -> dict:
    """Base model, adapter, template and system prompt to use (``adapters.settings``, the rule every
    script follows), with HuaTuo's environment variables: a flag wins over $BASE_MODEL /
    $LORA_WEIGHTS, which win over the adapter's run_config.json."""
    lora_weights = lora_weights or os.environ.get("LORA_WEIGHTS", "") or DEFAULT_LORA
    chosen = adapters.settings(
        lora_weights, base_model or os.environ.get("BASE_MODEL", ""), prompt_template, system_prompt
    )
    if not (Path(chosen["lora_weights"]) / "run_config.json").is_file():
        logger.warning(
            "%s has no run_config.json: cannot check that the base and prompt are the ones it was trained with",
            lora_weights,
        )
    return {**chosen, "trained_with": trained_with(chosen["lora_weights"]).get("flags", {})}


def base_precision(config) -> str:
    """fp32 / bf16 / fp16: the dtype a base checkpoint is saved in (config.json ``dtype``/``torch_dtype``)."""
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    name = str(dtype).removeprefix("torch.") if dtype is not None else ""
    if name not in DTYPE_NAMES:
        logger.warning("the base's config.json names no float dtype (%r): writing fp32", name or None)
        return "fp32"
    return DTYPE_NAMES[name]


# ----------------------------------------------------------------------------------------------


def main(
    base_model: str = "",  # HF model folder or hub id; "" = $BASE_MODEL, else the adapter's run_config.json, else the tiny LLaMA
    lora_weights: str = "",  # adapter folder written by finetune.py (or an old peft one); "" = $LORA_WEIGHTS, else ./lora-llama-med
    output_dir: str = "./llama-med-merged",  # where the merged checkpoint goes (must not hold another model)
    max_shard_size: str = "5GB",  # largest safetensors shard, e.g. 2GB or 500MB
    precision: str = "auto",  # auto (the base's own dtype, from its config.json) | fp32 | bf16 | fp16
    prompt_template: str = "",  # the prompt the chat template renders; "" = the adapter's run_config.json, else med_template
    system_prompt: str = "",  # chat adapters only: default system message; "" = the adapter's run_config.json
    trust_remote_code: bool = False,  # run model code shipped with the checkpoint (only if you trust it)
    overwrite: bool = False,  # replace an existing checkpoint in output_dir
):
    flags = dict(locals())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if precision != "auto" and precision not in loading.DTYPES:
        raise UserError(
            f"precision must be auto or one of {', '.join(loading.DTYPES)} (the merged weights' dtype), got {precision!r}"
        )
    out = Path(output_dir)
    if (out / "config.json").exists() and not overwrite:
        raise UserError(f"{out} already holds a model (config.json); pass --overwrite to replace it")
    settings = resolve_settings(base_model, lora_weights, prompt_template, system_prompt)
    lora_weights, trained_on = settings["lora_weights"], settings["trained_with"]

    # ------------------------------------------------------------------------------------------
    # base in 16/32 bit, never quantized: the merge adds B@A into these weights
    from transformers import AutoConfig

    base_model = loading.resolve_base_model(settings["base_model"])
    tokenizer = loading.load_tokenizer(base_model, trust_remote_code)
    config = AutoConfig.from_pretrained(base_model, trust_remote_code=trust_remote_code)
    if precision == "auto":
        precision = base_precision(config)
        logger.info("writing the merged weights in %s, the base's dtype (--precision to choose another)", precision)
    # the prompt first: a template that cannot render the training prompt stops us before the merge
    tokenizer.chat_template = chat_template_for(tokenizer, settings["prompt_template"], settings["system_prompt"])
    pre_quantized = getattr(config, "quantization_config", None) is not None
    adapter_config = json.loads((Path(lora_weights) / "adapter_config.json").read_text(encoding="utf-8"))
    if trained_on.get("load_8bit") or trained_on.get("load_4bit"):
        logger.warning(
            "the adapter was trained on a %s base: merging it into a %s copy of the base instead "
            "(quantized weights cannot hold the merged sum); outputs can differ slightly from the quantized model's",
            "8-bit" if trained_on.get("load_8bit") else "4-bit",
            precision,
        )
    model = loading.load_model(
        base_model, precision=precision, device_map={"": "cpu"}, trust_remote_code=trust_remote_code
    )
    if pre_quantized:
        logger.warning("%s is saved quantized: dequantizing it to %s before merging", base_model, precision)
        model = model.dequantize()
        model.to(loading.DTYPES[precision])
    if any(type(m).__module__.startswith("bitsandbytes") for m in model.modules()):
        raise UserError(
            f"{base_model}: quantized layers remain after loading in {precision}; refusing to merge into them"
        )

    # ------------------------------------------------------------------------------------------
    # merge
    model = adapters.load_adapter(model, lora_weights)
    logger.info(
        "merging %s (r=%s, alpha=%s, targets=%s)",
        lora_weights,
        adapter_config.get("r"),
        adapter_config.get("lora_alpha"),
        adapter_config.get("target_modules"),
    )
    merged = model.merge_and_unload(safe_merge=True)  # safe_merge: refuse NaN/inf instead of writing them
    merged.config.use_cache = True
    precision_name = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}[precision]
    for param in merged.parameters():
        param.requires_grad_(False)
    # stop where training put the end of an answer: eos, and a chat template's end-of-turn token
    loading.sync_special_tokens(merged, tokenizer)
    merged.generation_config.eos_token_id = stop_token_ids(tokenizer, merged.generation_config.eos_token_id)

    # ------------------------------------------------------------------------------------------
    # save into a temporary sibling, then move into place: a kill never leaves half a checkpoint
    with staged_folder(out) as tmp:
        merged.save_pretrained(str(tmp), safe_serialization=True, max_shard_size=max_shard_size)
        tokenizer.save_pretrained(str(tmp))
        (tmp / CHAT_TEMPLATE_FILE).write_text(tokenizer.chat_template, encoding="utf-8")
        merged.generation_config.save_pretrained(str(tmp))
        write_json(
            tmp / "run_config.json",
            run_config(
                flags,
                resolved={
                    "base_model": base_model,
                    "dtype": precision_name,
                    "base_pre_quantized": pre_quantized,
                    "prompt_template": settings["prompt_template"],
                    "system_prompt": settings["system_prompt"],
                    "stop_token_ids": merged.generation_config.eos_token_id,
                },
                adapter={
                    "path": str(Path(lora_weights).resolve()),
                    "config": adapter_config,
                    "trained_with": trained_on,
                    "weights_sha256": file_sha256(adapters.weights_file(lora_weights)),
                },
            ),
        )
    shards = sorted(p.name for p in out.glob("*.safetensors"))
    logger.info(
        "merged checkpoint written to %s (%d shard(s), %s, prompt %s)",
        out,
        len(shards),
        precision_name,
        settings["prompt_template"],
    )
    return str(out)


if __name__ == "__main__":
    from utils.cli import run

    run(main)
