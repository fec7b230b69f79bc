"""The memory plan of real 7-8B models on real card sizes, from their published config.json alone.

For LLaMA-7B, Llama-3-8B and Qwen2.5-7B (config-only folders in bench/configs/) x 16-bit / 8-bit /
4-bit x 24 / 40 / 80 GB it runs ``finetune.py --dry_run`` (the same code that plans a real run) on the
HuaTuo's data (``../shared/huatuo/llama_data.json`` when present, else data/llama_data.json) and
prints: the micro-batch and checkpointing the plan picks, its peak, the smallest run (one example,
checkpointing on: what peers' "hardware requirement" tables quote), and predicted tokens/s at a
stated MFU. No GPU is used; bench/RESULTS.md has the commands that measure the same on one.

    python bench/gpu_plan.py                       # the 27-row table
    python bench/gpu_plan.py --mfu 0.35 --models llama-7b --gpus 24
"""

import contextlib
import io
import json
import logging
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

CONFIGS = REPO_ROOT / "bench" / "configs"
HUATUO_DATA = REPO_ROOT.parent / "shared" / "huatuo" / "llama_data.json"
# dense bf16 tensor peak of a typical card of each size, TFLOP/s (vendor data sheets)
CARDS = {24: ("RTX 4090", 165), 40: ("A100-40GB", 312), 80: ("H100-80GB SXM", 989)}
QUANT_FLAGS = {"16bit": {}, "8bit": {"load_8bit": True}, "4bit": {"load_4bit": True}}
# LLaMA-Factory README, "Hardware Requirement" (estimated, 7B): LoRA 16-bit 16 GB, QLoRA 8-bit 10 GB, QLoRA 4-bit 6 GB
PUBLISHED_7B = {"16bit": 16, "8bit": 10, "4bit": 6}


def dry_run(**flags) -> dict:
    """``finetune.train(dry_run=True)``: the JSON object of its last stdout line."""
    import finetune

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        finetune.train(dry_run=True, wandb_project="", **flags)
    return json.loads(out.getvalue().strip().splitlines()[-1])


def tokens_per_second(params: float, checkpointing: bool, card_tflops: float, mfu: float) -> float:
    """LoRA training FLOPs per token: forward 2N, backward through frozen weights 2N (no weight
    gradients), +2N to recompute the forward with checkpointing."""
    flops = (6 if checkpointing else 4) * params
    return mfu * card_tflops * 1e12 / flops


def main(
    models: str = "llama-7b,llama-3-8b,qwen2.5-7b", gpus: str = "24,40,80", mfu: float = 0.35, data_path: str = ""
):
    logging.disable(logging.WARNING)
    data = data_path or str(HUATUO_DATA if HUATUO_DATA.is_file() else REPO_ROOT / "data" / "llama_data.json")
    gpu_list = [int(g) for g in str(gpus).split(",")]
    print(
        f"data: {data}; MFU {mfu:.0%} of the card's dense bf16 peak (8-/4-bit matmuls run slower: an upper bound "
        f"there)\n"
    )
    print(
        "| model | weights | GPU | micro-batch (tokens) | checkpointing | est. peak GiB | fits | smallest run GiB | "
        "tokens/s at MFU |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for model in str(models).split(","):
        for quant, flags in QUANT_FLAGS.items():
            smallest = dry_run(
                base_model=str(CONFIGS / model),
                data_path=data,
                gpu_memory="200GiB",
                micro_batch_size=1,
                gradient_checkpointing=True,
                **flags,
            )
            for gib in gpu_list:
                plan = dry_run(base_model=str(CONFIGS / model), data_path=data, gpu_memory=f"{gib}GiB", **flags)
                params = plan["params"]
                card, tflops = CARDS.get(gib, (f"{gib} GB card", float("nan")))
                speed = tokens_per_second(params, plan["gradient_checkpointing"], tflops, mfu)
                print(
                    f"| {model} | {quant} | {gib} GB ({card}) | {plan['micro_batch_size']} "
                    f"({plan['tokens_per_micro_batch']}) | "
                    f"{'on' if plan['gradient_checkpointing'] else 'off'} | {plan['peak_gib']:.1f} | "
                    f"{'yes' if plan['fits'] else 'NO'} | "
                    f"{smallest['peak_gib']:.1f}"
                    + (f" (LLaMA-Factory: ~{PUBLISHED_7B[quant]} GB)" if model == "llama-7b" else "")
                    + f" | {speed:,.0f} |"
                )


if __name__ == "__main__":
    import fire

    fire.Fire(main)
