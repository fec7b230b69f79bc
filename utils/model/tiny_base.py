"""Build the embedded default base model: a tiny LLaMA-architecture checkpoint.

The project must run end to end on a CPU-only machine with no model hub, so it carries its own
base model, built from the repository's own Chinese text in well under a minute:

* a LLaMA-style sentencepiece tokenizer (BPE, byte fallback, identity normalization, split digits,
  unk=0 / bos=1 / eos=2, no pad token), saved both as ``tokenizer.model`` and as the converted
  ``tokenizer.json`` so that ``AutoTokenizer`` loads it like any HF LLaMA checkpoint;
* a randomly initialised ``LlamaForCausalLM`` of a few million parameters (fixed seed).

The tokenizer learns from ``utils/tiny_base_corpus.txt.gz``, a frozen snapshot of the repository's
Chinese text (data, knowledge base, templates, as of the data set of November 2026; the build is
byte-identical to the one made from those files then): rebuilding the data set does not change the
token ids, so adapters trained on the tiny base stay valid. The folder is never committed; scripts call
:func:`ensure_tiny_base` when no base model is given. ``build_info.json`` records the fingerprint of
the corpus and the build settings, so a stale folder (the recipe changed) is rebuilt instead of
silently reused, and ``run_config.json`` of an adapter records it (``utils/model/adapters.py`` refuses an
adapter trained on a tiny base with other token ids).

    python -m utils.model.tiny_base                  # builds models/tiny-llama/
    python -m utils.model.tiny_base --out_dir /tmp/x --force
"""

import hashlib
import json
import logging
import os
from pathlib import Path

from utils.files import REPO_ROOT

logger = logging.getLogger(__name__)

DEFAULT_DIR = REPO_ROOT / "models" / "tiny-llama"

# The text the tokenizer learns from (one line per paragraph), frozen so the ids never move with the data.
CORPUS_FILE = Path(__file__).resolve().parent / "tiny_base_corpus.txt.gz"

# Build settings. Any change here changes RECIPE_VERSION's hash and forces a rebuild.
VOCAB_SIZE = 3000
MODEL_CONFIG = dict(
    hidden_size=256,
    intermediate_size=704,  # a multiple of 32, like 7B's 11008 (bitsandbytes CPU 4-bit kernels need it)
    num_hidden_layers=4,
    num_attention_heads=8,
    num_key_value_heads=8,
    max_position_embeddings=1024,
    rms_norm_eps=1e-6,
    rope_theta=10000.0,
    tie_word_embeddings=False,
    initializer_range=0.02,
)
SEED = 1234
RECIPE_VERSION = 1


def corpus_lines() -> list[str]:
    """The tokenizer's training text, one line per paragraph (tests build other architectures'
    tokenizers from it too)."""
    import gzip

    return gzip.decompress(CORPUS_FILE.read_bytes()).decode("utf-8").splitlines()


def fingerprint() -> str:
    """The build's identity: recipe settings and corpus. Equal fingerprints mean equal token ids."""
    digest = hashlib.sha256()
    digest.update(json.dumps([RECIPE_VERSION, VOCAB_SIZE, MODEL_CONFIG, SEED]).encode())
    digest.update(CORPUS_FILE.read_bytes())
    return digest.hexdigest()


def fingerprint_of(folder: str | os.PathLike) -> str | None:
    """The fingerprint recorded in a tiny-base folder (None for any other model folder)."""
    info_path = Path(folder) / "build_info.json"
    if not info_path.is_file():
        return None
    return json.loads(info_path.read_text(encoding="utf-8")).get("fingerprint")


def _train_sentencepiece(lines: list[str], model_prefix: str) -> None:
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_prefix=model_prefix,
        model_type="bpe",
        vocab_size=VOCAB_SIZE,
        character_coverage=0.9995,
        byte_fallback=True,
        split_digits=True,
        normalization_rule_name="identity",
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        hard_vocab_limit=False,
        num_threads=1,  # single-threaded: the merges, and so the ids, are reproducible
        minloglevel=2,
    )


def build_tiny_base(out_dir: str | os.PathLike = DEFAULT_DIR) -> Path:
    """Build tokenizer + model into ``out_dir`` (replacing what is there) and return the path."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaTokenizer

    from utils.files import staged_folder, write_atomic

    out_dir = Path(out_dir)
    lines = corpus_lines()
    logger.info("building tiny base in %s from %d lines of %s", out_dir, len(lines), CORPUS_FILE.name)
    # Built in a sibling folder that replaces out_dir at the end: a kill mid-build never leaves a
    # half-written folder that ensure_tiny_base() would take for complete.
    with staged_folder(out_dir) as work:
        _train_sentencepiece(lines, str(work / "tokenizer"))
        (work / "tokenizer.vocab").unlink()
        # LlamaTokenizer converts the sentencepiece model to a `tokenizers` BPE with byte fallback
        # and Metaspace pre-tokenization, exactly as for Meta's LLaMA checkpoints.
        tokenizer = LlamaTokenizer.from_pretrained(
            str(work), vocab_file=str(work / "tokenizer.model"), legacy=False, add_bos_token=True, add_eos_token=False
        )
        tokenizer.model_max_length = MODEL_CONFIG["max_position_embeddings"]
        tokenizer.save_pretrained(str(work))

        torch.manual_seed(SEED)
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=None,
            torch_dtype="float32",
            **MODEL_CONFIG,
        )
        model = LlamaForCausalLM(config)
        model.generation_config.bos_token_id = tokenizer.bos_token_id
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.save_pretrained(str(work))

        info = {
            "fingerprint": fingerprint(),
            "recipe_version": RECIPE_VERSION,
            "corpus": CORPUS_FILE.name,
            "corpus_lines": len(lines),
            "vocab_size": len(tokenizer),
            "parameters": sum(p.numel() for p in model.parameters()),
        }
        write_atomic(work / "build_info.json", json.dumps(info, indent=2, ensure_ascii=False) + "\n")
    logger.info("tiny base ready: %s (%d parameters, vocab %d)", out_dir, info["parameters"], info["vocab_size"])
    return out_dir


def is_current(out_dir: str | os.PathLike = DEFAULT_DIR) -> bool:
    """True when ``out_dir`` holds a complete build of the current corpus and recipe."""
    return fingerprint_of(out_dir) == fingerprint()


def ensure_tiny_base(out_dir: str | os.PathLike = DEFAULT_DIR) -> str:
    """Return the tiny base folder, building (or rebuilding a stale one) first when needed."""
    if not is_current(out_dir):
        build_tiny_base(out_dir)
    return str(out_dir)


def main(out_dir: str = str(DEFAULT_DIR), force: bool = False) -> None:
    """Build the tiny base model (skipped when an up-to-date one is already there, unless --force)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if force or not is_current(out_dir):
        build_tiny_base(out_dir)
    info = json.loads((Path(out_dir) / "build_info.json").read_text())
    print(f"tiny base: {out_dir} ({info['parameters']:,} parameters, vocab {info['vocab_size']})")


if __name__ == "__main__":
    import fire

    fire.Fire(main)
