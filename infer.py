"""Answer a file of questions with a base model and (optionally) a LoRA adapter.

Prints instruction / golden output / model output for every record as HuaTuo did, and with
``--output_file`` writes JSON Lines: each input record's fields plus ``model_output`` and the
settings used. Questions are answered in left-padded batches (``--batch_size``). The adapter folder
describes itself: without ``--base_model`` / ``--prompt_template`` / ``--system_prompt`` its
``run_config.json`` supplies them (an explicit flag that disagrees gets a warning). ``--base_model``
and ``--lora_weights`` take folders or hub ids (through the hub cache; ``HF_HUB_OFFLINE=1`` honoured).

    python infer.py --lora_weights ./lora-llama-med --instruct_dir ./data/infer.json
    python infer.py --base_model decapoda-research/llama-7b-hf --load_8bit \\
        --lora_weights thinksoso/lora-llama-med --instruct_dir ./data/infer.json --output_file answers.jsonl
    python infer.py --use_lora False --prompt_template ori_template --instruct_dir ./data/infer.json
    python infer.py --base_model Qwen/Qwen2.5-7B-Instruct --lora_weights ./lora-qwen-med --prompt_template chat
    # chat in HuaTuo's literature format (a terminal, or a pipe: one user turn per line); see also infer_literature.py
    python infer.py --lora_weights ./lora-literature --prompt_template literature_template --mode multi
"""

import inspect
import json
import logging
import sys
from pathlib import Path

from utils.cli import UserError
from utils.data import literature
from utils.data.prompter import DEFAULT_TEMPLATE, make_prompter
from utils.data.records import load_records, question_of
from utils.model import adapters, generation, loading

logger = logging.getLogger("infer")

# Asked when no --instruct_dir is given, as HuaTuo's infer.py did.
BUILTIN_QUESTIONS = [
    "一位55岁男性，近半年出现多饮、多尿、体重下降，空腹血糖明显升高，可能是什么疾病？应该如何治疗？",
    "急性阑尾炎有哪些典型症状？需要做哪些检查？",
    "高血压患者在日常生活中需要注意什么？",
]


GENERATION_FLAGS = (
    "temperature",
    "top_p",
    "top_k",
    "num_beams",
    "max_new_tokens",
    "do_sample",
)  # make_generation_config's


def flags(**given) -> dict:
    """infer.py's flags with their defaults, updated with ``given`` (for entries built on this one,
    such as infer_literature.py); an unknown name is refused."""
    params = inspect.signature(main).parameters
    unknown = sorted(set(given) - set(params))
    if unknown:
        raise UserError(f"unknown flag(s) --{', --'.join(unknown)} (infer.py's flags: {', '.join(params)})")
    return {name: given.get(name, param.default) for name, param in params.items()}


def load(
    base_model,
    lora_weights,
    use_lora,
    prompt_template,
    system_prompt,
    load_8bit,
    load_4bit,
    precision,
    trust_remote_code,
    default_template: str = DEFAULT_TEMPLATE,
):
    """(prompter, tokenizer, model, settings used): empty flags defaulted from the adapter's run_config.json."""
    chosen = adapters.settings(
        lora_weights if use_lora else "", base_model, prompt_template, system_prompt, default_template
    )
    prompter = make_prompter(chosen["prompt_template"], chosen["system_prompt"])
    tokenizer, model, base_model = loading.load_for_inference(
        chosen["base_model"], chosen["lora_weights"], use_lora, load_8bit, load_4bit, precision, trust_remote_code
    )
    used = {
        "base_model": base_model,
        "lora_weights": lora_weights if use_lora else "",
        "prompt_template": prompter.template_name,
        "system_prompt": prompter.system_prompt,
        "load_8bit": load_8bit,
        "load_4bit": load_4bit,
    }
    return prompter, tokenizer, model, used


def chat(
    prompter, tokenizer, model, gen_config, turns, keep_history: bool, max_history_turns: int, interactive: bool
) -> list[dict]:
    """HuaTuo's literature chat: each turn asked through the prompter, history folded as the template's data
    does; each answer printed on its line as it comes."""

    def answer(instruction: str) -> str:
        prompt = prompter.prompts(tokenizer, [{"instruction": instruction}])[0]
        return generation.generate_batch(model, tokenizer, [prompt], gen_config)[0]

    def show(text: str) -> None:
        print(f"助手: {text}" if interactive else text, flush=True)

    return literature.chat(answer, turns, keep_history, max_history_turns, prompter.folds_dialogue, show)


def print_answers(records: list[dict], answers: list[str]) -> None:
    """HuaTuo's console format."""
    for record, answer in zip(records, answers):
        print("###infering###")
        print("###instruction###")
        print(question_of(record))
        if record.get("output") is not None:
            print("###golden output###")
            print(record["output"])
        print("###model output###")
        print(answer)


def write_results(output_file: str, records: list[dict], answers: list[str], used: dict) -> None:
    """JSON Lines: each record's fields, ``model_output`` and the settings used (read by utils.data.records.read_results)."""
    path = Path(output_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for record, answer in zip(records, answers):
            handle.write(json.dumps({**record, "model_output": answer, "settings": used}, ensure_ascii=False) + "\n")
    logger.info("wrote %d answers to %s", len(answers), path)


def main(
    load_8bit: bool = False,  # base weights in int8
    base_model: str = "",  # HF model folder or hub id; "" = the adapter's (run_config.json), else the embedded tiny LLaMA
    instruct_dir: str = "",  # questions file (JSON Lines or JSON array); "" = a few built-in questions
    use_lora: bool = True,  # apply the adapter in --lora_weights
    lora_weights: str = "./lora-llama-med",  # adapter folder or hub id written by finetune.py (or an old peft one)
    prompt_template: str = "",  # templates/NAME.json, a path to one, or chat; "" = the adapter's, else med_template
    system_prompt: str = "",  # chat template only: system message for records without one ("" = the adapter's / template default)
    output_file: str = "",  # write JSON Lines answers here ("" = print only)
    batch_size: int = 16,  # most questions generated together (5.6x one-at-a-time on CPU); on a GPU fewer when their KV cache would not fit, halved on out-of-memory
    max_new_tokens: int = generation.MAX_NEW_TOKENS,  # answer length limit, in tokens
    num_beams: int = generation.NUM_BEAMS,  # beam width; 1 = greedy
    temperature: float = generation.TEMPERATURE,  # only with do_sample
    top_p: float = generation.TOP_P,  # only with do_sample
    top_k: int = generation.TOP_K,  # only with do_sample
    do_sample: bool = generation.DO_SAMPLE,  # sample instead of greedy/beam search
    load_4bit: bool = False,  # base weights in NF4
    precision: str = "auto",  # auto | bf16 | fp16 | fp32
    trust_remote_code: bool = False,  # run model code shipped with the checkpoint
    quiet: bool = False,  # do not print the answers (still written to output_file)
    mode: str = "file",  # file: answer --instruct_dir; single | multi: chat from stdin (multi keeps the history)
    max_history_turns: int = 5,  # multi: earlier exchanges folded into the prompt as HuaTuo did (0 = all)
    on_bad_record: str = "error",  # error | skip: a bad question record stops the run, or is left out and counted
):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if batch_size < 1:
        raise UserError(f"batch_size must be at least 1, got {batch_size}")
    if mode not in ("file", "single", "multi"):
        raise UserError(f"mode must be file, single or multi, got {mode!r}")
    if instruct_dir:
        records = load_records(instruct_dir, require_output=False, on_bad_record=on_bad_record).records
    else:
        records = [{"instruction": q} for q in BUILTIN_QUESTIONS]

    prompter, tokenizer, model, used = load(
        base_model,
        lora_weights,
        use_lora,
        prompt_template,
        system_prompt,
        load_8bit,
        load_4bit,
        precision,
        trust_remote_code,
    )
    settings = dict(
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        num_beams=num_beams,
        max_new_tokens=max_new_tokens,
        do_sample=do_sample,
    )
    gen_config = generation.make_generation_config(model, tokenizer, **settings)
    if mode != "file":  # the answers are printed as they come
        interactive = sys.stdin.isatty()
        records = chat(
            prompter,
            tokenizer,
            model,
            gen_config,
            literature.read_turns(sys.stdin, interactive),
            mode == "multi",
            max_history_turns,
            interactive,
        )
        answers = [r.pop("model_output") for r in records]
    else:
        answers = generation.generate_answers(
            model, tokenizer, prompter.prompts(tokenizer, records), gen_config, batch_size
        )
        if not quiet:
            print_answers(records, answers)
    if output_file:
        write_results(output_file, records, answers, {**used, **settings})


if __name__ == "__main__":
    from utils.cli import run

    run(main)
