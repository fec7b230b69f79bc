"""Weights & Biases set-up that never blocks on a login prompt."""

import logging
import netrc
import os
from pathlib import Path

logger = logging.getLogger(__name__)


def wandb_credentials_present() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def setup_wandb(project: str, run_name: str, watch: str, log_model: str, output_dir: str) -> bool:
    """Configure wandb through its environment variables; return whether to report to it.

    ``project=""`` (and no WANDB_PROJECT) turns wandb off. Without credentials the run is logged
    offline under ``output_dir/wandb`` (``wandb sync`` uploads it later) instead of asking for a key.
    """
    project = project or os.environ.get("WANDB_PROJECT", "")
    if not project or os.environ.get("WANDB_MODE") == "disabled":
        return False
    os.environ["WANDB_PROJECT"] = project
    if watch:
        os.environ["WANDB_WATCH"] = watch
    if log_model:
        os.environ["WANDB_LOG_MODEL"] = log_model
    if run_name:
        os.environ["WANDB_NAME"] = run_name
    os.environ.setdefault("WANDB_DIR", str(Path(output_dir).resolve()))
    Path(os.environ["WANDB_DIR"]).mkdir(parents=True, exist_ok=True)
    if "WANDB_MODE" not in os.environ and not wandb_credentials_present():
        os.environ["WANDB_MODE"] = "offline"
        logger.warning(
            "wandb: no credentials (WANDB_API_KEY or ~/.netrc): logging offline to %s/wandb; "
            "upload later with `wandb sync`, or pass --wandb_project '' to turn wandb off",
            os.environ["WANDB_DIR"],
        )
    return True
