"""Build the embedded default base model: a tiny LLaMA-architecture checkpoint.

The project must run end to end on a CPU-only machine with no model hub, so it carries its own
base model, built from the repository's own Chinese text in well under a minute:

* a LLaMA-style sentencepiece tokenizer (BPE, byte fallback, identity normalization, split digits,
  unk=0 / bos=1 / eos=2, no pad token), saved both as ``tokenizer.model`` and as the converted
  ``tokenizer.json`` so that ``AutoTokenizer`` loads it like any HF LLaMA checkpoint;
* a randomly initialised ``LlamaForCausalLM`` of a few million parameters (fixed seed).

The folder is never committed; scripts call :func:`ensure_tiny_base` when no base model is given.
A ``build_info.json`` records a hash of the source text and of the build settings, so a stale
folder (the data changed, the recipe changed) is rebuilt instead of silently reused.

    python -m utils.tiny_base                  # builds models/tiny-llama/
    python -m utils.tiny_base --out_dir /tmp/x --force
"""

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DIR = REPO_ROOT / "models" / "tiny-llama"

# The text the tokenizer learns from: everything Chinese the repository itself ships.
SOURCE_GLOBS = ("data/*.json", "data/knowledge/*.jsonl", "templates/*.json")

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

# Always present in the corpus so the tokenizer covers the prompt scaffolding and digits even in a
# checkout whose data folder is empty.
SEED_TEXT = """下面是一个问题，运用医学知识来正确回答提问.
### 问题:
### 回答:
Below is an instruction that describes a task. Write a response that appropriately completes the request.
### Instruction:
### Input:
### Response:
0123456789 患者 医生 症状 治疗 药物 检查 疾病 科室 并发症 不良反应 用法用量 禁忌 手术 诊断
"""


def _source_files(root: Path) -> list[Path]:
    files: list[Path] = []
    for pattern in SOURCE_GLOBS:
        files.extend(sorted(root.glob(pattern)))
    return files


def repository_text(root: Path = REPO_ROOT) -> list[str]:
    """The repository's own Chinese text (data, knowledge base, templates), one line per paragraph:
    what the embedded tokenizer learns from (tests build other architectures' tokenizers from it too)."""
    return _corpus_lines(_source_files(Path(root)))


def _corpus_lines(files: list[Path]) -> list[str]:
    """Every string value of the JSON / JSON Lines sources, one line per paragraph."""
    lines = SEED_TEXT.splitlines()

    def walk(value):
        if isinstance(value, str):
            lines.extend(part for part in value.splitlines() if part.strip())
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        try:
            walk(json.loads(text))
        except json.JSONDecodeError:  # JSON Lines, or a file a user is still editing
            for raw in text.splitlines():
                try:
                    walk(json.loads(raw))
                except json.JSONDecodeError:
                    if raw.strip():
                        lines.append(raw.strip())
    return lines


def _fingerprint(lines: list[str]) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps([RECIPE_VERSION, VOCAB_SIZE, MODEL_CONFIG, SEED]).encode())
    for line in lines:
        digest.update(line.encode("utf-8") + b"\n")
    return digest.hexdigest()


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


def build_tiny_base(out_dir: str | os.PathLike = DEFAULT_DIR, source_root: str | os.PathLike = REPO_ROOT) -> Path:
    """Build tokenizer + model into ``out_dir`` (replacing what is there) and return the path."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaTokenizer

    out_dir = Path(out_dir)
    files = _source_files(Path(source_root))
    lines = _corpus_lines(files)
    fingerprint = _fingerprint(lines)
    logger.info("building tiny base in %s from %d lines of %d files", out_dir, len(lines), len(files))

    # Build in a sibling temp folder and move it into place at the end: a kill mid-build never
    # leaves a half-written folder that ensure_tiny_base() would take for complete.
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".tiny-base-", dir=out_dir.parent))
    try:
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
            "fingerprint": fingerprint,
            "recipe_version": RECIPE_VERSION,
            "sources": [str(path.relative_to(source_root)) for path in files],
            "corpus_lines": len(lines),
            "vocab_size": len(tokenizer),
            "parameters": sum(p.numel() for p in model.parameters()),
        }
        (work / "build_info.json").write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(work, out_dir)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    logger.info("tiny base ready: %s (%d parameters, vocab %d)", out_dir, info["parameters"], info["vocab_size"])
    return out_dir


def is_current(out_dir: str | os.PathLike = DEFAULT_DIR, source_root: str | os.PathLike = REPO_ROOT) -> bool:
    """True when ``out_dir`` holds a complete build from the current sources and recipe."""
    info_path = Path(out_dir) / "build_info.json"
    if not info_path.is_file():
        return False
    info = json.loads(info_path.read_text())
    return info.get("fingerprint") == _fingerprint(_corpus_lines(_source_files(Path(source_root))))


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
