"""Load tokenizers, base models and LoRA adapters the same way in every script.

* ``base_model=""`` means the embedded tiny LLaMA (built on first use, see ``utils/model/tiny_base.py``),
  announced by a banner on stderr: its weights are random and its answers are not medicine.
* ``load_8bit`` / ``load_4bit`` go through ``BitsAndBytesConfig`` (CPU and GPU alike).
* ``precision="auto"`` picks bf16 on GPUs that support it, fp16 on older GPUs and for 8-bit bases
  (bitsandbytes' int8 matmul computes in fp16), fp32 on CPU, and bf16 for training on CPUs with AMX
  (where it is faster than fp32; with AVX512-BF16 alone it is slower); never fp16 on CPU (it overflows).
* The pad token comes from the tokenizer, else unk, else a reserved pad token, else eos: never a
  hard-coded 0 (a real token in Llama-3 and Qwen vocabularies).
* LoRA targets ``auto`` are chosen from the architecture (``LORA_TARGETS``); unknown names are an
  error listing the model's linear layers.
* A base model is a folder or a hub id (through the hub cache, offline-capable: ``utils/model/hub.py``);
  adapters (folder format, old peft ``.bin``, run_config read-back) are ``utils/model/adapters.py``'s.
* Remote code runs only with ``trust_remote_code=True``.
"""

import inspect
import logging
import os
from pathlib import Path

import torch

from utils.cli import UserError
from utils.model import adapters, hub, tiny_base

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


# ----------------------------------------------------------------------------------------------
# devices and precision


def world_info() -> tuple[int, int, int]:
    """(world_size, rank, local_rank) from the torchrun / accelerate environment."""
    return (
        int(os.environ.get("WORLD_SIZE", 1)),
        int(os.environ.get("RANK", 0)),
        int(os.environ.get("LOCAL_RANK", 0)),
    )


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matmuls run natively on this CPU (elsewhere they are emulated, slowly)."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's own capability checks
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def cpu_bf16_is_faster() -> bool:
    """AMX tiles: bf16 training beats fp32 on this CPU. With AVX512-BF16 alone it does not (measured on
    this machine, AVX512-BF16 without AMX: 45 s in bf16 vs 38 s in fp32 for the same run)."""
    return getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()


def cuda_supports_bf16() -> bool:
    """bf16 with tensor cores needs compute capability 8.0 (Ampere) or newer. On a V100 or T4
    ``torch.cuda.is_bf16_supported()`` is True through emulation, which is slow: fp16 there."""
    return torch.cuda.get_device_capability()[0] >= 8


def resolve_precision(precision: str = "auto", training: bool = False, load_8bit: bool = False) -> str:
    """``auto`` -> bf16 on GPUs of compute capability >= 8.0, fp16 on older GPUs and for an 8-bit base
    (bitsandbytes' ``MatMul8bitLt`` casts every other input to fp16 and logs it at each call:
    bitsandbytes/autograd/_functions.py:128-129, 0.50.2); on CPU fp32, except for training on a CPU
    with AMX, where bf16 is faster (bench/RESULTS.md). Inference stays fp32 on CPU, where batched and
    one-at-a-time greedy answers must agree token for token. fp16 is never chosen on CPU (it overflows)."""
    if precision not in PRECISIONS:
        raise UserError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        if not torch.cuda.is_available() and (
            precision == "fp16" or (precision == "bf16" and not cpu_has_native_bf16())
        ):
            logger.warning("precision %s requested on a CPU without native support: slow or unstable", precision)
        elif torch.cuda.is_available() and precision == "bf16" and not cuda_supports_bf16():
            logger.warning(
                "precision bf16 on a GPU of compute capability < 8.0 is emulated (slow); fp16 is native there"
            )
        return precision
    if torch.cuda.is_available():
        return "bf16" if cuda_supports_bf16() and not load_8bit else "fp16"
    return "bf16" if training and cpu_bf16_is_faster() else "fp32"


def claim_device(world_size: int, local_rank: int) -> str:
    """Bind this process to its GPU before anything touches CUDA, and say which it is.

    Under torchrun every rank would otherwise open its first CUDA context (``mem_get_info`` of the
    memory plan, the model load) on GPU 0, ~0.5-0.9 GB each that rank 0's plan does not count; the
    Trainer only calls ``set_device`` when its arguments are first used (transformers
    training_args.py ``_setup_devices``). A single process trains on one GPU, ``cuda:0`` (the first
    visible one), however many are visible (utils.train.arguments.OneGpuArguments keeps the Trainer to it)."""
    if not torch.cuda.is_available():
        return "cpu"
    if world_size > 1:
        torch.cuda.set_device(local_rank)
        return f"cuda:{local_rank}"
    visible = torch.cuda.device_count()
    if visible > 1:
        logger.info(
            "single process: training on cuda:0 only, the first of %d visible GPUs (torchrun --nproc_per_node %d uses "
            "them all)",
            visible,
            visible,
        )
    return "cuda:0"


def device_map_for(world_size: int, local_rank: int, sharded: bool = False):
    """Where the base model's weights go: the process's own GPU (one per process under torchrun;
    the current one otherwise), never spread over several GPUs (one busy at a time) or offloaded.
    ``sharded`` (FSDP / ZeRO-3): nowhere (None), so that the engine's own loading (DeepSpeed's
    ``zero.Init``, FSDP's rank-0 loading) shards the weights as they are read."""
    if sharded:
        return None
    if not torch.cuda.is_available():
        return {"": "cpu"}
    return {"": local_rank if world_size > 1 else torch.cuda.current_device()}


ATTENTION = ("auto", "sdpa", "eager", "flash_attention_2")


def resolve_attention(attn_implementation: str, check_installed: bool = True) -> str:
    """Check the attention implementation can run here; flash_attention_2 needs the flash-attn package.
    ``auto`` is transformers' own choice: SDPA where the architecture has it, else eager."""
    if attn_implementation not in ATTENTION:
        raise UserError(f"--attn_implementation must be one of {', '.join(ATTENTION)}, got {attn_implementation!r}")
    if attn_implementation == "flash_attention_2" and check_installed:
        from transformers.utils import is_flash_attn_2_available

        if not is_flash_attn_2_available():
            raise UserError(
                "--attn_implementation flash_attention_2 needs the flash-attn package and a CUDA GPU (pip install "
                "flash-attn); or use sdpa"
            )
    return attn_implementation


# ----------------------------------------------------------------------------------------------
# base model and tokenizer


TINY_BASE_BANNER = """
================================================================================
 Base model: the EMBEDDED TINY DEMO MODEL (%s).
 Its weights are RANDOM: it runs the pipeline end to end, but its answers are
 NOT medicine and mean nothing. For a real model pass --base_model with a model
 folder or a hub id (e.g. --base_model /models/llama-7b-hf).
================================================================================"""


def resolve_base_model(base_model: str) -> str:
    """The local folder of ``base_model`` (a folder, or a hub id through the hub cache); "" builds/uses
    the embedded tiny base. Whenever the tiny base is used, a banner on stderr says so."""
    if base_model:
        path = hub.resolve_folder(
            base_model,
            "base model",
            "config.json",
            hub.MODEL_FILES,
            hub.MODEL_BIN_FILES,
            hint="a Hugging Face model folder holds config.json, weights and tokenizer; or leave --base_model empty "
            "for the embedded tiny LLaMA",
        )
    else:
        path = tiny_base.ensure_tiny_base()
    if tiny_base.fingerprint_of(path):
        logger.warning(TINY_BASE_BANNER, path)
    return path


# Tokens some vocabularies reserve for padding (Llama-3.1's <|finetune_right_pad_id|>, ...).
PAD_CANDIDATES = ("<|finetune_right_pad_id|>", "<|pad|>", "<pad>", "[PAD]")


def resolve_pad_token(tokenizer) -> None:
    """Give the tokenizer a pad token when it has none: unk, else a reserved pad token of its
    vocabulary, else eos (Llama-3, Qwen chat). Padding is never learnt or attended to (the collator
    builds the attention mask and pads labels with -100), so reusing eos is safe."""
    if tokenizer.pad_token_id is not None:
        return
    vocab = tokenizer.get_vocab()
    reserved = [token for token in PAD_CANDIDATES if token in vocab]
    if tokenizer.unk_token_id is not None:
        tokenizer.pad_token = tokenizer.unk_token
    elif reserved:
        tokenizer.pad_token = reserved[0]
    elif tokenizer.eos_token_id is not None:
        tokenizer.pad_token = tokenizer.eos_token
    else:
        raise UserError("the tokenizer has neither pad, unk nor eos token; cannot pad batches")
    logger.info("tokenizer has no pad token: padding with %r (id %d)", tokenizer.pad_token, tokenizer.pad_token_id)


TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "vocab.json",
    "tokenizer_config.json",
    "spiece.model",
    "vocab.txt",
)


def load_tokenizer(base_model: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    folder = Path(base_model)
    if folder.is_dir() and not any((folder / name).is_file() for name in TOKENIZER_FILES):
        # AutoTokenizer would otherwise build an empty tokenizer for some model types
        raise FileNotFoundError(f"{folder} has no tokenizer files ({', '.join(TOKENIZER_FILES[:3])}, ...)")
    tokenizer = AutoTokenizer.from_pretrained(base_model, trust_remote_code=trust_remote_code)
    resolve_pad_token(tokenizer)
    return tokenizer


def check_quantization(load_8bit: bool, load_4bit: bool, sharded: str | None = None) -> None:
    if load_8bit and load_4bit:
        raise UserError("choose one of --load_8bit and --load_4bit")
    if load_8bit and sharded:
        raise UserError(
            f"--load_8bit cannot be sharded ({sharded.split(' (')[0]}): use --load_4bit, or DDP "
            f"(configs/accelerate/ddp.yaml)"
        )


def quantization_config(load_8bit: bool, load_4bit: bool, compute_dtype: torch.dtype, sharded: str | None = None):
    """bitsandbytes settings. ``sharded`` (why parameters are sharded, utils/callbacks.parameters_sharded):
    8-bit is refused (int8 weights and their per-row scales cannot be split by FSDP / ZeRO-3), and NF4 is
    stored in the compute dtype (``bnb_4bit_quant_storage``), as FSDP needs one float dtype for every
    parameter of a wrapped unit (uint8 storage beside bf16 norms fails to flatten)."""
    from transformers import BitsAndBytesConfig

    check_quantization(load_8bit, load_4bit, sharded)
    if load_8bit:
        return BitsAndBytesConfig(
            load_in_8bit=True
        )  # the outlier threshold stays 6.0: LLM.int8's accuracy at 7B needs it
    if load_4bit:  # QLoRA: NF4 weights, double quantization, matmuls in the training precision
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype,
            bnb_4bit_quant_storage=compute_dtype if sharded else torch.uint8,
        )
    return None


class FirstTimeOnly(logging.Filter):
    """Let each message template through once (bitsandbytes logs its fp16 cast at every int8 matmul)."""

    def __init__(self):
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        first = record.msg not in self.seen
        self.seen.add(record.msg)
        return first


def quiet_int8_cast_warning() -> None:
    """Show bitsandbytes' "inputs will be cast ... to float16" once per process, not 224 times per
    LLaMA-7B forward (bitsandbytes/autograd/_functions.py:128-129)."""
    bnb_logger = logging.getLogger("bitsandbytes.autograd._functions")
    if not any(isinstance(f, FirstTimeOnly) for f in bnb_logger.filters):
        bnb_logger.addFilter(FirstTimeOnly())


def load_model(
    base_model: str,
    load_8bit: bool = False,
    load_4bit: bool = False,
    precision: str = "auto",
    device_map=None,
    trust_remote_code: bool = False,
    attn_implementation: str = "auto",
    sharded: str | None = None,
):
    """Load a causal LM (quantized if asked) in the resolved precision. ``sharded`` (FSDP / ZeRO-3,
    with the TrainingArguments already built): no device placement, the engine shards at load."""
    from transformers import AutoModelForCausalLM

    dtype = DTYPES[resolve_precision(precision, load_8bit=load_8bit)]
    if device_map is None:
        world_size, _, local_rank = world_info()
        device_map = device_map_for(world_size, local_rank, sharded=bool(sharded))
    if load_8bit:
        quiet_int8_cast_warning()
    model = AutoModelForCausalLM.from_pretrained(
        base_model,
        dtype=dtype,
        quantization_config=quantization_config(load_8bit, load_4bit, dtype, sharded),
        device_map=device_map,
        trust_remote_code=trust_remote_code,
        attn_implementation=None if attn_implementation == "auto" else attn_implementation,
    )
    return model


def prepare_for_training(model, gradient_checkpointing: bool):
    """Freeze the base and turn on non-reentrant gradient checkpointing if asked.

    Used for 16-bit and 8-/4-bit bases alike, instead of peft's ``prepare_model_for_kbit_training``:
    that upcasts every non-quantized weight (embeddings, norms, output head) to fp32 (+0.5 GB on
    LLaMA-7B, +2.1 GB on Llama-3-8B), which also makes bitsandbytes cast fp32 inputs back at every
    8-bit matmul, and it leaves checkpointing off unless told. Here only the LoRA weights are fp32
    (peft creates them so: the optimizer and fp16's loss scaler need fp32 master weights); frozen
    norms stay in the compute dtype, and LLaMA/Qwen norms compute in fp32 inside anyway.
    Non-reentrant checkpointing needs no ``enable_input_require_grads`` hook."""
    for param in model.parameters():
        param.requires_grad_(False)
    if gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    return model


def packing_problem(model_class, attn_implementation: str, pack_len: int) -> str | None:
    """Why packed examples could attend to each other with this model class and attention, or None.

    transformers' own model classes that take position ids turn restarting position ids into a
    block-diagonal mask (SDPA, eager) or into variable-length flash attention when the micro-batch is
    one flattened row with cu_seq_lens. Model code shipped with a checkpoint may do neither, and a
    model without position ids (Bloom's ALiBi) builds a plain causal mask over the whole row."""
    if model_class is None or not model_class.__module__.startswith("transformers.models."):
        name = getattr(model_class, "__name__", "the checkpoint's own model code")
        return (
            f"{name} is not one of transformers' own model classes, so nothing guarantees that packed examples "
            f"cannot attend to each other"
        )
    if "position_ids" not in inspect.signature(model_class.forward).parameters:
        return f"{model_class.__name__} takes no position ids, so packed examples would attend to each other"
    if attn_implementation.startswith("flash") and pack_len > 0:
        return (
            f"--pack_len {pack_len} with {attn_implementation}: several packed rows without a mask would run plain "
            f"causal "
            "flash attention over each row, across example boundaries; flash packs one flattened row per micro-batch "
            "(--pack_len 0)"
        )
    return None


def resolve_packing(packing: bool | str, config, attn_implementation: str, pack_len: int) -> bool:
    """``auto``: pack when packed examples stay apart with this model (else HuaTuo's padded batches,
    said in one line); ``True`` with a model where they would not is refused."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    problem = packing_problem(MODEL_FOR_CAUSAL_LM_MAPPING.get(type(config), None), attn_implementation, pack_len)
    if str(packing).lower() == "auto":
        if problem:
            logger.info("padded batches instead of packing: %s", problem)
        return problem is None
    if str(packing).lower() in ("true", "1") and problem:
        raise UserError(f"{problem}: use --packing False (or auto)")
    return str(packing).lower() in ("true", "1")


# model_type -> LoRA target modules for --lora_target_modules auto (HuaTuo's q_proj,v_proj for
# LLaMA); types not listed fall back to peft's own table.
LORA_TARGETS = {
    **dict.fromkeys(
        (
            "llama",
            "mistral",
            "mixtral",
            "qwen2",
            "qwen2_moe",
            "qwen3",
            "qwen3_moe",
            "gemma",
            "gemma2",
            "gemma3_text",
            "glm",
            "glm4",
            "internlm",
            "phi",
            "opt",
            "gptj",
            "olmo",
            "olmo2",
            "starcoder2",
        ),
        ["q_proj", "v_proj"],
    ),
    **dict.fromkeys(("bloom", "gpt_neox", "falcon", "chatglm"), ["query_key_value"]),
    "baichuan": ["W_pack"],
    "internlm2": ["wqkv"],
    "phi3": ["qkv_proj"],
    "gpt2": ["c_attn"],
    "mpt": ["Wqkv"],
}


def linear_layer_names(model) -> list[str]:
    """Names (last component) of the model's linear layers a LoRA can adapt, output head excluded."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names = set()
    for name, module in model.named_modules():
        if module is head or not name:
            continue
        if isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D":  # bnb layers subclass Linear
            names.add(name.rsplit(".", 1)[-1])
    return sorted(names)


def resolve_lora_targets(model, requested: list[str] | str) -> list[str] | str:
    """``auto`` -> the architecture's default targets; ``all-linear`` as is; other names checked to exist."""
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_TARGETS

    requested = [requested] if isinstance(requested, str) else list(requested)
    model_type = getattr(model.config, "model_type", "?")
    available = linear_layer_names(model)
    if requested == ["all-linear"]:
        logger.info("LoRA target modules: all linear layers (%s)", ",".join(available))
        return "all-linear"
    if requested in (["auto"], []):
        targets = LORA_TARGETS.get(model_type) or PEFT_TARGETS.get(model_type)
        if not targets:
            raise UserError(
                f"no default LoRA targets for model type {model_type!r}: pass --lora_target_modules with some of its "
                f"linear layers ({', '.join(available)}), or all-linear"
            )
        source = f"default for {model_type}"
    else:
        targets, source = requested, "--lora_target_modules"
    unknown = [t for t in targets if t not in available]
    if unknown:
        raise UserError(
            f"--lora_target_modules {','.join(unknown)}: no such linear layer in this {model_type} model; "
            f"its linear layers are {', '.join(available)} (or pass all-linear)"
        )
    logger.info("LoRA target modules (%s): %s", source, ",".join(targets))
    return list(targets)


def sync_special_tokens(model, tokenizer) -> None:
    """Make the model's config and generation config agree with the tokenizer's special tokens."""
    model.config.pad_token_id = tokenizer.pad_token_id
    gen = getattr(model, "generation_config", None)
    if gen is not None:
        gen.pad_token_id = tokenizer.pad_token_id
        if gen.eos_token_id is None:
            gen.eos_token_id = tokenizer.eos_token_id


def load_tokenizer_and_model(
    base_model: str = "",
    lora_weights: str = "",
    use_lora: bool = True,
    load_8bit: bool = False,
    load_4bit: bool = False,
    precision: str = "auto",
    trust_remote_code: bool = False,
):
    """(tokenizer, eval-mode model (+ adapter) on one device, the base model's local folder), for
    explicit settings. Scripts call ``utils.model.inference.load_for_inference``, which first defaults
    the settings from the adapter's run_config.json and builds the prompter."""
    base_model = resolve_base_model(base_model)
    tokenizer = load_tokenizer(base_model, trust_remote_code)
    device_map = device_map_for(1, 0)  # the current GPU (or the CPU), as training uses it
    model = load_model(base_model, load_8bit, load_4bit, precision, device_map, trust_remote_code)
    if use_lora and lora_weights:
        model = adapters.load_adapter(model, lora_weights)
    sync_special_tokens(model, tokenizer)
    model.eval()
    return tokenizer, model, base_model
