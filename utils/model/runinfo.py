"""Self-describing outputs: the resolved configuration, library versions and data hashes as JSON,
hashed and written by utils/files.py."""

import platform
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from utils.model.tiny_base import fingerprint_of

LIBRARIES = ("torch", "transformers", "peft", "bitsandbytes", "accelerate", "datasets", "wandb", "tokenizers")


def library_versions() -> dict:
    versions = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def run_config(flags: dict, **extra) -> dict:
    """Every flag as resolved, plus library versions, the command line and a timestamp.

    When ``resolved`` names a ``base_model`` folder built by ``utils/model/tiny_base.py``, its token-id
    fingerprint is recorded beside it (``tiny_base_fingerprint``), so an adapter trained on it is
    refused later by a tiny base with other ids (``utils/model/adapters.py``).
    """
    resolved = extra.get("resolved")
    if isinstance(resolved, dict) and resolved.get("base_model") and Path(str(resolved["base_model"])).is_dir():
        fingerprint = fingerprint_of(resolved["base_model"])
        if fingerprint:
            extra["resolved"] = {**resolved, "tiny_base_fingerprint": fingerprint}
    return {
        "flags": flags,
        **extra,
        "command": sys.argv,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": library_versions(),
    }
