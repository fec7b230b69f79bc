"""Build a random-weight LLaMA folder of a real architecture (default: LLaMA-7B), without downloading.

For speed and memory benchmarks on a GPU: the compute of a 7B model is the same whatever its weights.
The tokenizer is the embedded tiny base's (its ids all fall inside the 32000-token vocabulary).

    python bench/make_random_llama.py --out_dir /data/random-llama-7b            # ~13 GB in bf16
    python bench/train_speed.py --base_model /data/random-llama-7b --num_examples 2000
    python bench/make_random_llama.py --out_dir /tmp/r --preset tiny              # a quick check on CPU
"""

import json
import logging
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from utils.args import flag, help_text, parse  # noqa: E402 (after the path is set)
from utils.cli import UserError  # noqa: E402

logger = logging.getLogger("make_random_llama")

PRESETS = {
    # LLaMA-7B (decapoda-research/llama-7b-hf, HuaTuo's base) / Llama-2-7B
    "7b": dict(
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        vocab_size=32000,
        max_position_embeddings=2048,
        rms_norm_eps=1e-6,
    ),
    "tiny": dict(
        hidden_size=256,
        intermediate_size=704,
        num_hidden_layers=2,
        num_attention_heads=8,
        num_key_value_heads=8,
        vocab_size=32000,
        max_position_embeddings=2048,
        rms_norm_eps=1e-6,
    ),
}


@dataclass
class RandomLlamaArgs:
    """The folder to write and the architecture to give it."""

    out_dir: str = flag("", "folder to write (config.json, weights, tokenizer)")
    preset: str = flag("7b", "7b | tiny")
    config_json: str = flag("", "a config.json to use instead of a preset (e.g. a real checkpoint's)")
    dtype: str = flag("bf16", "bf16 | fp16 | fp32: the saved weights' type")
    seed: int = flag(0, "weight initialisation seed")


GROUPS = (RandomLlamaArgs,)


def main(**flags):
    (args,) = parse(GROUPS, flags)
    out_dir, preset, config_json, dtype, seed = args.out_dir, args.preset, args.config_json, args.dtype, args.seed
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from utils.model.tiny_base import ensure_tiny_base

    if not out_dir:
        raise UserError("pass --out_dir DIR")
    if config_json:
        settings = json.loads(Path(config_json).read_text())
    elif preset in PRESETS:
        settings = PRESETS[preset]
    else:
        raise UserError(f"--preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    if dtype not in dtypes:
        raise UserError(f"--dtype must be one of {', '.join(dtypes)}, got {dtype!r}")
    tiny = Path(ensure_tiny_base())
    config = LlamaConfig(
        **{k: v for k, v in settings.items() if k not in ("architectures", "model_type", "torch_dtype", "dtype")}
    )
    config.bos_token_id, config.eos_token_id, config.pad_token_id = 1, 2, None
    torch.manual_seed(seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"  # initialising 7B on a GPU takes seconds, on a CPU minutes
    with torch.device(device):
        model = LlamaForCausalLM(config).to(dtypes[dtype])
    n_params = sum(p.numel() for p in model.parameters())
    out = Path(out_dir)
    model.save_pretrained(out)
    for path in tiny.iterdir():
        if path.name.startswith(("tokenizer", "special_tokens")):
            shutil.copy(path, out / path.name)
    logger.info("wrote a random-weight LLaMA (%.2fB parameters, %s) to %s", n_params / 1e9, dtype, out)


if __name__ == "__main__":
    from utils.cli import run

    run(main, help_text(GROUPS, __doc__))
