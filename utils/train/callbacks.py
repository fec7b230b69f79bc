"""Trainer callbacks that make a run worth reviewing: sample answers per evaluation, a loss chart.

* :class:`SampleAnswersCallback` answers a few fixed questions at every evaluation (and at the end
  of training when the last step had none): greedy, ``max_new_tokens`` tokens, the model in eval
  mode and back to train mode afterwards, on the process of rank 0 only. Each answer is appended to
  ``output_dir/samples.jsonl`` with its step, and shown as a wandb Table when wandb is on.
* :class:`LossChartCallback` draws the train and validation loss from the Trainer's log history into
  ``output_dir/loss.png`` after every evaluation and at the end (a crashed run keeps its last chart).
"""

import json
import logging
import os
from pathlib import Path

from transformers import TrainerCallback

from utils.files import REPO_ROOT

logger = logging.getLogger(__name__)

DEFAULT_SAMPLE_FILE = REPO_ROOT / "data" / "infer.json"


def parameters_sharded(args=None) -> str | None:
    """Why the base's parameters are sharded over the processes (FSDP, DeepSpeed ZeRO-3), or None.

    Read from ``accelerate launch``'s environment (a yaml's ``zero_stage``, or the stage inside the
    DeepSpeed JSON a yaml names with ``deepspeed_config_file``: accelerate/utils/launch.py sets
    ACCELERATE_DEEPSPEED_ZERO_STAGE only for the former, ACCELERATE_DEEPSPEED_CONFIG_FILE for the
    latter) and from the TrainingArguments (``--deepspeed`` JSON or dict; transformers'
    ``is_deepspeed_zero3_enabled`` once they exist). With sharded parameters a forward pass needs
    every rank, so sample answers generated on rank 0 alone would wait forever for the others."""
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true" or (args is not None and args.fsdp):
        return "FSDP shards the parameters over the processes (a forward pass on rank 0 alone would hang)"
    zero_stage = os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "")
    configs = [os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE", ""), args.deepspeed if args is not None else None]
    for config in filter(None, configs):
        config = config if isinstance(config, dict) else json.loads(Path(config).read_text())
        zero_stage = str(config.get("zero_optimization", {}).get("stage", zero_stage))
    deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true" or any(configs)
    if (deepspeed and zero_stage == "3") or (args is not None and zero3_enabled()):
        return "DeepSpeed ZeRO-3 shards the parameters over the processes (a forward pass on rank 0 alone would hang)"
    return None


def zero3_enabled() -> bool:
    """transformers' own answer, however DeepSpeed was configured (set when TrainingArguments are built)."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    return is_deepspeed_zero3_enabled()


def sample_questions(n: int, path: str | Path = DEFAULT_SAMPLE_FILE) -> list[str]:
    """The first ``n`` instructions of a questions file (data/infer.json by default)."""
    from utils.data.records import load_records

    if n <= 0:
        return []
    return [r["instruction"] for r in load_records(path, require_output=False).records[:n]]


class SampleAnswersCallback(TrainerCallback):
    def __init__(
        self, output_dir, tokenizer, prompter, questions: list[str], max_new_tokens: int = 32, use_wandb: bool = False
    ):
        self.path = Path(output_dir) / "samples.jsonl"
        self.tokenizer = tokenizer
        self.prompter = prompter
        self.questions = list(questions)
        self.max_new_tokens = max_new_tokens
        self.use_wandb = use_wandb
        self.rows: list[list] = []  # for the wandb Table: (step, question, answer)
        self.last_step = -1

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero and state.global_step == 0 and self.path.exists():
            self.path.unlink()  # a fresh run in a reused folder: do not mix in an older run's samples

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        self._sample(state, model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self._sample(state, model)

    def _sample(self, state, model) -> None:
        if (
            not state.is_world_process_zero
            or not self.questions
            or model is None
            or state.global_step == self.last_step
        ):
            return
        from utils.model import generation

        self.last_step = state.global_step
        was_training = model.training
        padding_side = self.tokenizer.padding_side  # generate_batch pads on the left; training must not
        model.eval()
        try:
            config = generation.make_generation_config(
                model, self.tokenizer, num_beams=1, max_new_tokens=self.max_new_tokens, do_sample=False
            )
            config.use_cache = True  # training turns the cache off; generation wants it
            prompts = self.prompter.prompts(self.tokenizer, [{"instruction": q} for q in self.questions])
            answers = generation.generate_batch(model, self.tokenizer, prompts, config)
        finally:
            self.tokenizer.padding_side = padding_side
            model.train(was_training)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            for question, answer in zip(self.questions, answers):
                handle.write(
                    json.dumps(
                        {"step": state.global_step, "epoch": state.epoch, "question": question, "answer": answer},
                        ensure_ascii=False,
                    )
                    + "\n"
                )
                self.rows.append([state.global_step, question, answer])
        logger.info("step %d sample answer: %s -> %.80s", state.global_step, self.questions[0], answers[0])
        if self.use_wandb:
            import wandb

            if wandb.run is not None:  # a fresh Table each time: wandb shows the latest, with every step so far
                wandb.log({"sample_answers": wandb.Table(columns=["step", "question", "answer"], data=list(self.rows))})


def plot_losses(log_history: list[dict], path: str | Path) -> bool:
    """Train and validation loss against the step, as a PNG; False when there is nothing to draw."""
    train = [(e["step"], e["loss"]) for e in log_history if "loss" in e and "step" in e]
    val = [(e["step"], e["eval_loss"]) for e in log_history if "eval_loss" in e and "step" in e]
    if not train and not val:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    if train:
        ax.plot(*zip(*train), label="train loss", color="tab:blue")
    if val:
        ax.plot(*zip(*val), "o-", label="validation loss", color="tab:orange")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


class LossChartCallback(TrainerCallback):
    def __init__(self, output_dir):
        self.path = Path(output_dir) / "loss.png"

    def on_evaluate(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            plot_losses(state.log_history, self.path)

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero and plot_losses(state.log_history, self.path):
            logger.info("loss chart: %s", self.path)


def review_callbacks(output_dir, tokenizer, prompter, n_questions: int, max_new_tokens: int, use_wandb: bool) -> list:
    """The callbacks finetune.py adds: sample answers (when n_questions > 0) and the loss chart."""
    callbacks: list = [LossChartCallback(output_dir)]
    questions = sample_questions(n_questions)
    if questions:
        callbacks.append(SampleAnswersCallback(output_dir, tokenizer, prompter, questions, max_new_tokens, use_wandb))
    return callbacks
