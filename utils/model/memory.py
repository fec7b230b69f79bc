"""The memory planner: from a model's ``config.json`` alone, how much GPU memory a LoRA run needs.

Nothing here loads weights. The model is instantiated on the ``meta`` device to count its
parameters, and every other part is arithmetic:

* **weights**: 16-bit (2 bytes/parameter), 8-bit (1 byte + one fp32 scale per output row) or NF4
  with double quantization (0.516 bytes/parameter) for the linear layers bitsandbytes quantizes;
  embeddings, norms and the output head stay in the compute dtype (bitsandbytes never quantizes
  the output head). FSDP / ZeRO-3 divide 16-bit weights by the number of processes
  (they shard as they load); 8-/4-bit weights are quantized whole on every GPU at load.
* **LoRA**: parameters, gradients and AdamW's two moments, all fp32 (16 bytes per LoRA
  parameter). fp32 because the optimizer and fp16's loss scaler need fp32 master weights; nothing
  else is upcast (no fp32 copy of embeddings, norms or the head, which peft's
  ``prepare_model_for_kbit_training`` would add: +0.5 GB on LLaMA-7B, +2.1 GB on Llama-3-8B).
* **activations**: bytes saved for backward per token per decoder layer, measured on CPU with
  ``torch.autograd.graph.saved_tensors_hooks`` on real LLaMA / Llama-3 / Qwen2.5-shaped decoder
  layers in bf16 with SDPA (tests/test_memory.py repeats the measurement on a LLaMA-7B layer and
  holds the formula to +-20%)::

      12 h + 4 kv + 6 i + 4 d                 (h hidden, kv = key/value width, i MLP width, d head dim)
      + per LoRA'd module with input width n:  4 n (fp32 copy of its input) + 4 n (dropout > 0) + 4 r

  LLaMA-7B with LoRA on q,v and dropout: 197,700 bytes per token per layer (48 h), 6.3 MB per token
  over 32 layers. With gradient checkpointing a layer keeps only its input (2 h in 16-bit) and one
  layer at a time is recomputed in full.
* **int8 inputs** (``--load_8bit``, on CUDA): bitsandbytes' ``MatMul8bitLt.forward`` keeps each int8
  layer's input as a plain ctx attribute, ``ctx.tensors = (CAt, subA, A)``
  (bitsandbytes/autograd/_functions.py:186-188 in 0.50.2), not through ``save_for_backward``, so
  autograd's saved-tensor hooks, and with them non-reentrant checkpointing, cannot free it: every
  int8 linear's input lives until its backward, with or without checkpointing. ``A`` is the input
  itself in the compute dtype (the fp16 cast at :137/:140 is a temporary), so linears fed the same
  tensor share it: per layer the attention input (h), the attention output (heads x head dim), the
  MLP input (h) and the down projection's input (i). ``CAt`` (the int8 transpose) is only made when
  the weight needs a gradient (:135, never for a frozen base); ``subA`` holds the outlier columns
  only (a handful per layer at 7B scale, LLM.int8 paper), not counted. On a CPU bitsandbytes trains
  through ``MatMul8bitFp`` (:401-403), which keeps nothing extra; the plan is for the GPU.
* **logits**: only answer tokens are projected onto the vocabulary (packing's ``logits_to_keep``);
  the loss upcasts them to fp32, so each costs about 12 bytes per vocabulary entry at the peak
  (16-bit logits, fp32 copy, log-softmax kept for backward, its gradient).
* **runtime**: 1 GiB for the CUDA context, cuBLAS/attention workspaces and allocator slack, plus the
  largest weight matrix dequantized at a time for 8-/4-bit bases.

A plan fits when its peak is at most ``FIT_FRACTION`` of the budget (free memory of the current GPU,
``--gpu_memory``, or on a CPU the available RAM).
"""

import json
import logging
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from utils.cli import UserError

logger = logging.getLogger(__name__)

GiB = 1024**3
FIT_FRACTION = 0.90  # a plan may use 90% of the budget; the rest absorbs allocator fragmentation
RUNTIME_BYTES = 1 * GiB  # CUDA context, cuBLAS and attention workspaces
MIN_EFFICIENT_TOKENS = 4096  # below this many tokens per micro-batch a GPU idles: prefer checkpointing
LOGIT_BYTES = 12  # per answer token and vocabulary entry at the loss's peak (see the module docstring)
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)  # 4-bit weights + 8-bit absmax per 64 + fp32 per 256 absmax blocks
DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}
QUANTIZATIONS = ("16bit", "8bit", "4bit")
# model types whose decoder layer has the LLaMA shape the activation formula was measured on
LLAMA_LIKE = {"llama", "mistral", "qwen2", "qwen3", "internlm", "yi", "baichuan", "olmo", "olmo2", "gemma", "gemma2"}


def parse_memory(text) -> int:
    """'24GiB', '80GB', '24G', '16000MiB' or a bare number of GiB -> bytes. ValueError otherwise."""
    units = {
        "": GiB,
        "g": GiB,
        "gib": GiB,
        "gb": 10**9,
        "m": 2**20,
        "mib": 2**20,
        "mb": 10**6,
        "t": 2**40,
        "tib": 2**40,
        "tb": 10**12,
    }
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", str(text))
    if not match or match.group(2).lower() not in units or float(match.group(1)) <= 0:
        raise UserError(f"--gpu_memory {text!r}: expected a size such as 24GiB, 80GB or 40 (GiB)")
    return int(float(match.group(1)) * units[match.group(2).lower()])


# ----------------------------------------------------------------------------------------------
# the model's shape, from config.json


@dataclass(frozen=True)
class ModelShape:
    model_type: str
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    params: int  # every parameter of the base
    quantizable_params: int  # weights of the linear layers bitsandbytes quantizes (not the output head)
    quantizable_rows: int  # their output rows (one fp32 scale each in 8-bit)
    largest_linear: int  # parameters of the largest such matrix (dequantized one at a time)
    lora_targets: tuple[str, ...]
    lora_r: int
    lora_params: int
    lora_input_widths: tuple[int, ...]  # input width of each LoRA'd module in one decoder layer

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim


def load_config(model_path: str, trust_remote_code: bool = False):
    """The model's config; a folder needs only config.json. FileNotFoundError names what is missing."""
    from transformers import AutoConfig

    folder = Path(model_path).expanduser()
    if folder.exists() and not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} has no config.json: the memory plan needs the model's config.json")
    return AutoConfig.from_pretrained(
        str(folder) if folder.exists() else model_path, trust_remote_code=trust_remote_code
    )


def _text_config(config):
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def _attention_widths(text) -> tuple[int, int, int]:
    """(attention heads, key/value heads, head dim) of a text config (GQA and explicit head_dim included)."""
    heads = text.num_attention_heads
    return (
        heads,
        getattr(text, "num_key_value_heads", None) or heads,
        getattr(text, "head_dim", None) or text.hidden_size // heads,
    )


def model_shape(
    config, lora_targets: list[str] | str = "auto", lora_r: int = 8, trust_remote_code: bool = False
) -> ModelShape:
    """Count parameters on the meta device (no memory, no weights) and read the widths from the config.
    LoRA targets resolve exactly as in training (``auto`` = the architecture's default)."""
    from transformers import AutoModelForCausalLM

    from utils.model.loading import linear_layer_names, resolve_lora_targets

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16, trust_remote_code=trust_remote_code)
    lora_targets = resolve_lora_targets(model, lora_targets)
    if lora_targets == "all-linear":
        lora_targets = linear_layer_names(model)
    text = _text_config(config)
    head = model.get_output_embeddings()
    targets = tuple(lora_targets)
    quantizable = rows = largest = lora = 0
    widths: list[int] = []
    first_layer = None
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or module is head:
            continue
        quantizable += module.weight.numel()
        rows += module.out_features
        largest = max(largest, module.weight.numel())
        if name.rsplit(".", 1)[-1] in targets:
            lora += lora_r * (module.in_features + module.out_features)
            layer = name.split(".layers.")[-1].split(".")[0] if ".layers." in name else None
            first_layer = layer if first_layer is None else first_layer
            if layer == first_layer:
                widths.append(module.in_features)
    heads, kv_heads, head_dim = _attention_widths(text)
    return ModelShape(
        model_type=text.model_type,
        layers=text.num_hidden_layers,
        hidden=text.hidden_size,
        intermediate=getattr(text, "intermediate_size", 4 * text.hidden_size),
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        vocab=text.vocab_size,
        params=sum(p.numel() for p in model.parameters()),
        quantizable_params=quantizable,
        quantizable_rows=rows,
        largest_linear=largest,
        lora_targets=targets,
        lora_r=lora_r,
        lora_params=lora,
        lora_input_widths=tuple(widths),
    )


# ----------------------------------------------------------------------------------------------
# bytes


def layer_activation_bytes(shape: ModelShape, dtype_bytes: int = 2, lora_dropout: float = 0.05) -> int:
    """Bytes saved for backward per token by one decoder layer (no checkpointing), SDPA/flash attention."""
    scale = dtype_bytes / 2  # the formula was measured in 16-bit; fp32 doubles the base part
    base = 12 * shape.hidden + 4 * shape.kv_dim + 6 * shape.intermediate + 4 * shape.head_dim
    per_input = 8 if lora_dropout > 0 else 4  # fp32 copy of the input (+ dropout's mask and output)
    lora = sum(per_input * n + 4 * shape.lora_r for n in shape.lora_input_widths)
    return int(base * scale + lora)


def int8_kept_bytes_per_token(shape: ModelShape, dtype_bytes: int) -> int:
    """Bytes per token one decoder layer's int8 linears keep outside autograd's saved tensors on CUDA
    (see the module docstring): their distinct inputs, in the compute dtype."""
    return dtype_bytes * (2 * shape.hidden + shape.heads * shape.head_dim + shape.intermediate)


def activation_bytes_per_token(
    shape: ModelShape, dtype_bytes: int, lora_dropout: float, gradient_checkpointing: bool, quantization: str = "16bit"
) -> int:
    """Saved bytes per token of a micro-batch over all layers, the final norm included.

    With checkpointing every layer keeps its input and one layer is recomputed at a time; 8-bit
    layers keep their inputs either way (``int8_kept_bytes_per_token``)."""
    one_layer = layer_activation_bytes(shape, dtype_bytes, lora_dropout)
    final_norm = 3 * dtype_bytes * shape.hidden
    int8_kept = shape.layers * int8_kept_bytes_per_token(shape, dtype_bytes) if quantization == "8bit" else 0
    if gradient_checkpointing:
        return shape.layers * dtype_bytes * shape.hidden + one_layer + final_norm + int8_kept
    return shape.layers * one_layer + final_norm + int8_kept


def weight_bytes(shape: ModelShape, quantization: str, dtype_bytes: int) -> int:
    other = shape.params - shape.quantizable_params  # embeddings, norms, output head: compute dtype
    if quantization == "8bit":
        return shape.quantizable_params + 4 * shape.quantizable_rows + other * dtype_bytes
    if quantization == "4bit":
        return int(shape.quantizable_params * NF4_BYTES) + other * dtype_bytes
    return shape.params * dtype_bytes


def kv_cache_bytes_per_token(config, dtype_bytes: int = 2) -> int:
    """Keys and values of one token over all layers (generation), from a model's config."""
    text = _text_config(config)
    _, kv_heads, head_dim = _attention_widths(text)
    return 2 * text.num_hidden_layers * kv_heads * head_dim * dtype_bytes


@dataclass
class TrainingSetup:
    quantization: str = "16bit"  # 16bit | 8bit | 4bit
    precision: str = "bf16"  # bf16 | fp16 | fp32 (compute dtype)
    lora_dropout: float = 0.05
    world_size: int = 1
    sharded: bool = False  # FSDP / ZeRO-3: weights split over the processes

    @property
    def dtype_bytes(self) -> int:
        return DTYPE_BYTES[self.precision]


def training_peak(
    shape: ModelShape, setup: TrainingSetup, positions: int, logit_tokens: int, gradient_checkpointing: bool
) -> dict:
    """Peak bytes on one GPU, by part, for a micro-batch of ``positions`` tokens (``logit_tokens`` projected)."""
    weights = weight_bytes(shape, setup.quantization, setup.dtype_bytes)
    if setup.sharded and setup.quantization == "16bit":  # bitsandbytes quantizes on each process's GPU, whole, at load
        weights = math.ceil(weights / setup.world_size)
    dequantized = shape.largest_linear * setup.dtype_bytes if setup.quantization != "16bit" else 0
    per_token = activation_bytes_per_token(
        shape, setup.dtype_bytes, setup.lora_dropout, gradient_checkpointing, setup.quantization
    )
    parts = {
        "weights": weights,
        "lora_and_optimizer": 16 * shape.lora_params,
        "activations": per_token * positions,
        "logits": LOGIT_BYTES * shape.vocab * logit_tokens,
        "runtime": RUNTIME_BYTES + dequantized,
    }
    parts["peak"] = sum(parts.values())
    return parts


# ----------------------------------------------------------------------------------------------
# budget and the micro-batch choice


def memory_budget(gpu_memory: str = "", world_size: int = 1) -> tuple[int, str]:
    """Bytes a plan may count on, and where the figure comes from. One process plans for the free
    memory of its GPU; several processes plan for the card's total (less 0.5 GiB), a figure every rank
    reads alike, so that all of them pick the same micro-batch (ranks that disagreed on the
    accumulation would wait for each other forever)."""
    if gpu_memory:
        return parse_memory(gpu_memory), f"--gpu_memory {gpu_memory}"
    if torch.cuda.is_available():
        device = torch.cuda.current_device()
        free, total = torch.cuda.mem_get_info(device)
        if world_size > 1:
            return (
                total - GiB // 2,
                f"cuda:{device}'s total memory less 0.5 GiB ({total / GiB:.1f} GiB card, same plan on every rank)",
            )
        return free, f"free memory of cuda:{device} ({total / GiB:.1f} GiB card)"
    import psutil

    return psutil.virtual_memory().available, "available RAM (no GPU)"


def fits(peak: int, budget: int) -> bool:
    return peak <= FIT_FRACTION * budget


@dataclass
class Plan:
    micro_batch_size: int
    gradient_accumulation_steps: int
    gradient_checkpointing: bool
    tokens_per_micro_batch: int  # padded positions of the largest micro-batch of an epoch
    logit_tokens_per_micro_batch: int
    activation_bytes_per_token: int
    int8_kept_bytes_per_token: int  # of activation_bytes_per_token: what bitsandbytes' int8 layers keep (8-bit, CUDA)
    parts: dict
    budget: int
    budget_source: str
    fits: bool
    reason: str
    candidates: list = field(default_factory=list)  # (micro_batch, checkpointing, tokens, peak) tried

    @property
    def peak_gib(self) -> float:
        return self.parts["peak"] / GiB

    def summary(self) -> dict:
        out = asdict(self)
        out.pop("candidates")
        out["peak_gib"] = round(self.peak_gib, 2)
        out["budget_gib"] = round(self.budget / GiB, 2)
        out["parts_gib"] = {k: round(v / GiB, 3) for k, v in self.parts.items()}
        return out


def plan_micro_batch(
    shape: ModelShape,
    setup: TrainingSetup,
    per_rank_batch: int,
    tokens_for,
    budget: int,
    budget_source: str = "",
    micro_batch_size: int | str = "auto",
    gradient_checkpointing: bool | str = "auto",
) -> Plan:
    """Pick the micro-batch (a divisor of ``per_rank_batch``, so the global batch never changes) and
    gradient checkpointing.

    ``tokens_for(m)`` returns (positions, logit tokens) of the largest micro-batch of ``m`` examples
    an epoch will hold. ``auto`` micro-batch: the largest that fits; ``auto`` checkpointing: off when
    the largest micro-batch that fits without it holds at least ``MIN_EFFICIENT_TOKENS`` tokens (or
    the whole per-process batch), else on when that gives a larger micro-batch. Explicit values are
    kept and only checked."""
    sizes = (
        [micro_batch_size]
        if micro_batch_size != "auto"
        else [m for m in range(per_rank_batch, 0, -1) if per_rank_batch % m == 0]
    )
    checkpointing = [gradient_checkpointing] if gradient_checkpointing != "auto" else [False, True]
    tried, best = [], {}
    for gc in checkpointing:
        for m in sizes:
            positions, logit_tokens = tokens_for(m)
            parts = training_peak(shape, setup, positions, logit_tokens, gc)
            tried.append((m, gc, positions, parts["peak"]))
            if fits(parts["peak"], budget):
                best[gc] = (m, positions, logit_tokens, parts)
                break
    no_gc, with_gc = best.get(False), best.get(True)
    if gradient_checkpointing != "auto":
        gc = bool(gradient_checkpointing)
    else:  # off when it is not what makes a useful micro-batch fit
        gc = not (
            no_gc
            and (
                no_gc[1] >= MIN_EFFICIENT_TOKENS or no_gc[0] == per_rank_batch or not with_gc or with_gc[0] <= no_gc[0]
            )
        )
    if gc in best:
        m, positions, logit_tokens, parts = best[gc]
        ok, reason = True, _reason(micro_batch_size, gradient_checkpointing, gc, best)
    else:  # nothing fits: report the smallest configuration's figures
        m = sizes[-1]
        positions, logit_tokens = tokens_for(m)
        parts = training_peak(shape, setup, positions, logit_tokens, gc)
        ok, reason = (
            False,
            f"does not fit: {parts['peak'] / GiB:.1f} GiB needed, {FIT_FRACTION:.0%} of {budget / GiB:.1f} GiB "
            f"available",
        )
    return Plan(
        micro_batch_size=m,
        gradient_accumulation_steps=per_rank_batch // m,
        gradient_checkpointing=gc,
        tokens_per_micro_batch=positions,
        logit_tokens_per_micro_batch=logit_tokens,
        activation_bytes_per_token=activation_bytes_per_token(
            shape, setup.dtype_bytes, setup.lora_dropout, gc, setup.quantization
        ),
        int8_kept_bytes_per_token=shape.layers * int8_kept_bytes_per_token(shape, setup.dtype_bytes)
        if setup.quantization == "8bit"
        else 0,
        parts=parts,
        budget=budget,
        budget_source=budget_source,
        fits=ok,
        reason=reason,
        candidates=tried,
    )


def _reason(micro_batch_size, gradient_checkpointing, gc, best) -> str:
    chosen = "given" if micro_batch_size != "auto" else "largest that fits"
    if gradient_checkpointing != "auto":
        return f"micro-batch {chosen}; gradient checkpointing {'on' if gc else 'off'} as given"
    if gc and False in best:
        return (
            f"micro-batch {chosen}; checkpointing on: without it only {best[False][0]} examples ({best[False][1]} "
            f"tokens) fit"
        )
    if gc:
        return f"micro-batch {chosen}; checkpointing on: nothing fits without it"
    return f"micro-batch {chosen}; no checkpointing needed"


def format_plan(rows: list[tuple[str, str]]) -> str:
    """A two-column text table."""
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


JSON_KEYS = (
    "peak_gib",
    "fits",
    "micro_batch_size",
    "gradient_accumulation_steps",
    "tokens_per_micro_batch",
    "logit_tokens_per_micro_batch",
    "gradient_checkpointing",
    "activation_bytes_per_token",
    "int8_kept_bytes_per_token",
    "budget_gib",
    "parts_gib",
    "quantization",
    "precision",
    "world_size",
)


def plan_json_line(plan: dict) -> str:
    """The machine-readable last line of ``finetune.py --dry_run``."""
    return json.dumps(
        {key: plan[key] for key in JSON_KEYS if key in plan}
        | {"model_type": plan["model"]["model_type"], "params": plan["model"]["params"]},
        ensure_ascii=False,
    )


def plan_report(plan: dict) -> str:
    """``finetune.py --dry_run``'s output: a table, then the plan as one JSON object on the last line."""
    m, parts = plan["model"], plan["parts_gib"]
    int8 = plan["int8_kept_bytes_per_token"]
    rows = [
        (
            "architecture",
            f"{m['model_type']}: {m['layers']} layers, hidden {m['hidden']}, MLP {m['intermediate']}, "
            f"heads {m['heads']}/{m['kv_heads']} kv, vocab {m['vocab']}",
        ),
        (
            "parameters",
            f"{m['params'] / 1e9:.2f} B base; LoRA r={m['lora_r']} on {','.join(m['lora_targets'])}: "
            f"{m['lora_params'] / 1e6:.1f} M",
        ),
        ("quantization / precision", f"{plan['quantization']} weights, {plan['precision']} compute"),
        (
            "micro-batch",
            f"{plan['micro_batch_size']} examples, up to {plan['tokens_per_micro_batch']} tokens "
            f"({plan['logit_tokens_per_micro_batch']} projected); accumulation {plan['gradient_accumulation_steps']}",
        ),
        ("gradient checkpointing", f"{'on' if plan['gradient_checkpointing'] else 'off'} ({plan['reason']})"),
        (
            "activations per token",
            f"{plan['activation_bytes_per_token'] / 2**20:.2f} MiB"
            + (f" ({int8 / 2**20:.2f} MiB int8 layer inputs kept by bitsandbytes)" if int8 else ""),
        ),
        *[
            (f"  {name}", f"{parts[name]:.2f} GiB")
            for name in ("weights", "lora_and_optimizer", "activations", "logits", "runtime")
        ],
        (
            "token counts",
            "estimated from the text (no tokenizer in the folder)"
            if plan["tokens_estimated"]
            else "from the tokenizer",
        ),
        (
            "estimated peak per GPU",
            f"{plan['peak_gib']:.2f} GiB of {plan['budget'] / GiB:.1f} GiB ({plan['budget_source']}): "
            f"{'fits' if plan['fits'] else 'DOES NOT FIT'}",
        ),
    ]
    return format_plan(rows) + "\n" + plan_json_line(plan)


def estimate_tokens(text: str, vocab_size: int) -> int:
    """Tokens of ``text`` without a tokenizer: per CJK character 1.0 for large vocabularies (Llama-3,
    Qwen, Chinese-Alpaca) and 1.6 for 32k ones (LLaMA-1/2 spell most Chinese characters as 2-3 UTF-8
    byte tokens), plus one per 4 other characters. An estimate, said so in the plan."""
    cjk = sum(
        1
        for ch in text
        if "\u3400" <= ch <= "\u9fff"
        or "\uf900" <= ch <= "\ufaff"
        or "\u3000" <= ch <= "\u303f"
        or "\uff00" <= ch <= "\uffef"
    )
    per_cjk = 1.6 if vocab_size <= 40000 else 1.0
    return math.ceil(cjk * per_cjk + (len(text) - cjk) / 4) + 1  # + bos


# ----------------------------------------------------------------------------------------------
# generation: how many sequences the KV cache budget allows


def generation_batch_size(model, requested: int, num_beams: int, max_tokens: int, budget: int | None = None) -> int:
    """At most ``requested`` prompts per batch, fewer when their KV cache (``num_beams`` sequences of
    ``max_tokens`` tokens each) would not fit in ``FIT_FRACTION`` of the free device memory."""
    weight = next(model.parameters())
    per_token = kv_cache_bytes_per_token(
        model.config, max(weight.element_size() if weight.is_floating_point() else 2, 2)
    )
    if budget is None:
        device = next(model.parameters()).device
        if device.type != "cuda":
            return requested
        budget = torch.cuda.mem_get_info(device)[0]
    per_prompt = per_token * num_beams * max_tokens
    fitting = int(FIT_FRACTION * budget // max(per_prompt, 1))
    size = max(1, min(requested, fitting))
    if size < requested:
        logger.info(
            "batch of %d prompts lowered to %d: KV cache %.1f MiB per prompt (%d beams x %d tokens), %.1f GiB free",
            requested,
            size,
            per_prompt / 2**20,
            num_beams,
            max_tokens,
            budget / GiB,
        )
    return size
