"""Every script's flags, defined once: typed groups of flags, each with the line ``--help`` shows.

A group is a dataclass whose fields are flags (:func:`flag` gives the default and the help line).
The groups shared by several scripts live here (model loading, generation); a flag that only one
script has is declared in a group beside that script's ``main``. A script names its groups, and
:func:`utils.cli.run` turns the command line into them:

    GROUPS = (ModelArgs, GenerationArgs, InferArgs)

    def main(**flags):
        model, generation, infer = parse(GROUPS, flags)
        ...

    if __name__ == "__main__":
        run(main, help_text(GROUPS, __doc__))

Fire stays the command-line parser (HuaTuo's scripts were Fire-driven; every spelling a user typed
for them, ``--flag value``, ``--flag=value``, ``--load_8bit`` alone, ``--packing False``,
``--lora_target_modules '[q_proj,v_proj]'``, keeps working). What Fire does not do is done here:
each value is checked against its field's type (a wrong one is a one-line :class:`UserError` naming
the flag), an unknown flag is refused with the closest names, ``--config FILE.yaml`` loads a preset
(flat ``flag: value`` pairs; a flag on the command line wins), and ``--help`` lists every flag of
every group with its type, default and meaning.
"""

import dataclasses
import difflib
import logging
import types
import typing
from pathlib import Path

from utils.cli import UserError
from utils.files import REPO_ROOT

logger = logging.getLogger(__name__)

PRESETS_DIR = REPO_ROOT / "configs" / "presets"
# Other spellings of one flag, accepted on input: HuaTuo's finetune.py said --prompt_template_name where its
# infer.py and generate.py said --prompt_template.
ALIASES = {"prompt_template_name": "prompt_template"}

# HuaTuo's generation settings (its infer.py / generate.py), the defaults of every script that generates.
MAX_NEW_TOKENS = 256
NUM_BEAMS = 4
TEMPERATURE = 0.1
TOP_P = 0.75
TOP_K = 40
DO_SAMPLE = False


def flag(default, help: str):
    """A dataclass field that is a command-line flag: its default and the line ``--help`` shows."""
    return dataclasses.field(default=default, metadata={"help": help})


# ----------------------------------------------------------------------------------------------
# the shared groups


@dataclasses.dataclass
class ModelArgs:
    """Which base model, and how it is loaded."""

    base_model: str = flag(
        "", "HF model folder or hub id; '' = the adapter's (its run_config.json), else the embedded tiny LLaMA"
    )
    load_8bit: bool = flag(False, "base weights in int8 (bitsandbytes; HuaTuo's setting; saves memory, slower)")
    load_4bit: bool = flag(False, "base weights in NF4 (bitsandbytes, QLoRA)")
    precision: str = flag(
        "auto",
        "auto | bf16 | fp16 | fp32 (auto: bf16 on GPUs that have it, else fp16; CPU: bf16 where native, else fp32)",
    )
    trust_remote_code: bool = flag(False, "run model code shipped with the checkpoint (only if you trust it)")


@dataclasses.dataclass
class AdapterArgs:
    """The LoRA adapter applied on the base."""

    lora_weights: str = flag("./lora-llama-med", "adapter folder or hub id written by finetune.py (or an old peft one)")
    use_lora: bool = flag(True, "apply the adapter in --lora_weights (False: the base model alone)")


@dataclasses.dataclass
class PromptArgs:
    """The prompt: template and system message (--prompt_template_name is the same flag)."""

    prompt_template: str = flag(
        "",
        "templates/NAME.json, a path to one, or chat (the tokenizer's template); '' = the adapter's, else med_template",
    )
    system_prompt: str = flag(
        "", "chat template only: system message for records without one ('' = the adapter's / the template's default)"
    )


@dataclasses.dataclass
class GenerationArgs:
    """How answers are generated (HuaTuo's defaults)."""

    max_new_tokens: int = flag(MAX_NEW_TOKENS, "answer length limit, in tokens")
    num_beams: int = flag(NUM_BEAMS, "beam width; 1 = greedy")
    temperature: float = flag(TEMPERATURE, "sampling temperature (only with --do_sample)")
    top_p: float = flag(TOP_P, "nucleus sampling mass (only with --do_sample)")
    top_k: int = flag(TOP_K, "sample among the k likeliest tokens (only with --do_sample)")
    do_sample: bool = flag(DO_SAMPLE, "sample instead of greedy / beam search")


# ----------------------------------------------------------------------------------------------
# the training groups (finetune.py)

DEFAULT_DATA = str(REPO_ROOT / "data" / "llama_data.json")


@dataclasses.dataclass
class LoraArgs:
    """The LoRA adapter trained on the frozen base."""

    lora_r: int = flag(8, "rank of the update matrices")
    lora_alpha: int = flag(16, "scaling numerator: the update is scaled by alpha / r")
    lora_dropout: float = flag(0.05, "dropout on the LoRA branch's input")
    lora_target_modules: list[str] | str = flag(
        "auto",
        "linear layers to adapt, e.g. q_proj,v_proj or [q_proj,v_proj]; auto = by architecture "
        "(HuaTuo's q_proj,v_proj for LLaMA); all-linear = every linear layer but the output head",
    )

    def targets(self) -> list[str]:
        """The targets as a list (``q_proj,v_proj`` on the command line is one string; ``auto`` -> ``["auto"]``)."""
        if isinstance(self.lora_target_modules, str):
            return [m.strip() for m in self.lora_target_modules.split(",") if m.strip()]
        return list(self.lora_target_modules)


@dataclasses.dataclass
class DataArgs:
    """The training records, and how they become batches."""

    data_path: str = flag(DEFAULT_DATA, "JSON Lines or a JSON array of {instruction, input, output} records")
    val_data_path: str = flag(
        "", "validation records in their own file (e.g. data/llama_data.valid.json); '' = carve --val_set_size out"
    )
    val_set_size: int = flag(
        500, "records of --data_path held out for validation loss (0 = none; ignored with --val_data_path)"
    )
    on_bad_record: str = flag(
        "error", "error | skip: a bad record stops the run (naming file, line, field), or is left out and counted"
    )
    cutoff_len: int = flag(256, "longest example in tokens, EOS included; longer ones are cut")
    train_on_inputs: bool = flag(False, "False: loss only on the answer (+EOS), the prompt's tokens masked")
    packing: bool | str = flag(
        "auto",
        "padding-free packed micro-batches, loss on answer tokens only; auto = where packed examples stay apart "
        "(False = HuaTuo's padded batches)",
    )
    pack_len: int = flag(
        0, "packed row length in tokens (0 = cutoff_len rounded up to a multiple of 8; flash: one flattened row)"
    )
    group_by_length: bool = flag(False, "padded batches of similar lengths (less padding; packing supersedes it)")

    def __post_init__(self):
        if self.on_bad_record not in ("error", "skip"):
            raise UserError(f"--on_bad_record {self.on_bad_record!r}: expected error or skip")
        if isinstance(self.packing, str) and self.packing.lower() != "auto":
            raise UserError(f"--packing {self.packing!r}: expected True, False or auto")


@dataclasses.dataclass
class TrainingArgs:
    """Batches, schedule, memory plan, checkpoints and run tracking."""

    output_dir: str = flag("./lora-llama-med", "adapter, checkpoints, run_config.json, metrics.json, samples.jsonl")
    batch_size: int = flag(
        128, "examples per optimizer step over all processes (the gradient never depends on the split)"
    )
    micro_batch_size: int | str = flag(
        "auto", "examples per forward pass on one device; auto = the largest that fits the memory plan"
    )
    num_epochs: int = flag(10, "passes over the training data")
    max_steps: int = flag(-1, "stop after this many optimizer steps (-1: --num_epochs decides)")
    learning_rate: float = flag(3e-4, "peak learning rate (linear warm-up, then linear decay)")
    warmup_ratio: float = flag(0.1, "fraction of the steps spent warming up")
    seed: int = flag(42, "seeds the data order, the LoRA initialisation and dropout")
    # memory plan
    gradient_checkpointing: bool | str = flag(
        "auto", "recompute activations in backward (~30% slower, far less memory); auto = when the plan needs it"
    )
    gpu_memory: str = flag(
        "", "memory budget per GPU for the plan, e.g. 24GiB ('' = this GPU's free memory, or RAM on a CPU)"
    )
    attn_implementation: str = flag(
        "auto",
        "auto (sdpa where the architecture has it, else eager) | sdpa | eager | flash_attention_2 "
        "(needs flash-attn; one flattened row per micro-batch)",
    )
    dry_run: bool = flag(False, "print the memory plan (a table, then one JSON line) and exit; needs only config.json")
    # checkpoints and logs
    logging_steps: int = flag(8, "log the training loss every N steps")
    eval_steps: int = flag(32, "validation loss every N steps")
    save_steps: int = flag(32, "checkpoint every N steps")
    save_total_limit: int = flag(5, "keep at most N checkpoints")
    resume_from_checkpoint: str | None = flag(
        None,
        "a checkpoint-N folder (exact resume), auto (the latest complete one in --output_dir), "
        "or an adapter folder (its weights only)",
    )
    # review
    wandb_project: str = flag("llama_med", "Weights & Biases project; '' turns wandb off; offline without credentials")
    wandb_run_name: str = flag("", "run name shown in wandb")
    wandb_watch: str = flag("", "'' | false | gradients | all: what wandb watches of the model")
    wandb_log_model: str = flag("", "'' | false | true: upload checkpoints to wandb as artifacts")
    sample_questions: int = flag(3, "answer the first N questions of data/infer.json at every evaluation (0 = off)")
    sample_max_new_tokens: int = flag(32, "length of those sample answers, in tokens (greedy)")

    def __post_init__(self):
        if isinstance(self.micro_batch_size, str) and self.micro_batch_size.lower() != "auto":
            raise UserError(f"--micro_batch_size {self.micro_batch_size!r}: expected a number or auto")
        if isinstance(self.gradient_checkpointing, str) and self.gradient_checkpointing.lower() != "auto":
            raise UserError(f"--gradient_checkpointing {self.gradient_checkpointing!r}: expected True, False or auto")


# ----------------------------------------------------------------------------------------------
# flags -> groups


def fields_of(groups) -> dict[str, tuple[type, dataclasses.Field]]:
    """flag name -> (its group, its field), over ``groups`` in order (a later group may not redefine a name)."""
    found = {}
    for group in groups:
        for field in dataclasses.fields(group):
            if field.name in found:
                raise TypeError(f"flag {field.name!r} is in both {found[field.name][0].__name__} and {group.__name__}")
            found[field.name] = (group, field)
    return found


def parse(groups, flags: dict) -> list:
    """One instance of each group from ``flags`` (a command line as Fire read it, or keyword arguments):
    ``config`` (a preset, YAML) first, then the flags; every value checked against its field's type.

    A preset describes a run, so one file serves several scripts: its keys that are flags of the
    shared groups here but not of this script (``num_epochs`` for infer.py) are left out with a log
    line; any other unknown key is an error, as on the command line."""
    fields = fields_of(groups)
    flags = dict(flags)
    config = flags.pop("config", "")
    preset = load_preset(config) if config else {}
    shared = {f.name for group in shared_groups() for f in dataclasses.fields(group)}
    unused = sorted(set(preset) & shared - set(fields))
    if unused:
        logger.info("--config %s: not flags of this script, left out: %s", config, ", ".join(unused))
    values = {}
    in_preset = f"in {find_preset(config)}" if config else ""
    for source, given in (
        (in_preset, {k: v for k, v in preset.items() if k not in unused}),
        ("on the command line", flags),
    ):
        for name, value in given.items():
            name = name.replace("-", "_")
            name = ALIASES.get(name, name) if name not in fields else name
            if name not in fields:
                close = difflib.get_close_matches(name, list(fields), n=3)
                hint = f"; did you mean --{', --'.join(close)}?" if close else ""
                raise UserError(f"unknown flag --{name} {source}{hint} (see --help)")
            values[name] = coerce(name, value, typing.get_type_hints(fields[name][0])[name])
    return [
        group(**{f.name: values[f.name] for f in dataclasses.fields(group) if f.name in values}) for group in groups
    ]


def shared_groups() -> list[type]:
    """The groups defined in this module (shared by several scripts)."""
    return [g for g in globals().values() if dataclasses.is_dataclass(g) and g.__module__ == __name__]


def load_preset(path: str) -> dict:
    """A preset's flags: ``path``, or a name in configs/presets/ (``--config huatuo-llama-7b`` for
    configs/presets/huatuo-llama-7b.yaml)."""
    import yaml

    found = find_preset(path)
    try:
        preset = yaml.safe_load(found.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise UserError(f"{found}: not valid YAML: {err}") from None
    if not isinstance(preset, dict):
        raise UserError(f"{found}: a preset is a mapping of flag: value, got {type(preset).__name__}")
    return preset


def find_preset(path: str) -> Path:
    """The preset file ``--config path`` names: the path itself, else configs/presets/NAME[.yaml]."""
    candidates = [Path(path), PRESETS_DIR / path, PRESETS_DIR / f"{path}.yaml"]
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        shipped = ", ".join(sorted(p.stem for p in PRESETS_DIR.glob("*.yaml")))
        raise UserError(f"--config {path}: no such file (the shipped presets: {shipped})")
    return found


def as_flags(*groups) -> dict:
    """The flags of group instances as one dict (what run_config.json records under "flags")."""
    return {name: value for group in groups for name, value in dataclasses.asdict(group).items()}


def coerce(name: str, value, annotation):
    """``value`` as the type the flag declares; a union (``int | str``) takes the first member that fits."""
    members = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    for member in members:
        try:
            return as_type(value, member)
        except (TypeError, ValueError):
            continue
    if str in members and isinstance(value, (list, tuple)) and all(isinstance(v, (str, int, float)) for v in value):
        return ",".join(str(v) for v in value)  # Fire reads a bare a,b as a tuple: the text had a comma
    kinds = " or ".join(getattr(m, "__name__", str(m)) for m in members)
    raise UserError(f"--{name}: expected {kinds}, got {value!r}")


def as_type(value, kind):
    """``value`` (as Fire or YAML gave it) converted to ``kind``, or a ValueError."""
    origin = typing.get_origin(kind)
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.strip().lower() in ("true", "1", "yes")
        raise ValueError(value)
    if kind is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(value)
        return int(value)
    if kind is float:
        if isinstance(value, bool):
            raise ValueError(value)
        return float(value)
    if kind is str:
        if isinstance(value, (list, tuple, dict)):
            raise ValueError(value)
        return "" if value is None else str(value)
    if origin is list:
        if isinstance(value, (list, tuple)):
            return [as_type(v, typing.get_args(kind)[0]) for v in value]
        raise ValueError(value)
    if kind is dict:
        if isinstance(value, dict):
            return value
        raise ValueError(value)
    if kind is type(None):
        if value is None:
            return None
        raise ValueError(value)
    raise TypeError(f"flags of type {kind} are not supported")


# ----------------------------------------------------------------------------------------------
# --help


def help_text(groups, doc: str = "") -> str:
    """``--help``: the script's docstring, then each group's flags with type, default and meaning."""
    lines = [doc.strip(), ""] if doc else []
    lines.append("flags (--name value or --name=value; --config FILE.yaml loads a preset, a flag given here wins):")
    for group in groups:
        lines += ["", f"{group.__name__}: {first_paragraph(group.__doc__)}"]
        hints = typing.get_type_hints(group)  # a module with `from __future__ import annotations` has strings
        for field in dataclasses.fields(group):
            kind = getattr(hints[field.name], "__name__", str(hints[field.name]).replace("typing.", ""))
            lines.append(f"  --{field.name} ({kind}, default {field.default!r})")
            lines.append(f"      {field.metadata.get('help', '')}")
    lines += ["", "  --config (str): a preset, configs/presets/NAME.yaml or a path (flag: value per line)"]
    return "\n".join(lines)


def first_paragraph(doc: str | None) -> str:
    """A docstring's first paragraph on one line."""
    return " ".join((doc or "").strip().split("\n\n")[0].split())
