"""Merge a LoRA adapter into its base model and save a plain Hugging Face checkpoint.

The result loads with ``AutoModelForCausalLM.from_pretrained`` alone (no peft): safetensors shards,
the tokenizer, the generation config, and ``run_config.json`` saying what was merged.

    # the adapter trained by finetune.py on the embedded tiny LLaMA
    python export_hf_checkpoint.py --lora_weights ./lora-llama-med --output_dir ./llama-med-merged

    # a 7B base, written in bf16 in 2 GB shards
    python export_hf_checkpoint.py --base_model meta-llama/Llama-2-7b-hf --lora_weights ./lora-llama-med \\
        --output_dir ./llama-med-merged --precision bf16 --max_shard_size 2GB

Adapters trained on an 8-bit/4-bit base (``--load_8bit``/``--load_4bit`` in finetune.py) are merged
into a 16/32-bit copy of the same base: quantized weights cannot hold the sum exactly, so the merge
never happens inside them. A base checkpoint that is itself saved quantized is dequantized first.
"""

import json
import logging
import shutil
import tempfile
from pathlib import Path

from utils import modeling
from utils.runinfo import file_sha256, run_config, write_json

logger = logging.getLogger("export_hf_checkpoint")


def main(
    base_model: str = "",  # HF model folder or hub id the adapter was trained on; "" = the embedded tiny LLaMA
    lora_weights: str = "./lora-llama-med",  # adapter folder written by finetune.py (or an old peft one)
    output_dir: str = "./llama-med-merged",  # where the merged checkpoint goes (must not hold another model)
    max_shard_size: str = "5GB",  # largest safetensors shard, e.g. 2GB or 500MB
    precision: str = "fp32",  # fp32 | bf16 | fp16: dtype of the merged weights
    trust_remote_code: bool = False,  # run model code shipped with the checkpoint (only if you trust it)
    overwrite: bool = False,  # replace an existing checkpoint in output_dir
):
    flags = dict(locals())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if precision not in modeling.DTYPES:
        raise ValueError(f"precision must be one of {', '.join(modeling.DTYPES)} (the merged weights' dtype), got {precision!r}")
    out = Path(output_dir)
    if (out / "config.json").exists() and not overwrite:
        raise ValueError(f"{out} already holds a model (config.json); pass --overwrite to replace it")
    if not Path(lora_weights).is_dir():
        raise FileNotFoundError(f"LoRA adapter folder {lora_weights} not found (pass --lora_weights DIR)")

    # ------------------------------------------------------------------------------------------
    # base in 16/32 bit, never quantized: the merge adds B@A into these weights
    from transformers import AutoConfig

    base_model = modeling.resolve_base_model(base_model)
    tokenizer = modeling.load_tokenizer(base_model, trust_remote_code)
    config = AutoConfig.from_pretrained(base_model, trust_remote_code=trust_remote_code)
    pre_quantized = getattr(config, "quantization_config", None) is not None
    adapter_config = json.loads((Path(lora_weights) / "adapter_config.json").read_text(encoding="utf-8"))
    trained_on = json.loads((Path(lora_weights) / "run_config.json").read_text()).get("flags", {}) if (
        Path(lora_weights) / "run_config.json").is_file() else {}  # fmt: skip
    if trained_on.get("load_8bit") or trained_on.get("load_4bit"):
        logger.warning(
            "the adapter was trained on a %s base: merging it into a %s copy of the base instead "
            "(quantized weights cannot hold the merged sum); outputs can differ slightly from the quantized model's",
            "8-bit" if trained_on.get("load_8bit") else "4-bit", precision,
        )  # fmt: skip
    model = modeling.load_model(
        base_model, precision=precision, device_map={"": "cpu"}, trust_remote_code=trust_remote_code
    )
    if pre_quantized:
        logger.warning("%s is saved quantized: dequantizing it to %s before merging", base_model, precision)
        model = model.dequantize()
        model.to(modeling.DTYPES[precision])
    if any(type(m).__module__.startswith("bitsandbytes") for m in model.modules()):
        raise ValueError(f"{base_model}: quantized layers remain after loading in {precision}; refusing to merge into them")

    # ------------------------------------------------------------------------------------------
    # merge
    model = modeling.load_adapter(model, lora_weights)
    logger.info("merging %s (r=%s, alpha=%s, targets=%s)", lora_weights, adapter_config.get("r"),
                adapter_config.get("lora_alpha"), adapter_config.get("target_modules"))  # fmt: skip
    merged = model.merge_and_unload(safe_merge=True)  # safe_merge: refuse NaN/inf instead of writing them
    merged.config.use_cache = True
    precision_name = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}[precision]
    for param in merged.parameters():
        param.requires_grad_(False)

    # ------------------------------------------------------------------------------------------
    # save into a temporary sibling, then move into place: a kill never leaves half a checkpoint
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        merged.save_pretrained(str(tmp), safe_serialization=True, max_shard_size=max_shard_size)
        tokenizer.save_pretrained(str(tmp))
        merged.generation_config.save_pretrained(str(tmp))
        write_json(
            tmp / "run_config.json",
            run_config(
                flags,
                resolved={"base_model": base_model, "dtype": precision_name, "base_pre_quantized": pre_quantized},
                adapter={"path": str(Path(lora_weights).resolve()), "config": adapter_config, "trained_with": trained_on,
                         "weights_sha256": file_sha256(modeling.adapter_weights_file(lora_weights))},
            ),
        )  # fmt: skip
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    shards = sorted(p.name for p in out.glob("*.safetensors"))
    logger.info("merged checkpoint written to %s (%d shard(s), %s)", out, len(shards), precision_name)
    return str(out)


if __name__ == "__main__":
    from utils.cli import run

    run(main)
