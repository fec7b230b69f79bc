"""The LoRA adapter folder: its files, reading them, loading, checking, publishing, and what it says about itself.

* **Files.** ``adapter_config.json`` + ``adapter_model.safetensors`` (today's peft) or
  ``adapter_model.bin`` (old peft, e.g. the published HuaTuo LoRA: keys without the adapter name,
  configs with since-removed fields), and ``run_config.json`` written by finetune.py. A folder or a
  hub id (``thinksoso/lora-llama-med``, through the hub cache; ``utils/model/hub.py``).
* **Read.** ``.bin`` files go through PyTorch's weights-only unpickler: a pickle that would run code
  is refused. A load that leaves LoRA weights unset is an error, not a warning.
* **Check / publish.** :func:`adapter_problem` says why a folder is not a complete adapter (optionally
  against the in-memory LoRA); :func:`publish` moves a checked adapter into place, weights first and
  ``adapter_config.json`` last, each by ``os.replace``, so a kill leaves the old adapter, no adapter,
  or the new one.
* **Self-description.** :func:`read_run_config` is the one reader of ``run_config.json`` (an adapter's,
  a merged checkpoint's); :func:`describe` reads an adapter's back: :func:`settings` defaults the base
  model, prompt template and system prompt of infer / generate / score / export from it and warns
  when an explicit flag disagrees; :func:`load_adapter` refuses an adapter trained on the
  embedded tiny base when the tiny base now has other token ids.
"""

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from utils.cli import UserError
from utils.data.chat import CHAT_TEMPLATE_NAME
from utils.data.prompter import DEFAULT_TEMPLATE
from utils.files import fsync_dir
from utils.model import hub, tiny_base

logger = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
RUN_CONFIG = "run_config.json"
PARTIAL_DIR = ".adapter-partial"  # sibling temp folder inside output_dir (hidden, same file system)


# ----------------------------------------------------------------------------------------------
# files


def resolve(lora_weights: str) -> str:
    """The local adapter folder for a folder or a hub id (fetched into, or read offline from, the hub cache)."""
    if not Path(lora_weights).expanduser().exists() and not hub.looks_like_hub_id(lora_weights):
        raise FileNotFoundError(
            f"LoRA adapter folder {lora_weights} not found (pass --lora_weights DIR or a hub id, or --use_lora False)"
        )
    return hub.resolve_folder(
        lora_weights,
        "LoRA adapter",
        ADAPTER_CONFIG,
        hub.ADAPTER_FILES,
        hint="an adapter folder holds adapter_config.json and adapter_model.safetensors (or .bin), as finetune.py "
        "writes it",
    )


def weights_file(folder: str | Path) -> Path | None:
    for name in WEIGHT_FILES:
        path = Path(folder) / name
        if path.is_file():
            return path
    return None


def read_weights(path: Path) -> dict:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    # Pickle files run code on load; the weights-only unpickler refuses anything but tensors.
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling refusal becomes one clear message
        raise UserError(f"{path}: refused to load: not a plain tensor file ({type(err).__name__}: {err})") from None


def weight_shapes(path: Path) -> dict[str, tuple]:
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:  # reads the header; a cut file fails here
            return {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}
    return {name: tuple(t.shape) for name, t in read_weights(path).items()}


# ----------------------------------------------------------------------------------------------
# what the folder says about itself


@dataclass
class AdapterInfo:
    folder: str
    base_model: str | None  # as trained: a folder or hub id, "" = the embedded tiny base, None = not recorded
    prompt_template: str | None
    system_prompt: str | None
    tiny_base_fingerprint: str | None  # the tiny base's token-id identity at training time


def read_run_config(folder: str | Path) -> dict:
    """``folder``'s run_config.json (what finetune.py or export_hf_checkpoint.py recorded: flags,
    resolved settings, ...), {} when it has none: the one reader of that file."""
    path = Path(folder) / RUN_CONFIG
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(config, dict):
        raise UserError(f"{path}: expected a JSON object, got {type(config).__name__}")
    return config


def describe(folder: str | Path) -> AdapterInfo:
    """What ``run_config.json`` records (all None for an adapter without one, e.g. an old peft one)."""
    config = read_run_config(folder)
    if not config:
        return AdapterInfo(str(folder), None, None, None, None)
    flags, resolved = config.get("flags") or {}, config.get("resolved") or {}
    given = flags.get("base_model")
    base = "" if given == "" else resolved.get("base_model", given)  # "" = the embedded tiny base wherever it lives
    return AdapterInfo(
        str(folder),
        base,
        flags.get("prompt_template_name"),
        flags.get("system_prompt"),
        resolved.get("tiny_base_fingerprint"),
    )


def same_base(a: str, b: str) -> bool:
    """Whether two base-model names are the same model ("" = the embedded tiny base; folders by their real path)."""
    if a == b:
        return True
    pa, pb = (Path(x or tiny_base.DEFAULT_DIR).expanduser() for x in (a, b))  # "" = the embedded tiny base
    return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()


def settings(
    lora_weights: str,
    base_model: str = "",
    prompt_template: str = "",
    system_prompt: str = "",
    default_template: str = DEFAULT_TEMPLATE,
) -> dict:
    """Base model, prompt template and system prompt for using ``lora_weights`` ("" = none), each
    defaulted from the adapter's ``run_config.json`` when the flag is empty (the template then falls
    back to ``default_template``); an explicit flag that disagrees with the adapter wins, with a
    warning. ``lora_weights`` comes back as a local folder. The one helper every consumer calls."""
    info = describe(resolve(lora_weights)) if lora_weights else AdapterInfo("", None, None, None, None)
    chosen = {"lora_weights": info.folder}
    for name, flag, recorded in (
        ("base_model", base_model, info.base_model),
        ("prompt_template", prompt_template, info.prompt_template),
        ("system_prompt", system_prompt, info.system_prompt),
    ):
        chosen[name] = flag or recorded or ""
        if recorded is None or flag == recorded:
            continue
        shown = repr(recorded) if recorded else "(the embedded tiny base)" if name == "base_model" else "''"
        if not flag:
            logger.info("%s from %s/%s: %s", name, lora_weights, RUN_CONFIG, shown)
        elif not (same_base(flag, recorded) if name == "base_model" else False):
            logger.warning(
                "--%s %r differs from the %s that %s was trained with (%s): using %r as asked",
                name,
                flag,
                shown,
                lora_weights,
                RUN_CONFIG,
                flag,
            )
    chosen["prompt_template"] = chosen["prompt_template"] or default_template
    if not system_prompt and chosen["prompt_template"] != CHAT_TEMPLATE_NAME:
        chosen["system_prompt"] = ""  # the adapter's system prompt belongs to its chat template
    return chosen


def check_base(folder: str | Path, base_path: str) -> None:
    """Refuse an adapter trained on the embedded tiny base when ``base_path`` is a tiny base with other token ids."""
    trained = describe(folder).tiny_base_fingerprint
    current = tiny_base.fingerprint_of(base_path) if Path(base_path).is_dir() else None
    if trained and current and trained != current:
        raise UserError(
            f"{folder} was trained on the embedded tiny base with tokenizer fingerprint {trained[:12]}, but "
            f"{base_path} "
            f"has {current[:12]}: its token ids differ and the adapter would answer nonsense. Rebuild the base it was "
            f"trained "
            "on from the checkout that trained it (python -m utils.model.tiny_base --out_dir DIR, then pass "
            "--base_model DIR), "
            "or retrain the adapter on the current tiny base (python finetune.py ...)"
        )


# ----------------------------------------------------------------------------------------------
# load


def load_adapter(model, lora_weights: str, is_trainable: bool = False):
    """Wrap ``model`` with the LoRA adapter in ``lora_weights`` (folder or hub id; new or old peft format)."""
    from peft import LoraConfig, PeftModel, set_peft_model_state_dict

    folder = Path(resolve(lora_weights))
    check_base(folder, getattr(model, "name_or_path", "") or getattr(model.config, "_name_or_path", ""))
    weights_path = weights_file(folder)
    if weights_path is None:
        raise FileNotFoundError(f"{folder}: no {' or '.join(WEIGHT_FILES)}")
    config_path = folder / ADAPTER_CONFIG
    raw = json.loads(config_path.read_text())
    known = set(LoraConfig.__dataclass_fields__)
    dropped = sorted(set(raw) - known)
    if dropped:
        logger.info("%s: ignoring config fields from an older peft: %s", config_path, ", ".join(dropped))
    config = LoraConfig(**{k: v for k, v in raw.items() if k in known and k not in ("peft_type",)})
    config.inference_mode = not is_trainable

    weights = read_weights(weights_path)
    if not weights:
        raise UserError(f"{weights_path} holds no tensors (an empty adapter, as old alpaca-lora runs saved)")
    peft_model = PeftModel(model, config)
    result = set_peft_model_state_dict(peft_model, weights)
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    missing = [k for k in (getattr(result, "missing_keys", []) or []) if "lora_" in k]
    if unexpected or missing:
        raise UserError(
            f"{weights_path} does not match the base model: {len(unexpected)} unexpected keys "
            f"(e.g. {unexpected[:2]}), {len(missing)} LoRA weights left unset (e.g. {missing[:2]})"
        )
    if not is_trainable:
        peft_model.eval()
        for param in peft_model.parameters():
            param.requires_grad_(False)
    logger.info(
        "loaded adapter %s (%d tensors, r=%s, targets=%s)", folder, len(weights), config.r, config.target_modules
    )
    return peft_model


# ----------------------------------------------------------------------------------------------
# check and publish


def expected_shapes(model) -> dict[str, tuple]:
    """The tensors a saved adapter must hold: name (as peft saves it) -> shape, from the in-memory LoRA.

    Under DeepSpeed ZeRO-3 a parameter's local shape is empty; its true shape is ``ds_shape``.
    """
    model = getattr(model, "module", model)
    names = {}
    adapter = getattr(model, "active_adapter", "default")
    adapter = adapter if isinstance(adapter, str) else adapter[0]
    for name, param in model.named_parameters():
        if "lora_" not in name:
            continue
        shape = tuple(getattr(param, "ds_shape", param.shape))
        names[name.replace(f".{adapter}.", ".")] = shape
    return names


def adapter_problem(folder: str | Path, model=None) -> str | None:
    """Why ``folder`` is not a complete adapter (None when it is).

    Complete means: ``adapter_config.json`` parses, the weights file parses and holds at least one
    non-empty tensor, and, given the in-memory ``model``, exactly its LoRA tensors with its shapes.
    """
    folder = Path(folder)
    config = folder / ADAPTER_CONFIG
    if not config.is_file():
        return f"{folder}: no {ADAPTER_CONFIG}"
    try:
        json.loads(config.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        return f"{config}: not valid JSON ({err})"
    weights = weights_file(folder)
    if weights is None:
        return f"{folder}: no {' or '.join(WEIGHT_FILES)}"
    try:
        shapes = weight_shapes(weights)
    except Exception as err:  # noqa: BLE001 - safetensors/pickle raise many types for a cut file
        return f"{weights}: unreadable ({type(err).__name__}: {err})"
    if not shapes or all(0 in s or not s for s in shapes.values()):
        return f"{weights}: holds no weights ({len(shapes)} empty tensors) - a ZeRO-3 save without gathering?"
    if model is not None:
        expected = expected_shapes(model)
        if shapes != expected:
            missing = sorted(set(expected) - set(shapes))
            wrong = sorted(n for n in set(expected) & set(shapes) if expected[n] != shapes[n])
            return (
                f"{weights}: {len(shapes)} tensors saved, the model has {len(expected)} LoRA tensors; "
                f"missing {missing[:2]}, wrong shape {[(n, shapes[n], expected[n]) for n in wrong[:2]]}"
            )
    return None


def publish(partial: Path, output_dir: Path) -> None:
    """Move a complete adapter from ``partial`` into ``output_dir``: weights first, config last."""
    output_dir.mkdir(parents=True, exist_ok=True)
    for name in os.listdir(partial):
        with open(partial / name, "rb") as handle:
            os.fsync(handle.fileno())
    # Without a config the folder is not an adapter: drop the old one before its weights change.
    (output_dir / ADAPTER_CONFIG).unlink(missing_ok=True)
    fsync_dir(output_dir)
    for name in WEIGHT_FILES:
        if (partial / name).exists():
            for stale in (
                n for n in WEIGHT_FILES if n != name
            ):  # a .bin beside a new .safetensors would confuse loaders
                (output_dir / stale).unlink(missing_ok=True)
    for name in sorted(os.listdir(partial), key=lambda n: n == ADAPTER_CONFIG):
        os.replace(partial / name, output_dir / name)
    fsync_dir(output_dir)
    partial.rmdir()
