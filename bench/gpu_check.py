"""The GPU figures in one run (bench/gpu_check.sh): plan beside measurement, speed, inference.

For LLaMA-7B shapes (random weights from bench/make_random_llama.py, built on the device) and the
default data: 16-bit, 4-bit and 8-bit (where bitsandbytes imports), with and without gradient
checkpointing, the memory plan's peak (less its runtime part) beside ``torch.cuda.max_memory_allocated``
from finetune.py's own metrics.json; useful tokens/s of finetune.py beside HuaTuo's recipe
(bench/train_speed.py) and the MFU it implies; packed SDPA vs padded; inference answers/s batched
(KV-budgeted) vs one at a time (bench/infer_speed.py). ``--device cpu``: tiny shapes, a smoke test.
"""

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SIZES = {  # per device: preset, training steps, examples for the speed runs, questions for inference
    "cuda": dict(
        preset="7b", steps=6, examples=512, questions=32, new_tokens=64, peak_tflops=989
    ),  # H100/H200 dense bf16
    "cpu": dict(preset="tiny", steps=2, examples=64, questions=8, new_tokens=8, peak_tflops=float("nan")),
}


def run(cmd: list[str], log) -> float:
    start = time.perf_counter()
    log.write(f"$ {' '.join(cmd)}\n")
    log.flush()
    subprocess.run(
        cmd,
        check=True,
        cwd=REPO_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    return time.perf_counter() - start


def main(device: str = "cuda", out_dir: str = str(REPO_ROOT / "bench" / "gpu_check")):
    size, out = SIZES[device], Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(os.environ.get("GPU_CHECK_WORK", "/tmp/gpu_check_work"))
    work.mkdir(parents=True, exist_ok=True)
    base = work / f"random-llama-{size['preset']}"
    results = {"device": device, "memory": [], "errors": []}
    with open(work / "gpu_check.log", "w") as log:
        if not (base / "config.json").is_file():
            run([sys.executable, "bench/make_random_llama.py", "--out_dir", str(base), "--preset", size["preset"]], log)
        quants = ["16bit", "4bit", "8bit"] if importlib.util.find_spec("bitsandbytes") else ["16bit"]
        for quant in quants:
            for checkpointing in (True, False):
                results["memory"].append(memory_row(base, work, size, log, quant=quant, checkpointing=checkpointing))
        for name, extra in (("packed", "{}"), ("padded", '{"packing": false}')):
            try:
                results[f"train_{name}"] = train_speed(base, work / "train_speed" / name, size, log, extra)
            except (subprocess.CalledProcessError, OSError, KeyError) as err:
                results["errors"].append(f"train_speed {name}: {type(err).__name__}: {err}")
        try:
            results["inference"] = inference_speed(base, work / "infer", size, log)
        except (subprocess.CalledProcessError, OSError, KeyError) as err:
            results["errors"].append(f"infer_speed: {type(err).__name__}: {err}")
    (out / "gpu_check.json").write_text(json.dumps(results, indent=1))
    (out / "gpu_check.md").write_text(markdown(results))
    print(markdown(results))


def memory_row(base: Path, work: Path, size: dict, log, *, quant: str, checkpointing: bool) -> dict:
    """finetune.py for a few steps: the plan's peak (less its runtime part) beside the measured one."""
    run_dir = work / f"train-{quant}-{'gc' if checkpointing else 'nogc'}"
    flags = ["--base_model", str(base), "--output_dir", str(run_dir), "--max_steps", str(size["steps"])]
    flags += ["--val_set_size", "0", "--save_steps", "1000", "--sample_questions", "0", "--wandb_project="]
    flags += ["--gradient_checkpointing", str(checkpointing)]
    flags += {"16bit": [], "4bit": ["--load_4bit"], "8bit": ["--load_8bit"]}[quant]
    row = {"quantization": quant, "gradient_checkpointing": checkpointing}
    try:
        seconds = run([sys.executable, "finetune.py", *flags], log)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        plan = json.loads((run_dir / "run_config.json").read_text())["resolved"]["memory_plan"]
        measured = metrics.get("gpu_memory_gib", {}).get("measured_max_allocated")
        planned = round(plan["peak_gib"] - plan["parts_gib"]["runtime"], 2)
        row.update(
            micro_batch_size=plan["micro_batch_size"],
            tokens_per_micro_batch=plan["tokens_per_micro_batch"],
            planned_gib=planned,
            measured_gib=measured,
            measured_over_planned=round(measured / planned, 3) if measured else None,
            int8_kept_bytes_per_token=plan.get("int8_kept_bytes_per_token", 0),
            train_seconds=round(seconds, 1),
        )
    except (subprocess.CalledProcessError, OSError, KeyError) as err:  # one failing row must not hide the others
        row["error"] = f"{type(err).__name__}: {err}"
    return row


def train_speed(base: Path, speed_dir: Path, size: dict, log, finetune_flags: str) -> dict:
    """bench/train_speed.py: useful tokens/s of HuaTuo's recipe and of finetune.py, and the MFU they imply."""
    cmd = [sys.executable, "bench/train_speed.py", "--base_model", str(base), "--num_examples", str(size["examples"])]
    cmd += ["--num_heldout", "16", "--max_steps", str(size["steps"]), "--out_dir", str(speed_dir)]
    run([*cmd, "--finetune_flags", finetune_flags], log)
    sides = {side: json.loads((speed_dir / f"{side}.json").read_text()) for side in ("recipe", "finetune")}
    params = 6.74e9 if size["preset"] == "7b" else float("nan")
    return {
        side: {
            "useful_tokens_per_s": round(r["tokens"] / r["train_runtime"], 1),
            # 6N FLOPs per token: forward + backward (+ recompute ~)
            "mfu": round(6 * params * r["tokens"] / r["train_runtime"] / (size["peak_tflops"] * 1e12), 4),
        }
        for side, r in sides.items()
    }


def inference_speed(base: Path, infer_dir: Path, size: dict, log) -> dict:
    """bench/infer_speed.py: answers/s batched (KV-budgeted) vs one at a time."""
    cmd = [sys.executable, "bench/infer_speed.py", "--base_model", str(base), "--num_questions", str(size["questions"])]
    run([*cmd, "--max_new_tokens", str(size["new_tokens"]), "--out_dir", str(infer_dir)], log)
    infer = json.loads((infer_dir / "infer_speed.json").read_text())
    return {k: infer[k] for k in ("results", "answers_per_s_ratio", "identical_answers", "num_questions")}


def markdown(results: dict) -> str:
    lines = [
        f"device: {results['device']}",
        "",
        "| weights | checkpointing | micro-batch (tokens) | planned GiB (no runtime) | measured max allocated GiB | "
        "ratio | int8 kept B/token |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results["memory"]:
        if "error" in r:
            lines.append(
                f"| {r['quantization']} | {'on' if r['gradient_checkpointing'] else 'off'} | error: {r['error'][:80]} "
                f"| | | | |"
            )
            continue
        lines.append(
            f"| {r['quantization']} | {'on' if r['gradient_checkpointing'] else 'off'} | {r['micro_batch_size']} "
            f"({r['tokens_per_micro_batch']}) | "
            f"{r['planned_gib']} | {r['measured_gib']} | {r['measured_over_planned']} | "
            f"{r['int8_kept_bytes_per_token']:,} |"
        )
    for name in ("train_packed", "train_padded"):
        if name in results:
            t = results[name]
            lines.append(
                f"\n{name}: useful tokens/s recipe {t['recipe']['useful_tokens_per_s']} -> finetune "
                f"{t['finetune']['useful_tokens_per_s']} "
                f"(MFU {t['finetune']['mfu']})"
            )
    if "inference" in results:
        i = results["inference"]
        lines.append(
            f"\ninference: answers/s one at a time {i['results']['one_at_a_time']['answers_per_s']:.2f}, batched "
            f"{i['results']['batched']['answers_per_s']:.2f} ({i['answers_per_s_ratio']:.2f}x), identical "
            f"{i['identical_answers']}/{i['num_questions']}"
        )
    lines += [f"\nerror: {e}" for e in results["errors"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import fire

    fire.Fire(main)
