"""Weights & Biases set-up that never blocks on a login prompt."""

import logging
import netrc
import os
from pathlib import Path

from utils.args import TrainingArgs

logger = logging.getLogger(__name__)


def wandb_credentials_present() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def setup_wandb(training: TrainingArgs) -> bool:
    """Configure wandb through its environment variables from the ``--wandb_*`` flags; return whether
    to report to it.

    ``--wandb_project ""`` (and no WANDB_PROJECT) turns wandb off. Without credentials the run is logged
    offline under ``output_dir/wandb`` (``wandb sync`` uploads it later) instead of asking for a key.
    """
    project, watch, log_model = training.wandb_project, training.wandb_watch, training.wandb_log_model
    run_name, output_dir = training.wandb_run_name, training.output_dir
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
