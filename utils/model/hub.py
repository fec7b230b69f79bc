"""Local folder or Hugging Face hub id, resolved the same way for base models and adapters.

A name that exists on disk is a folder. Otherwise ``owner/name`` is a hub id, fetched through
``huggingface_hub.snapshot_download`` into its cache (``HF_HOME/hub/models--owner--name/snapshots/<rev>``)
and loaded from there; only the files a loader needs are fetched. ``HF_HUB_OFFLINE=1`` is honoured:
the cached snapshot is used and nothing is downloaded. Every script then works on a local folder.
"""

import logging
from pathlib import Path

logger = logging.getLogger(__name__)

# What a base model loader reads: config, tokenizer (sentencepiece, tiktoken, chat template), code for
# trust_remote_code, and safetensors weights (pytorch_model*.bin only when the repository has none).
MODEL_FILES = ("*.json", "*.model", "*.txt", "*.tiktoken", "*.jinja", "*.py", "*.safetensors")
MODEL_BIN_FILES = ("pytorch_model*.bin",)
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin", "run_config.json")


def looks_like_hub_id(name: str) -> bool:
    return name.count("/") == 1 and not name.startswith((".", "/", "~")) and all(name.split("/"))


def resolve_folder(
    name: str,
    what: str,
    required: str,
    patterns: tuple[str, ...],
    fallback_patterns: tuple[str, ...] = (),
    hint: str = "",
) -> str:
    """The local folder holding ``name`` (a folder, or a hub id fetched into the cache).

    ``what`` names the thing in errors ("base model", "LoRA adapter"), ``hint`` says what to pass
    instead; the folder must hold ``required``. ``fallback_patterns`` are fetched too when nothing
    matching ``patterns[-1]`` came (old repositories with only ``.bin`` weights).
    """
    path = Path(name).expanduser()
    hint = f"; {hint}" if hint else ""
    if path.exists() or not looks_like_hub_id(name):
        if not path.exists():
            raise FileNotFoundError(
                f"{what} {name!r} not found (tried {path.resolve()}); pass a local folder or a hub id "
                f"(owner/name)"
                f"{hint}"
            )
        if not (path / required).is_file():
            raise FileNotFoundError(f"{what} folder {path} has no {required}{hint}")
        return str(path)

    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        folder = Path(snapshot_download(name, allow_patterns=list(patterns)))
        if fallback_patterns and not any(folder.glob(patterns[-1])):
            folder = Path(snapshot_download(name, allow_patterns=list(patterns + fallback_patterns)))
    except (LocalEntryNotFoundError, RepositoryNotFoundError, GatedRepoError, HfHubHTTPError) as err:
        reason = (
            "HF_HUB_OFFLINE=1 and it is not in the cache"
            if constants.HF_HUB_OFFLINE
            else f"it could not be fetched from the hub ({type(err).__name__}: {str(err).splitlines()[0]})"
        )
        raise FileNotFoundError(
            f"{what} {name!r}: no such local folder, and {reason} (cache: {constants.HF_HUB_CACHE}); "
            f"download it while online, or pass a local folder{hint}"
        ) from None
    if not (folder / required).is_file():
        raise FileNotFoundError(f"{what} {name!r}: the cached snapshot {folder} has no {required}")
    logger.info("%s %s: %s", what, name, folder)
    return str(folder)
