"""Inference speed: infer.py's batched generation vs one question at a time, same model, same settings.

Loads the model once exactly as infer.py does (``utils.model.inference.load_for_inference``), then answers the
same questions through ``generation.generate_answers`` (infer.py's code path) with
``batch_size=1`` and with ``--batch_size``, and reports answers/s for both, the ratio, and whether
the answers are identical (they must be with greedy decoding).

    python bench/infer_speed.py                                   # tiny base, 64 questions, greedy
    python bench/infer_speed.py --lora_weights ./lora-llama-med --batch_size 16
    python bench/infer_speed.py --base_model /data/llama-7b --num_beams 4 --max_new_tokens 128   # on a GPU

Writes bench/out/infer_speed.json.
"""

import json
import logging
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

logger = logging.getLogger("infer_speed")

SHARED_DATA = REPO_ROOT.parent / "shared" / "huatuo" / "llama_data.json"


from utils.args import AdapterArgs, GenerationArgs, ModelArgs, PromptArgs, flag, help_text, parse  # noqa: E402


@dataclass
class SpeedAdapterArgs(AdapterArgs):
    """The LoRA adapter applied on the base."""

    lora_weights: str = flag("", "adapter folder ('' = the base alone)")


@dataclass
class SpeedGenerationArgs(GenerationArgs):
    """How answers are generated (greedy and short by default: both ways must give the same answers)."""

    num_beams: int = flag(1, "beam width; 1 = greedy, so batched and one-at-a-time answers must be identical")
    max_new_tokens: int = flag(64, "answer length limit, in tokens")


@dataclass
class SpeedArgs:
    """The questions, the batch, where the result goes."""

    data_path: str = flag("", "questions; '' = ../shared/huatuo/llama_data.json when present, else data/infer.json")
    num_questions: int = flag(64, "questions answered by both")
    batch_size: int = flag(16, "the batched run's batch size (infer.py's default)")
    out_dir: str = flag(str(REPO_ROOT / "bench" / "out"), "where infer_speed.json goes")


GROUPS = (ModelArgs, SpeedAdapterArgs, PromptArgs, SpeedGenerationArgs, SpeedArgs)


def main(**flags):
    model, adapter, prompt, gen, run = parse(GROUPS, flags)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    from utils.data.records import load_records
    from utils.model import generation
    from utils.model.inference import load_for_inference

    data_path = run.data_path or str(SHARED_DATA if SHARED_DATA.is_file() else REPO_ROOT / "data" / "infer.json")
    records = load_records(data_path, require_output=False).records
    num_questions, batch_size = run.num_questions, run.batch_size
    questions = [records[i % len(records)] for i in range(num_questions)]  # a small file is cycled
    loaded = load_for_inference(model, adapter, prompt)
    prompts = loaded.prompter.prompts(loaded.tokenizer, questions)
    config = generation.make_generation_config(loaded.model, loaded.tokenizer, **asdict(gen))
    tokenizer, base_model = loaded.tokenizer, loaded.settings["base_model"]
    num_beams, max_new_tokens, lora_weights = gen.num_beams, gen.max_new_tokens, loaded.settings["lora_weights"]

    results, answers = {}, {}
    for name, size in (("one_at_a_time", 1), ("batched", batch_size)):
        logger.info("%s: %d questions, batch size %d", name, num_questions, size)
        start = time.perf_counter()
        answers[name] = generation.generate_answers(loaded.model, tokenizer, prompts, config, size)
        seconds = time.perf_counter() - start
        results[name] = {"batch_size": size, "seconds": seconds, "answers_per_s": num_questions / seconds}
    identical = sum(a == b for a, b in zip(answers["one_at_a_time"], answers["batched"]))
    ratio = results["batched"]["answers_per_s"] / results["one_at_a_time"]["answers_per_s"]

    print(
        f"\n{num_questions} questions from {data_path}, base {base_model}, beams {num_beams}, max_new_tokens "
        f"{max_new_tokens}"
    )
    print(f"{'':16s}{'one at a time':>16s}{'batched':>16s}{'ratio':>10s}")
    print(f"{'batch size':16s}{1:16d}{batch_size:16d}")
    print(f"{'seconds':16s}{results['one_at_a_time']['seconds']:16.2f}{results['batched']['seconds']:16.2f}")
    print(
        f"{'answers/s':16s}{results['one_at_a_time']['answers_per_s']:16.3f}{results['batched']['answers_per_s']:16.3f}{ratio:10.2f}"
    )
    print(f"identical answers: {identical}/{num_questions}")
    out = Path(run.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = {
        "base_model": base_model,
        "lora_weights": lora_weights,
        "data_path": data_path,
        "num_questions": num_questions,
        "num_beams": num_beams,
        "max_new_tokens": max_new_tokens,
        "results": results,
        "answers_per_s_ratio": ratio,
        "identical_answers": identical,
        "answers": answers,
    }
    (out / "infer_speed.json").write_text(json.dumps(summary, ensure_ascii=False, indent=1))
    logger.info("wrote %s", out / "infer_speed.json")


if __name__ == "__main__":
    from utils.cli import run

    run(main, help_text(GROUPS, __doc__))
