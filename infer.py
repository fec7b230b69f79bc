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

import json
import logging
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from utils.args import AdapterArgs, GenerationArgs, ModelArgs, PromptArgs, flag, help_text, parse
from utils.cli import UserError
from utils.data import literature
from utils.data.records import load_records, question_of
from utils.model import generation
from utils.model.inference import load_for_inference

logger = logging.getLogger("infer")

# Asked when no --instruct_dir is given, as HuaTuo's infer.py did.
BUILTIN_QUESTIONS = [
    "一位55岁男性，近半年出现多饮、多尿、体重下降，空腹血糖明显升高，可能是什么疾病？应该如何治疗？",
    "急性阑尾炎有哪些典型症状？需要做哪些检查？",
    "高血压患者在日常生活中需要注意什么？",
]
MODES = ("file", "single", "multi")


@dataclass
class InferArgs:
    """Which questions, where the answers go, how they are asked."""

    instruct_dir: str = flag("", "questions file (JSON Lines or JSON array); '' = a few built-in questions")
    output_file: str = flag("", "write the answers here as JSON Lines, with the settings used ('' = print only)")
    batch_size: int = flag(
        16,
        "most questions generated together (5.6x one at a time on CPU); on a GPU fewer when their KV cache "
        "would not fit, halved on out-of-memory",
    )
    quiet: bool = flag(False, "do not print the answers (they are still written to --output_file)")
    mode: str = flag(
        "file",
        "file: answer --instruct_dir; single | multi: chat from stdin, a turn per line (multi keeps the history)",
    )
    max_history_turns: int = flag(5, "multi: earlier exchanges folded into the prompt, as HuaTuo did (0 = all)")
    on_bad_record: str = flag("error", "error | skip: a bad question record stops the run, or is left out and counted")


GROUPS = (ModelArgs, AdapterArgs, PromptArgs, GenerationArgs, InferArgs)


def chat(loaded, gen_config, turns, keep_history: bool, max_history_turns: int, interactive: bool) -> list[dict]:
    """HuaTuo's literature chat: each turn asked through the prompter, history folded as the template's data
    does; each answer printed on its line as it comes."""

    def answer(instruction: str) -> str:
        prompt = loaded.prompter.prompts(loaded.tokenizer, [{"instruction": instruction}])[0]
        return generation.generate_batch(loaded.model, loaded.tokenizer, [prompt], gen_config)[0]

    def show(text: str) -> None:
        print(f"助手: {text}" if interactive else text, flush=True)

    folds = loaded.prompter.folds_dialogue
    return literature.chat(answer, turns, keep_history, max_history_turns, folds, show)


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
    """JSON Lines: each record's fields, ``model_output`` and the settings used (read by
    utils.data.records.read_results)."""
    path = Path(output_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for record, answer in zip(records, answers):
            handle.write(json.dumps({**record, "model_output": answer, "settings": used}, ensure_ascii=False) + "\n")
    logger.info("wrote %d answers to %s", len(answers), path)


def main(**flags):
    model, adapter, prompt, gen, run = parse(GROUPS, flags)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if run.batch_size < 1:
        raise UserError(f"batch_size must be at least 1, got {run.batch_size}")
    if run.mode not in MODES:
        raise UserError(f"mode must be file, single or multi, got {run.mode!r}")
    if run.instruct_dir:
        records = load_records(run.instruct_dir, require_output=False, on_bad_record=run.on_bad_record).records
    else:
        records = [{"instruction": q} for q in BUILTIN_QUESTIONS]

    loaded = load_for_inference(model, adapter, prompt)
    gen_config = generation.make_generation_config(loaded.model, loaded.tokenizer, **asdict(gen))
    if run.mode != "file":  # the answers are printed as they come
        interactive = sys.stdin.isatty()
        turns = literature.read_turns(sys.stdin, interactive)
        records = chat(loaded, gen_config, turns, run.mode == "multi", run.max_history_turns, interactive)
        answers = [r.pop("model_output") for r in records]
    else:
        prompts = loaded.prompter.prompts(loaded.tokenizer, records)
        answers = generation.generate_answers(loaded.model, loaded.tokenizer, prompts, gen_config, run.batch_size)
        if not run.quiet:
            print_answers(records, answers)
    if run.output_file:
        write_results(run.output_file, records, answers, {**loaded.settings, **asdict(gen)})


if __name__ == "__main__":
    from utils.cli import run

    run(main, help_text(GROUPS, __doc__))
