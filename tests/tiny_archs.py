"""Tiny random checkpoints of today's base-model architectures, built locally in a second or two.

Each builder writes a Hugging Face model folder (config, random weights, generation config,
tokenizer) that loads with ``AutoTokenizer`` / ``AutoModelForCausalLM`` like the real model:

- ``llama3``: ``LlamaForCausalLM``; ``<|begin_of_text|>`` (bos, added), ``<|end_of_text|>`` (eos),
  ``<|eot_id|>``, headers; no pad, no unk; Llama-3-Instruct's chat template.
- ``qwen2``: ``Qwen2ForCausalLM``; ``<|endoftext|>`` (eos), ``<|im_start|>``, ``<|im_end|>``; no bos, no pad;
  Qwen2.5-Instruct's chat template (default system prompt).
- ``gemma``: ``GemmaForCausalLM``; ``<bos>`` (added), ``<eos>``, ``<pad>``, ``<start_of_turn>``,
  ``<end_of_turn>``; Gemma-it's chat template (no system role).
- ``bloom``: ``BloomForCausalLM``; ``<unk>``, ``<s>``, ``</s>``, ``<pad>`` (ids 0-3), no bos added; no chat
  template (HuaTuo's ``bloom_deploy`` template).
- ``gpt_neox``: ``GPTNeoXForCausalLM``; ``<|endoftext|>`` (bos = eos = unk), no pad; no chat template.

The chat variants are built as the *base* checkpoints people fine-tune are: the generation config's
eos is the tokenizer's eos (``<|endoftext|>``, ``<|end_of_text|>``, ``<eos>``), not the end-of-turn
token, so stopping at the end of a turn must come from the repository's code, not from the config.

The tokenizers are byte-level BPE trained with the ``tokenizers`` library on the repository's own
Chinese text (``data/*.json``, ``templates/*.json``), so every character of the medical data has a
token. Gemma's real tokenizer is sentencepiece; the byte-level stand-in keeps its special tokens.

    from tests.tiny_archs import build
    path = build("qwen2", tmp_path / "tiny-qwen2")
"""

import json
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

LLAMA3_CHAT_TEMPLATE = (  # Meta-Llama-3-8B-Instruct's template, verbatim
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
QWEN2_CHAT_TEMPLATE = (  # Qwen2.5-Instruct's template without the tool-calling branches
    "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}"
    "{%- else %}{{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
    "assistant.<|im_end|>\n' }}"
    '{%- endif %}{%- for message in messages %}{%- if (message.role == "user") or (message.role == "system" and not '
    "loop.first)"
    " or (message.role == \"assistant\") %}{{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' "
    "+ '\n' }}"
    "{%- endif %}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)
GEMMA_CHAT_TEMPLATE = (  # gemma-7b-it's template, verbatim
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% "
    "endif %}"
    "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% "
    "endif %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)

# name -> special tokens (in id order, first ids of the vocabulary), tokenizer roles, chat template,
# whether the tokenizer adds bos, model class and its config.
SPECS = {
    "llama3": dict(
        special=["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        roles=dict(bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>"),
        chat_template=LLAMA3_CHAT_TEMPLATE,
        end_of_turn="<|eot_id|>",
        add_bos=True,
        model="LlamaForCausalLM",
        config=dict(
            hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
        ),
    ),
    "qwen2": dict(
        special=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        roles=dict(eos_token="<|endoftext|>"),
        chat_template=QWEN2_CHAT_TEMPLATE,
        end_of_turn="<|im_end|>",
        add_bos=False,
        model="Qwen2ForCausalLM",
        config=dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            tie_word_embeddings=True,
        ),
    ),
    "gemma": dict(
        special=["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"],
        roles=dict(pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", unk_token="<unk>"),
        chat_template=GEMMA_CHAT_TEMPLATE,
        end_of_turn="<end_of_turn>",
        add_bos=True,
        model="GemmaForCausalLM",
        config=dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=1,
            head_dim=16,
        ),
    ),
    "bloom": dict(
        special=["<unk>", "<s>", "</s>", "<pad>"],
        roles=dict(unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"),
        chat_template=None,
        end_of_turn=None,
        add_bos=False,
        model="BloomForCausalLM",
        config=dict(hidden_size=64, n_layer=2, n_head=4),
    ),
    "gpt_neox": dict(
        special=["<|endoftext|>"],
        roles=dict(bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>"),
        chat_template=None,
        end_of_turn=None,
        add_bos=False,
        model="GPTNeoXForCausalLM",
        config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4),
    ),
}
ARCHS = tuple(SPECS)
CHAT_ARCHS = tuple(name for name, spec in SPECS.items() if spec["chat_template"])
VOCAB_SIZE = 800


def corpus_lines() -> list[str]:
    """The repository's own text (as the embedded tiny LLaMA's tokenizer learns it), plus a few common words."""
    from utils.model import tiny_base

    return ["你好 谢谢 好的 请问 医生 患者 症状 治疗 0123456789", *tiny_base.corpus_lines()]


def build_tokenizer(name: str):
    """A byte-level BPE ``PreTrainedTokenizerFast`` with the architecture's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    spec = SPECS[name]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=spec["special"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(corpus_lines(), trainer)
    if spec["add_bos"]:
        bos = spec["roles"]["bos_token"]
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, backend.token_to_id(bos))]
        )
    else:
        backend.post_processor = processors.ByteLevel(trim_offsets=False)
    role_tokens = set(spec["roles"].values())
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        additional_special_tokens=[t for t in spec["special"] if t not in role_tokens],
        **spec["roles"],
    )
    tokenizer.chat_template = spec["chat_template"]
    tokenizer.model_max_length = 512
    return tokenizer


def build(name: str, out_dir, seed: int = 0) -> str:
    """Write the tiny ``name`` checkpoint (random weights, fixed seed) into ``out_dir``; return the path."""
    import torch
    import transformers

    spec = SPECS[name]
    out_dir = Path(out_dir)
    tokenizer = build_tokenizer(name)
    model_class = getattr(transformers, spec["model"])
    config = model_class.config_class(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        max_position_embeddings=512,
        **spec["config"],
    )
    torch.manual_seed(seed)
    model = model_class(config)
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id  # the base model's eos, not the end of turn
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    # Roles the real model leaves unset are written as null, as in Qwen's tokenizer_config.json:
    # otherwise a class default (Qwen2Tokenizer pads with <|endoftext|>) would fill them in.
    config_path = out_dir / "tokenizer_config.json"
    saved = json.loads(config_path.read_text())
    for role in ("bos_token", "eos_token", "unk_token", "pad_token"):
        saved.setdefault(role, None)
    config_path.write_text(json.dumps(saved, indent=2, ensure_ascii=False) + "\n")
    return str(out_dir)


def end_of_turn_id(name: str, tokenizer) -> int | None:
    """The id of the architecture's end-of-turn token in ``tokenizer`` (None for non-chat ones)."""
    token = SPECS[name]["end_of_turn"]
    return None if token is None else tokenizer.convert_tokens_to_ids(token)
