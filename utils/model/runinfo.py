"""Self-describing outputs: the resolved configuration, library versions and data hashes as JSON,
written atomically (``utils/files.py``); the one home of file hashing."""

import hashlib
import json
import os
import platform
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from utils.files import write_atomic
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


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json(path: str | os.PathLike, obj) -> str:
    """:func:`write_atomic` of ``obj`` as indented JSON (non-ASCII kept as is)."""
    return write_atomic(path, json.dumps(obj, ensure_ascii=False, indent=2, default=str) + "\n")


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
