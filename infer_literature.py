"""HuaTuo's infer_literature.py: ask an adapter tuned on medical-literature dialogues.

A thin entry over infer.py (same loading, adapter read-back, prompts and generation), with the
seed's flags. Questions are asked in the literature format (`` <user>: q``, history folded as
`` <user>: .. <bot>: .. <user>: ..``; ``utils/data/literature.py``).

* ``--single_or_multi single``: HuaTuo's eight liver-cancer questions (or those of ``--instruct_dir``),
  each asked alone; printed as HuaTuo did (``instruction: ...`` / ``Response: ...``).
* ``--single_or_multi multi``: a conversation, one user turn per line from the terminal (``/reset``,
  ``/exit``) or a pipe, the history kept (``--max_history_turns``).

    python infer_literature.py --lora_weights ./lora-llama-literature --single_or_multi single
    python infer_literature.py --base_model decapoda-research/llama-7b-hf --lora_weights ./lora-llama-literature \\
        --single_or_multi multi --use_lora True --prompt_template literature_template
    printf '肝癌能治好吗？\\n免疫疗法适合我吗？\\n' | python infer_literature.py --single_or_multi multi
"""

import logging
import sys

import infer
from utils.cli import UserError
from utils.data import literature
from utils.data.records import load_records
from utils.model import generation

logger = logging.getLogger("infer_literature")

# HuaTuo's single-turn questions (its infer_literature.py).
SEED_QUESTIONS = [
    "肝癌是什么？有哪些症状和迹象？",
    "肝癌是如何诊断的？有哪些检查和测试可以帮助诊断？",
    "Sorafenib是一种口服的多靶点酪氨酸激酶抑制剂，它的作用机制是什么？",
    "Regorafenib是一种口服的多靶点酪氨酸激酶抑制剂，它的作用机制是什么？它和Sorafenib有什么不同？",
    "肝癌药物治疗的副作用有哪些？如何缓解这些副作用？",
    "肝癌药物治疗的费用高昂，如何降低治疗的经济负担？",
    "我想了解一下β-谷甾醇是否可作为肝癌的治疗药物",
    "能介绍一下最近Hsa＿circ＿0008583在肝细胞癌治疗中的潜在应用的研究么?",
]


def main(
    load_8bit: bool = False,  # base weights in int8
    base_model: str = "",  # HF model folder or hub id; "" = the adapter's (run_config.json), else the embedded tiny LLaMA
    single_or_multi: str = "single",  # single: fixed questions, each alone; multi: a conversation from stdin
    use_lora: bool = True,  # apply the adapter in --lora_weights
    lora_weights: str = "./lora-llama-literature",  # adapter folder or hub id (HuaTuo's script's folder)
    prompt_template: str = "",  # "" = the adapter's, else literature_template
    instruct_dir: str = "",  # single: questions file instead of HuaTuo's eight
    output_file: str = "",  # write JSON Lines answers here ("" = print only)
    **infer_flags,  # any other flag of infer.py, with its default there: --num_beams 1, --max_new_tokens 128, --precision ...
):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if single_or_multi not in ("single", "multi"):
        raise UserError(f"--single_or_multi must be single or multi, got {single_or_multi!r}")
    flags = infer.flags(**infer_flags)
    questions = SEED_QUESTIONS
    if instruct_dir:
        questions = [r["instruction"] for r in load_records(instruct_dir, require_output=False).records]

    prompter, tokenizer, model, used = infer.load(
        base_model,
        lora_weights,
        use_lora,
        prompt_template,
        flags["system_prompt"],
        load_8bit,
        flags["load_4bit"],
        flags["precision"],
        flags["trust_remote_code"],
        default_template="literature_template",
    )
    settings = {name: flags[name] for name in infer.GENERATION_FLAGS}
    gen_config = generation.make_generation_config(model, tokenizer, **settings)
    if single_or_multi == "multi":
        interactive = sys.stdin.isatty()
        records = infer.chat(
            prompter,
            tokenizer,
            model,
            gen_config,
            literature.read_turns(sys.stdin, interactive, "请输入:"),
            True,
            flags["max_history_turns"],
            interactive,
        )
        answers = [r.pop("model_output") for r in records]
    else:
        records = [
            {"instruction": literature.instruction([], q, prompter.folds_dialogue), "input": ""} for q in questions
        ]
        answers = generation.generate_answers(
            model, tokenizer, prompter.prompts(tokenizer, records), gen_config, flags["batch_size"], progress=False
        )
        for question, answer in zip(questions, answers):
            print("instruction:", question)
            print("Response:", answer, flush=True)
    if output_file:
        infer.write_results(output_file, records, answers, {**used, **settings})


if __name__ == "__main__":
    from utils.cli import run

    run(main)
