"""Never lose work: complete-or-absent saves, exact resume, and a clean stop on SIGTERM/SIGINT.

* **Checkpoints.** The HF Trainer writes ``checkpoint-N/`` file by file (adapter, optimizer,
  scheduler, RNG state, ``trainer_state.json`` last). :class:`CompletionMarker` adds
  ``checkpoint_complete.json`` once every process has finished (file names and sizes), so a
  checkpoint killed half-way has no marker and ``resume_from_checkpoint="auto"`` skips it with a warning.
* **Adapters.** :func:`save_adapter` lets the Trainer write the adapter into a temporary sibling
  folder (it knows how to gather DeepSpeed ZeRO-3 / FSDP shards), checks the files against the
  in-memory LoRA (tensor names and shapes: a ZeRO-3 save without gathering writes empty tensors),
  then moves the weights into place and ``adapter_config.json`` last, each by ``os.replace``. A kill
  at any moment leaves either the previous complete adapter, no ``adapter_config.json`` (which
  ``PeftModel.from_pretrained`` and ``adapters.adapter_problem`` reject), or the new complete adapter
  (``utils/model/adapters.py``: the folder format, its check and its publication).
* **Resume.** :func:`resolve_resume` turns ``--resume_from_checkpoint`` (a checkpoint folder,
  ``auto``/``True`` = latest complete checkpoint in ``output_dir``, or an adapter-only folder) into
  what the Trainer needs. The Trainer restores optimizer, schedule, RNG states and data order
  (``data_seed``); all of its ``torch.load`` calls use ``weights_only=True``.
* **Signals.** :class:`GracefulStop` (installed by ``train()``, never at import) turns the first
  SIGTERM/SIGINT into "finish this step, write a checkpoint, stop"; a second one stops at once.
"""

import json
import logging
import os
import re
import shutil
import signal
import sys
from pathlib import Path

import torch

from utils.cli import UserError
from utils.files import fsync_dir, write_json
from utils.model.adapters import PARTIAL_DIR, adapter_problem, publish

logger = logging.getLogger(__name__)

MARKER = "checkpoint_complete.json"
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


def _dist():
    return torch.distributed if torch.distributed.is_available() and torch.distributed.is_initialized() else None


# ----------------------------------------------------------------------------------------------
# adapters: save at the end of training (the folder format: utils/model/adapters.py)


def save_adapter(trainer, output_dir: str | os.PathLike) -> None:
    """Save the trained adapter into ``output_dir`` so that a kill never leaves a half adapter there."""
    output_dir = Path(output_dir)
    partial = output_dir / PARTIAL_DIR
    is_main = trainer.args.should_save
    if is_main and partial.exists():
        shutil.rmtree(partial)
    if _dist():
        _dist().barrier()
    trainer.save_model(str(partial))  # every process joins (ZeRO-3 gathers); only the main one writes
    if not is_main:
        return
    problem = adapter_problem(partial, trainer.model)
    if problem:
        raise RuntimeError(
            f"the saved adapter is not the trained one: {problem}. With DeepSpeed ZeRO-3 set "
            "stage3_gather_16bit_weights_on_model_save: true (configs/accelerate/deepspeed_zero3.yaml)"
        )
    publish(partial, output_dir)


# ----------------------------------------------------------------------------------------------
# checkpoints: completion marker and resume


def checkpoint_problem(folder: str | Path) -> str | None:
    """Why a Trainer ``checkpoint-N`` folder cannot be resumed from (None when it can)."""
    folder = Path(folder)
    marker = folder / MARKER
    if marker.is_file():
        try:
            files = json.loads(marker.read_text(encoding="utf-8"))["files"]
        except (json.JSONDecodeError, KeyError, UnicodeDecodeError) as err:
            return f"{marker}: unreadable ({err})"
        for name, size in files.items():
            path = folder / name
            if not path.is_file() or path.stat().st_size != size:
                return f"{path}: missing or changed since the checkpoint was completed"
        return None
    # A checkpoint from another tool (no marker): the Trainer writes trainer_state.json last.
    state = folder / "trainer_state.json"
    if not state.is_file():
        return f"{folder}: no {MARKER} and no trainer_state.json (the save was interrupted)"
    try:
        json.loads(state.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return f"{state}: cut short (the save was interrupted)"
    return adapter_problem(folder)


def checkpoints(output_dir: str | Path) -> list[Path]:
    """``checkpoint-N`` folders of ``output_dir``, newest (largest N) first."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in output_dir.iterdir() if p.is_dir() and (m := CHECKPOINT_RE.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint; incomplete ones are skipped with a warning."""
    for folder in checkpoints(output_dir):
        problem = checkpoint_problem(folder)
        if problem is None:
            return folder
        logger.warning("skipping incomplete checkpoint: %s", problem)
    return None


def resolve_resume(resume_from_checkpoint, output_dir: str) -> tuple[str | None, str | None]:
    """``--resume_from_checkpoint`` -> (Trainer checkpoint to resume, adapter-only folder to load).

    * None / "" / False: a fresh run.
    * True / "auto" / "latest": the newest complete ``checkpoint-N`` in ``output_dir`` (fresh if none).
    * a ``checkpoint-N`` folder: resumed exactly (refused when incomplete).
    * an adapter folder (no ``trainer_state.json``): its weights are loaded, optimizer and schedule restart.
    """
    value = resume_from_checkpoint
    if value in (None, False, "") or (isinstance(value, str) and value.lower() in ("false", "none")):
        return None, None
    if value is True or (isinstance(value, str) and value.lower() in ("true", "auto", "latest")):
        folder = latest_checkpoint(output_dir)
        if folder is None:
            logger.info("resume_from_checkpoint=%s: no complete checkpoint in %s, starting fresh", value, output_dir)
            return None, None
        logger.info("resuming from the latest complete checkpoint %s", folder)
        return str(folder), None
    folder = Path(str(value))
    if not folder.is_dir():
        raise FileNotFoundError(
            f"resume_from_checkpoint {folder}: no such folder (pass a checkpoint-N folder, an adapter folder, or "
            f"'auto')"
        )
    if (folder / "trainer_state.json").exists() or (folder / MARKER).exists() or CHECKPOINT_RE.match(folder.name):
        problem = checkpoint_problem(folder)
        if problem:
            raise UserError(f"cannot resume from {folder}: {problem}")
        return str(folder), None
    problem = adapter_problem(folder)
    if problem:
        raise UserError(
            f"resume_from_checkpoint {folder} is neither a Trainer checkpoint nor a complete adapter: {problem}"
        )
    logger.warning("%s holds adapter weights only: they are loaded, the optimizer and schedule restart", folder)
    return None, str(folder)


def _callback_base():
    from transformers import TrainerCallback

    return TrainerCallback


class CompletionMarker(_callback_base()):
    """After every checkpoint save, write ``checkpoint_complete.json`` (file names and sizes) into it."""

    def on_save(self, args, state, control, **kwargs):
        if _dist():
            _dist().barrier()  # every process has written its RNG state / shards
        if not state.is_world_process_zero:
            return
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if not folder.is_dir():
            return
        files = {}
        for path in sorted(folder.rglob("*")):
            if path.is_file() and path.name != MARKER:
                with open(path, "rb") as handle:
                    os.fsync(handle.fileno())
                files[str(path.relative_to(folder))] = path.stat().st_size
        write_json(folder / MARKER, {"global_step": state.global_step, "files": files})
        fsync_dir(folder)


class GracefulStop(_callback_base()):
    """First SIGTERM/SIGINT: finish the current step, write a checkpoint, stop. Second: stop now.

    The handlers are installed when training begins and restored when it ends. Under torchrun every
    process gets the signal, perhaps at different steps, so the flag is agreed on by all-reduce.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signum = 0
        self.stopped_at = None
        self._previous = {}

    def _handle(self, signum, frame):
        if self.signum:  # second signal: the user means it
            self._restore()
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}: stopping without a checkpoint")
        self.signum = signum
        logger.warning(
            "%s received: finishing this step, then saving a checkpoint (send again to stop now)",
            signal.Signals(signum).name,
        )

    def _restore(self):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def on_train_begin(self, args, state, control, **kwargs):
        import threading

        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)

    def _agreed(self, args) -> int:
        dist = _dist()
        if dist is None:
            return self.signum
        flag = torch.tensor([self.signum], device=args.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item())

    def on_step_end(self, args, state, control, **kwargs):
        signum = self._agreed(args)
        if signum:
            self.signum = signum
            self.stopped_at = state.global_step
            control.should_save = True
            control.should_training_stop = True
        return control

    def on_train_end(self, args, state, control, **kwargs):
        self._restore()

    def exit_if_stopped(self, output_dir: str) -> None:
        """After ``trainer.train()``: when a signal stopped it, say where the checkpoint is and exit."""
        if not self.signum:
            return
        name = signal.Signals(self.signum).name
        folder = Path(output_dir) / f"checkpoint-{self.stopped_at}"
        logger.warning(
            "stopped by %s at step %s; checkpoint %s written. Resume with --resume_from_checkpoint auto",
            name,
            self.stopped_at,
            folder,
        )
        sys.exit(128 + self.signum)


def install(trainer) -> GracefulStop:
    """Add the completion marker and the signal handling to ``trainer``; returns the stopper."""
    stopper = GracefulStop()
    trainer.add_callback(CompletionMarker())
    trainer.add_callback(stopper)
    return stopper
