"""Records -> training examples: tokenized with labels, or (a dry run without a tokenizer) only their
lengths estimated from the text; either way the figures the memory plan sizes batches by."""

import logging
from dataclasses import dataclass, field

from utils.data.chat import CHAT_TEMPLATE_NAME, record_messages, stop_token_ids
from utils.data.prompter import IGNORE_INDEX, tokenize_records
from utils.model import memory

logger = logging.getLogger(__name__)

# role markers of one chat message, e.g. Qwen's <|im_start|>user\n ... <|im_end|>\n (+3: the assistant's opening)
CHAT_TURN_TOKENS = 5


@dataclass
class Examples:
    """The run's examples: tokenized train/validation ({input_ids, labels} each), and per training
    example its length and answer tokens (what the memory plan and the batch figures read)."""

    lengths: list[int]  # tokens of each training example, EOS included
    answers: list[int]  # of those, the tokens with a target (the answer + EOS)
    train: list[dict] = field(default_factory=list)
    val: list[dict] = field(default_factory=list)
    truncated: int = 0  # training examples cut at cutoff_len
    dropped: int = 0  # records left out (train + validation): the prompt alone fills cutoff_len
    estimated: bool = False  # lengths estimated from the text (no tokenizer): nothing to train on


def tokenize_examples(tokenizer, prompter, train_records, val_records, cutoff_len: int, train_on_inputs: bool):
    """Both splits tokenized with their labels (prompt masked unless ``train_on_inputs``), figures logged."""
    train, dropped = tokenize_records(tokenizer, prompter, train_records, cutoff_len, train_on_inputs)
    val, val_dropped = tokenize_records(tokenizer, prompter, val_records, cutoff_len, train_on_inputs)
    if dropped or val_dropped:
        logger.warning(
            "%d train / %d validation records left out: their prompt alone fills cutoff_len=%d",
            dropped,
            val_dropped,
            cutoff_len,
        )
    lengths = [len(e["input_ids"]) for e in train]
    answers = [sum(1 for label in e["labels"] if label != IGNORE_INDEX) for e in train]
    stops = set(stop_token_ids(tokenizer))  # eos, or a chat template's end of turn
    truncated = sum(1 for e in train if e["input_ids"][-1] not in stops)
    logger.info(
        "train: %d examples, %d tokens (%d in answers), longest %d, %d cut at cutoff_len=%d; validation: %d examples",
        len(train),
        sum(lengths),
        sum(answers),
        max(lengths),
        truncated,
        cutoff_len,
        len(val),
    )
    return Examples(lengths, answers, train, val, truncated, dropped + val_dropped)


def estimate_examples(prompter, records, config, base_model: str, cutoff_len: int) -> Examples:
    """Token and answer lengths without a tokenizer (dry run of a config-only folder). A chat template
    is the tokenizer's: without it each message counts as its text plus ``CHAT_TURN_TOKENS`` markers."""
    vocab = config.get_text_config().vocab_size
    prompts = None  # a chat template is the tokenizer's
    if prompter.template_name == CHAT_TEMPLATE_NAME:
        logger.info(
            "no tokenizer beside %s: chat prompts estimated as their messages' text plus %d tokens of role markers "
            "each",
            base_model,
            CHAT_TURN_TOKENS,
        )
    else:
        prompts = prompter.prompts(None, records)  # a text template needs no tokenizer
    lengths, answers = [], []
    for i, record in enumerate(records):
        if prompts is None:
            messages = record_messages(record, prompter.system_prompt, with_answer=False)
            n_prompt = sum(memory.estimate_tokens(m["content"], vocab) + CHAT_TURN_TOKENS for m in messages) + 3
        else:
            n_prompt = memory.estimate_tokens(prompts[i], vocab)
        n_answer = memory.estimate_tokens(record["output"], vocab) + 1
        lengths.append(min(cutoff_len, n_prompt + n_answer))
        answers.append(max(0, min(cutoff_len, n_prompt + n_answer) - n_prompt))
    return Examples(lengths, answers, estimated=True)
