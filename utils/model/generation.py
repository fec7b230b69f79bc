"""Generation settings and batched generation, shared by infer.py, generate.py and score.py.

The defaults are HuaTuo's (temperature 0.1, top p 0.75, top k 40, 4 beams, 256 new tokens, no
sampling), defined in utils/args.py. Batches are left-padded and sorted by prompt length, so little compute goes to
padding, and answers come back in the caller's order. With greedy or beam decoding a batched
answer is the same as the one-at-a-time answer (tested). ``stream_answer`` yields one answer as it
grows, token by token (generate.py's demo; any script can share it).
"""

import logging
import threading

import torch

from utils.args import DO_SAMPLE, MAX_NEW_TOKENS, NUM_BEAMS, TEMPERATURE, TOP_K, TOP_P
from utils.cli import UserError

logger = logging.getLogger(__name__)

# HuaTuo's generation settings (TEMPERATURE, ...) are defined once, in utils/args.py beside the flags
# that expose them (GenerationArgs); make_generation_config defaults to them.

LIMITS = {  # accepted ranges, so UIs and CLIs can clamp or refuse out-of-range settings
    "temperature": (0.0, 2.0),
    "top_p": (0.0, 1.0),
    "top_k": (0, 200),
    "num_beams": (1, 8),
    "max_new_tokens": (1, 4096),
}


def check_settings(**settings) -> None:
    """Raise ValueError naming the first setting outside LIMITS."""
    for name, value in settings.items():
        low, high = LIMITS[name]
        if value is None or not low <= value <= high:
            raise UserError(f"{name}={value!r} is outside the accepted range [{low}, {high}]")


def make_generation_config(
    model,
    tokenizer,
    temperature: float = TEMPERATURE,
    top_p: float = TOP_P,
    top_k: int = TOP_K,
    num_beams: int = NUM_BEAMS,
    max_new_tokens: int = MAX_NEW_TOKENS,
    do_sample: bool = DO_SAMPLE,
):
    """A GenerationConfig built on the model's own (its eos list, bos), with these settings."""
    from transformers import GenerationConfig

    check_settings(
        temperature=temperature, top_p=top_p, top_k=top_k, num_beams=num_beams, max_new_tokens=max_new_tokens
    )
    base = getattr(model, "generation_config", None)
    config = GenerationConfig.from_dict(base.to_dict()) if base is not None else GenerationConfig()
    config.max_new_tokens = max_new_tokens
    config.max_length = None
    config.num_beams = num_beams
    config.do_sample = do_sample
    config.pad_token_id = tokenizer.pad_token_id
    # Stop at any of: the model's eos list, the tokenizer's eos (what finetune.py appends) and a chat
    # template's end-of-turn token (<|im_end|>, <|eot_id|>: a base model's config often lacks it).
    from utils.data.chat import stop_token_ids

    config.eos_token_id = stop_token_ids(tokenizer, config.eos_token_id)
    if do_sample:
        config.temperature, config.top_p, config.top_k = temperature, top_p, top_k
    else:  # sampling knobs would only trigger warnings
        config.temperature, config.top_p, config.top_k = None, None, None
    return config


def model_device(model) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def generate_batch(model, tokenizer, prompts: list[str], generation_config) -> list[str]:
    """Answers (new tokens only, special tokens removed) for one batch of prompts."""
    tokenizer.padding_side = "left"
    inputs = tokenizer(prompts, return_tensors="pt", padding=True).to(model_device(model))
    sequences = model.generate(**inputs, generation_config=generation_config)
    new_tokens = sequences[:, inputs["input_ids"].shape[1] :]
    return [text.strip() for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]


def generate_answers(
    model,
    tokenizer,
    prompts: list[str],
    generation_config,
    batch_size: int = 8,
    progress: bool = True,
) -> list[str]:
    """Answers for all ``prompts`` in batches of at most ``batch_size``, in the order given.

    On a GPU the batch is first capped by the KV cache it needs (``memory.generation_batch_size``:
    beams x (longest prompt + new tokens) per question), and a batch that still runs out of memory
    is halved and redone (greedy and beam answers do not depend on the batch)."""
    from tqdm.auto import tqdm

    from utils.model.memory import generation_batch_size

    lengths = [len(ids) for ids in tokenizer(prompts)["input_ids"]]
    order = sorted(range(len(prompts)), key=lambda i: -lengths[i])  # similar lengths share a batch
    if prompts:
        batch_size = generation_batch_size(
            model, batch_size, generation_config.num_beams or 1, max(lengths) + generation_config.max_new_tokens
        )
    answers: list[str | None] = [None] * len(prompts)
    start = 0
    with tqdm(total=len(prompts), desc="generating", unit="answer", disable=not progress) as bar:
        while start < len(order):
            chunk = order[start : start + batch_size]
            try:
                batch_answers = generate_batch(model, tokenizer, [prompts[i] for i in chunk], generation_config)
            except torch.OutOfMemoryError:
                batch_answers = None  # handled outside the except block, so the failed batch's tensors are freed
            if batch_answers is None:
                if batch_size == 1:
                    raise torch.OutOfMemoryError(
                        "out of memory generating one answer: lower --max_new_tokens or --num_beams"
                    )
                batch_size //= 2
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                logger.warning("out of memory: generating %d answers at a time from now on", batch_size)
                continue
            for i, answer in zip(chunk, batch_answers):
                answers[i] = answer
            bar.update(len(chunk))
            start += len(chunk)
    return answers


# ----------------------------------------------------------------------------------------------
# streaming (one prompt, token by token; used by generate.py)

ENCODE_LOCK = threading.Lock()  # a fast tokenizer may refuse concurrent use ("Already borrowed")


def stream_answer(model, tokenizer, prompt: str, generation_config, timeout: float = 600.0):
    """Yield the answer to ``prompt`` so far (new tokens only, stripped) each time it grows.

    Generation runs in a thread feeding a ``TextIteratorStreamer``. Beam search (num_beams > 1)
    cannot stream in transformers: the whole answer is then yielded once. Closing the generator
    (a client that went away) stops the generation at the next token; an error in the generation
    thread is raised here rather than leaving the caller waiting.
    """
    from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

    class EagerStreamer(TextIteratorStreamer):
        # The stock streamer flushes only at a space, a newline or a CJK ideograph, so fullwidth
        # punctuation, digits and Latin words in Chinese answers would arrive in lumps. Flush every
        # token, except while the text ends inside a multi-byte character (decoded as U+FFFD).
        def _is_chinese_char(self, cp):
            return cp != 0xFFFD

    class StopWhenSet(StoppingCriteria):
        def __init__(self, event: threading.Event):
            self.event = event

        def __call__(self, input_ids, scores, **kwargs) -> bool:
            return self.event.is_set()

    with ENCODE_LOCK:
        inputs = tokenizer(prompt, return_tensors="pt").to(model_device(model))
    if generation_config.num_beams > 1:
        with torch.inference_mode():
            sequences = model.generate(**inputs, generation_config=generation_config)
        yield tokenizer.decode(sequences[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()
        return

    streamer = EagerStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=timeout)
    stop = threading.Event()
    failure: list[BaseException] = []

    def work() -> None:
        try:
            with torch.inference_mode():
                model.generate(
                    **inputs,
                    generation_config=generation_config,
                    streamer=streamer,
                    stopping_criteria=StoppingCriteriaList([StopWhenSet(stop)]),
                )
        except BaseException as err:  # noqa: BLE001 - handed to the consuming thread and re-raised there
            failure.append(err)
            streamer.end()  # wake the consumer instead of letting it wait for the timeout

    thread = threading.Thread(target=work, name="stream_answer", daemon=True)
    thread.start()
    text, shown = "", None
    try:
        for piece in streamer:
            text += piece
            if text.strip() and text.strip() != shown:
                shown = text.strip()
                yield shown
    finally:
        stop.set()
        thread.join()
    if failure:
        raise failure[0]
    if shown is None:  # an empty answer still yields once
        yield ""
