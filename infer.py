"""Answer a file of questions with a base model and (optionally) a LoRA adapter.

Prints instruction / golden output / model output for every record as the seed did, and with
``--output_file`` writes JSON Lines: each input record's fields plus ``model_output`` and the
settings used. Questions are answered in left-padded batches (``--batch_size``).

    python infer.py --lora_weights ./lora-llama-med --instruct_dir ./data/infer.json
    python infer.py --base_model decapoda-research/llama-7b-hf --load_8bit \\
        --lora_weights ./lora-llama-med --instruct_dir ./data/infer.json --output_file answers.jsonl
    python infer.py --use_lora False --prompt_template ori_template --instruct_dir ./data/infer.json
"""

import json
import logging
from pathlib import Path

from utils import generation, modeling
from utils.data import load_records
from utils.prompter import DEFAULT_TEMPLATE, Prompter

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
    prompt_template: str = DEFAULT_TEMPLATE,  # templates/NAME.json, or a path to one
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
):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    prompter = Prompter(prompt_template)
    if instruct_dir:
        records = load_records(instruct_dir, require_output=False).records
    else:
        records = [{"instruction": q} for q in BUILTIN_QUESTIONS]

    tokenizer, model, base_model = modeling.load_for_inference(
        base_model, lora_weights, use_lora, load_8bit, load_4bit, precision, trust_remote_code
    )
    settings = dict(
        temperature=temperature, top_p=top_p, top_k=top_k, num_beams=num_beams, max_new_tokens=max_new_tokens, do_sample=do_sample
    )
    gen_config = generation.make_generation_config(model, tokenizer, **settings)
    prompts = [prompter.generate_prompt(r["instruction"], r.get("input")) for r in records]
    answers = generation.generate_answers(model, tokenizer, prompts, gen_config, batch_size)

    for record, answer in zip(records, answers):
        if quiet:
            break
        print("###infering###")
        print("###instruction###")
        print(record["instruction"])
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
