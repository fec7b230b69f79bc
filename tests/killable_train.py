"""Test helper: run finetune.train, and kill this very process at a chosen optimizer step.

    python tests/killable_train.py SIGNAL STEP --flag value ...   # SIGNAL: KILL | TERM | INT | none

The signal is sent from a TrainerCallback at the end of step STEP (added through
``utils.train.checkpointing.install``, wrapped here in the helper only), so the interruption lands at a
known place on any machine speed.
"""

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    import transformers

    import finetune

    signame, step = sys.argv[1], int(sys.argv[2])

    class Killer(transformers.TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if signame != "none" and state.global_step == step:
                os.kill(os.getpid(), getattr(signal, f"SIG{signame}"))

    from utils.train import checkpointing

    install = checkpointing.install

    def install_with_killer(trainer):
        trainer.add_callback(Killer())
        return install(trainer)

    checkpointing.install = install_with_killer
    sys.argv = [sys.argv[0]] + sys.argv[3:]
    from utils.cli import run

    run(finetune.train)


if __name__ == "__main__":
    main()
