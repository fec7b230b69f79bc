"""Answer a file of questions with a base model and (optionally) a LoRA adapter.

Prints instruction / golden output / model output for every record as the seed did, and with
``--output_file`` writes JSON Lines: each input record's fields plus ``model_output`` and the
settings used. Questions are answered in left-padded batches (``--batch_size``).

    python infer.py --lora_weights ./lora-llama-med --instruct_dir ./data/infer.json
    python infer.py --base_model decapoda-research/llama-7b-hf --load_8bit \\
        --lora_weights ./lora-llama-med --instruct_dir ./data/infer.json --output_file answers.jsonl
    python infer.py --use_lora False --prompt_template ori_template --instruct_dir ./data/infer.json
    python infer.py --base_model Qwen/Qwen2.5-7B-Instruct --lora_weights ./lora-qwen-med --prompt_template chat
    # multi-turn chat in the seed's literature format (a terminal, or a pipe: one user turn per line)
    python infer.py --lora_weights ./lora-literature --prompt_template literature_template --mode multi
"""

import json
import logging
import sys
from pathlib import Path

from utils import dialogue, generation, modeling
from utils.chat import make_prompter, prompts_for, question_of
from utils.data import load_records
from utils.prompter import DEFAULT_TEMPLATE

logger = logging.getLogger("infer")

# Asked when no --instruct_dir is given, as the seed's infer.py did.
BUILTIN_QUESTIONS = [
    "一位55岁男性，近半年出现多饮、多尿、体重下降，空腹血糖明显升高，可能是什么疾病？应该如何治疗？",
    "急性阑尾炎有哪些典型症状？需要做哪些检查？",
    "高血压患者在日常生活中需要注意什么？",
]


def main(
    load_8bit: bool = False,  # base weights in int8
    base_model: str = "",  # HF model folder or hub id; "" = the embedded tiny LLaMA
    instruct_dir: str = "",  # questions file (JSON Lines or JSON array); "" = a few built-in questions
    use_lora: bool = True,  # apply the adapter in --lora_weights
    lora_weights: str = "./lora-llama-med",  # adapter folder written by finetune.py (or an old peft one)
    prompt_template: str = DEFAULT_TEMPLATE,  # templates/NAME.json, a path to one, or chat (tokenizer's template)
    system_prompt: str = "",  # chat template only: system message for records without one ("" = template default)
    output_file: str = "",  # write JSON Lines answers here ("" = print only)
    batch_size: int = 16,  # questions generated together (bench/infer_speed.py: 5.6x one-at-a-time on CPU)
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
    max_history_turns: int = 5,  # multi: earlier exchanges folded into the prompt as the seed did (0 = all)
    on_bad_record: str = "error",  # error | skip: a bad question record stops the run, or is left out and counted
):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if mode not in ("file", "single", "multi"):
        raise ValueError(f"mode must be file, single or multi, got {mode!r}")
    prompter = make_prompter(prompt_template, system_prompt)
    if instruct_dir:
        records = load_records(instruct_dir, require_output=False, on_bad_record=on_bad_record).records
    else:
        records = [{"instruction": q} for q in BUILTIN_QUESTIONS]

    tokenizer, model, base_model = modeling.load_for_inference(
        base_model, lora_weights, use_lora, load_8bit, load_4bit, precision, trust_remote_code
    )
    settings = dict(
        temperature=temperature, top_p=top_p, top_k=top_k, num_beams=num_beams, max_new_tokens=max_new_tokens, do_sample=do_sample
    )
    gen_config = generation.make_generation_config(model, tokenizer, **settings)
    if mode != "file":  # the seed's infer-literature chat: history folded as " <user>: .. <bot>: .. <user>: .."
        interactive = sys.stdin.isatty()

        def answer(instruction: str) -> str:
            prompt = prompts_for(prompter, tokenizer, [{"instruction": instruction}])[0]
            return generation.generate_batch(model, tokenizer, [prompt], gen_config)[0]

        records = dialogue.chat(answer, dialogue.read_turns(sys.stdin, interactive), mode == "multi", max_history_turns, interactive)
        answers, quiet = [r.pop("model_output") for r in records], True
    else:
        prompts = prompts_for(prompter, tokenizer, records)
        answers = generation.generate_answers(model, tokenizer, prompts, gen_config, batch_size)

    for record, answer in zip(records, answers):
        if quiet:
            break
        print("###infering###")
        print("###instruction###")
        print(question_of(record))
        if record.get("output") is not None:
            print("###golden output###")
            print(record["output"])
        print("###model output###")
        print(answer)

    if output_file:
        used = {
            "base_model": base_model,
            "lora_weights": lora_weights if use_lora else "",
            "prompt_template": prompter.template_name,
            "system_prompt": system_prompt,
            "load_8bit": load_8bit,
            "load_4bit": load_4bit,
            **settings,
        }
        path = Path(output_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as handle:
            for record, answer in zip(records, answers):
                handle.write(json.dumps({**record, "model_output": answer, "settings": used}, ensure_ascii=False) + "\n")
        logger.info("wrote %d answers to %s", len(answers), path)



if __name__ == "__main__":
    from utils.cli import run

    run(main)
