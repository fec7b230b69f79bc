"""HuaTuo's infer_literature.py: ask an adapter tuned on medical-literature dialogues.

A thin entry over infer.py (same loading, adapter read-back, prompts and generation), with
HuaTuo's flags; infer.py's other flags work here too (``--num_beams 1``, ``--batch_size``, ...).
Questions are asked in the literature format (`` <user>: q``, history folded as
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
from dataclasses import asdict, dataclass

import infer
from utils.args import AdapterArgs, GenerationArgs, ModelArgs, PromptArgs, flag, help_text, parse
from utils.cli import UserError
from utils.data import literature
from utils.data.records import load_records
from utils.model import generation
from utils.model.inference import load_for_inference

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
LITERATURE_TEMPLATE = "literature_template"  # when neither --prompt_template nor the adapter names one


@dataclass
class LiteratureAdapterArgs(AdapterArgs):
    """The LoRA adapter applied on the base (HuaTuo's literature folder by default)."""

    lora_weights: str = flag("./lora-llama-literature", "adapter folder or hub id (HuaTuo's script's folder)")


@dataclass
class LiteratureArgs(infer.InferArgs):
    """Which questions, where the answers go (infer.py's flags, but --single_or_multi for --mode)."""

    single_or_multi: str = flag("single", "single: fixed questions, each alone; multi: a conversation from stdin")
    instruct_dir: str = flag("", "single: a questions file instead of HuaTuo's eight")


@dataclass
class LiteraturePromptArgs(PromptArgs):
    """The prompt: template and system message (--prompt_template_name is the same flag)."""

    prompt_template: str = flag(
        "", "templates/NAME.json, a path to one, or chat; '' = the adapter's, else literature_template"
    )


GROUPS = (ModelArgs, LiteratureAdapterArgs, LiteraturePromptArgs, GenerationArgs, LiteratureArgs)


def ask_each(loaded, gen_config, questions: list[str], run: LiteratureArgs) -> tuple[list[dict], list[str]]:
    """single: each question asked alone in the literature format, printed as HuaTuo did."""
    folds = loaded.prompter.folds_dialogue
    records = [{"instruction": literature.instruction([], q, folds), "input": ""} for q in questions]
    prompts = loaded.prompter.prompts(loaded.tokenizer, records)
    answers = generation.generate_answers(
        loaded.model, loaded.tokenizer, prompts, gen_config, run.batch_size, progress=False
    )
    if not run.quiet:
        for question, answer in zip(questions, answers):
            print("instruction:", question)
            print("Response:", answer, flush=True)
    return records, answers


def main(**flags):
    model, adapter, prompt, gen, run = parse(GROUPS, flags)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if run.single_or_multi not in ("single", "multi"):
        raise UserError(f"--single_or_multi must be single or multi, got {run.single_or_multi!r}")
    if run.mode != "file":
        raise UserError(f"--mode is infer.py's; here the conversation is --single_or_multi (got --mode {run.mode})")
    questions = SEED_QUESTIONS
    if run.instruct_dir:
        records = load_records(run.instruct_dir, require_output=False, on_bad_record=run.on_bad_record).records
        questions = [r["instruction"] for r in records]

    loaded = load_for_inference(model, adapter, prompt, default_template=LITERATURE_TEMPLATE)
    gen_config = generation.make_generation_config(loaded.model, loaded.tokenizer, **asdict(gen))
    if run.single_or_multi == "multi":
        interactive = sys.stdin.isatty()
        turns = literature.read_turns(sys.stdin, interactive, "请输入:")
        records = infer.chat(loaded, gen_config, turns, True, run.max_history_turns, interactive)
        answers = [r.pop("model_output") for r in records]
    else:
        records, answers = ask_each(loaded, gen_config, questions, run)
    if run.output_file:
        infer.write_results(run.output_file, records, answers, {**loaded.settings, **asdict(gen)})


if __name__ == "__main__":
    from utils.cli import run

    run(main, help_text(GROUPS, __doc__))
