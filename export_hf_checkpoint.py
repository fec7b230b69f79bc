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
checkpoint, not a 27 GB fp32 one. The merge itself is ``utils/model/export.py``'s.

Adapters trained on an 8-bit/4-bit base (``--load_8bit``/``--load_4bit`` in finetune.py) are merged
into a 16/32-bit copy of the same base: quantized weights cannot hold the sum exactly, so the merge
never happens inside them. A base checkpoint that is itself saved quantized is dequantized first.
"""

import logging
from dataclasses import dataclass

from utils.args import AdapterArgs, PromptArgs, flag, help_text, parse
from utils.cli import UserError
from utils.model.export import DEFAULT_LORA, MergeModelArgs, export_checkpoint


@dataclass
class ExportModelArgs(MergeModelArgs):
    """The base model the adapter is merged into (16/32 bit: --load_8bit / --load_4bit are refused)."""

    precision: str = flag(
        "auto", "the merged weights' dtype: auto (the base's own, from its config.json) | fp32 | bf16 | fp16"
    )


@dataclass
class ExportAdapterArgs(AdapterArgs):
    """The adapter to merge (--use_lora False is refused: there would be nothing to merge)."""

    lora_weights: str = flag(
        "", f"adapter folder written by finetune.py (or an old peft one); '' = $LORA_WEIGHTS, else {DEFAULT_LORA}"
    )


@dataclass
class ExportArgs:
    """Where the merged checkpoint goes."""

    output_dir: str = flag("./llama-med-merged", "the merged checkpoint's folder (must not hold another model)")
    max_shard_size: str = flag("5GB", "largest safetensors shard, e.g. 2GB or 500MB")
    overwrite: bool = flag(False, "replace an existing checkpoint in --output_dir")


GROUPS = (ExportModelArgs, ExportAdapterArgs, PromptArgs, ExportArgs)


def main(**flags) -> str:
    model, adapter, prompt, run = parse(GROUPS, flags)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if model.load_8bit or model.load_4bit:
        raise UserError(
            "the merge is done in 16/32 bit (quantized weights cannot hold the sum): drop --load_8bit/--load_4bit"
        )
    if not adapter.use_lora:
        raise UserError("--use_lora False: there is no adapter to merge")
    return export_checkpoint(
        base_model=model.base_model,
        lora_weights=adapter.lora_weights,
        output_dir=run.output_dir,
        max_shard_size=run.max_shard_size,
        precision=model.precision,
        prompt_template=prompt.prompt_template,
        system_prompt=prompt.system_prompt,
        trust_remote_code=model.trust_remote_code,
        overwrite=run.overwrite,
    )


if __name__ == "__main__":
    from utils.cli import run

    run(main, help_text(GROUPS, __doc__))
