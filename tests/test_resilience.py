"""Never lose work: exact resume after kill -9, SIGTERM -> checkpoint, saves that are complete or absent."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import CLI_RUN, tiny_train_args, tiny_train_cli

from utils.train import checkpointing

REPO_ROOT = Path(__file__).resolve().parent.parent
HELPERS = Path(__file__).resolve().parent


def train_cli(tiny_base, train_file, out, *extra, signame="none", step=0):
    """finetune.py in a subprocess (through tests/killable_train.py); returns the CompletedProcess."""
    flags = tiny_train_cli(
        base_model=tiny_base,
        data_path=train_file,
        output_dir=out,
        **CLI_RUN,
        max_steps=6,
        save_steps=2,
    )
    cmd = [sys.executable, str(HELPERS / "killable_train.py"), signame, str(step), *flags, *extra]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT, timeout=900)


def adapter_tensors(folder):
    from safetensors.torch import load_file

    return load_file(str(Path(folder) / "adapter_model.safetensors"))


def assert_same_adapter(a, b, atol=1e-6):
    ta, tb = adapter_tensors(a), adapter_tensors(b)
    assert ta.keys() == tb.keys() and ta
    worst = max((ta[k] - tb[k]).abs().max().item() for k in ta)
    assert worst <= atol, f"adapters differ by {worst}"


@pytest.fixture(scope="module")
def uninterrupted(tiny_base, train_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    result = train_cli(tiny_base, train_file, out)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.mark.slow
def test_kill9_then_resume_equals_uninterrupted(tiny_base, train_file, tmp_path, uninterrupted):
    out = tmp_path / "run"
    killed = train_cli(tiny_base, train_file, out, signame="KILL", step=5)
    assert killed.returncode == -signal.SIGKILL
    assert not (out / "adapter_config.json").exists()
    assert (out / "checkpoint-4" / checkpointing.MARKER).is_file()
    # A checkpoint cut short by a kill during its save (no marker, optimizer state truncated) is skipped.
    shutil.copytree(out / "checkpoint-4", out / "checkpoint-5")
    (out / "checkpoint-5" / checkpointing.MARKER).unlink()
    (out / "checkpoint-5" / "optimizer.pt").write_bytes(b"\x80\x02")
    (out / "checkpoint-5" / "trainer_state.json").write_text('{"global_step": 5, "log_hi')
    resumed = train_cli(tiny_base, train_file, out, "--resume_from_checkpoint", "auto")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "skipping incomplete checkpoint" in resumed.stderr and "checkpoint-5" in resumed.stderr
    assert "resuming from the latest complete checkpoint" in resumed.stderr and "checkpoint-4" in resumed.stderr
    assert_same_adapter(out, uninterrupted)
    history = json.loads((out / "metrics.json").read_text())["log_history"]
    full = json.loads((uninterrupted / "metrics.json").read_text())["log_history"]
    losses = {h["step"]: h["loss"] for h in history if "loss" in h}
    assert losses[6] == pytest.approx({h["step"]: h["loss"] for h in full if "loss" in h}[6], rel=1e-6)


@pytest.mark.slow
def test_sigterm_writes_checkpoint_and_resume_finishes_identically(tiny_base, train_file, tmp_path, uninterrupted):
    out = tmp_path / "run"
    stopped = train_cli(tiny_base, train_file, out, signame="TERM", step=3)  # 3 is not a save step
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    assert "Traceback" not in stopped.stderr
    assert "stopped by SIGTERM at step 3" in stopped.stderr
    assert checkpointing.checkpoint_problem(out / "checkpoint-3") is None
    assert checkpointing.latest_checkpoint(out) == out / "checkpoint-3"
    resumed = train_cli(tiny_base, train_file, out, "--resume_from_checkpoint", "True")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_adapter(out, uninterrupted)


@pytest.mark.slow
def test_resume_from_adapter_only_folder_loads_weights_and_warns(tiny_base, trained_adapter, tmp_path, caplog):
    """HuaTuo's second mode: an adapter folder (no optimizer state) is loaded and training restarts."""
    import finetune

    shutil.copytree(trained_adapter, tmp_path / "adapter", ignore=shutil.ignore_patterns("checkpoint-*"))
    data = tmp_path / "train.json"
    data.write_text(
        "".join(
            json.dumps({"instruction": f"问题{i}", "output": f"回答{i}"}, ensure_ascii=False) + "\n" for i in range(24)
        )
    )
    before = adapter_tensors(tmp_path / "adapter")
    finetune.train(
        **tiny_train_args(
            base_model=tiny_base,
            data_path=str(data),
            output_dir=str(tmp_path / "out"),
            val_set_size=4,
            micro_batch_size=4,
            batch_size=4,
            max_steps=1,
            learning_rate=0.0,
            save_steps=100,
            resume_from_checkpoint=str(tmp_path / "adapter"),
        )
    )
    assert "adapter weights only" in caplog.text and "optimizer and schedule restart" in caplog.text
    after = adapter_tensors(tmp_path / "out")
    assert after.keys() == before.keys()
    for name in before:  # learning rate 0: the weights that come out are exactly the ones loaded
        assert torch.equal(after[name], before[name]), name


def test_resume_resolution_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        checkpointing.resolve_resume(str(tmp_path / "nope"), str(tmp_path))
    (tmp_path / "checkpoint-7").mkdir()
    with pytest.raises(ValueError, match="the save was interrupted"):
        checkpointing.resolve_resume(str(tmp_path / "checkpoint-7"), str(tmp_path))
    assert checkpointing.resolve_resume("auto", str(tmp_path)) == (None, None)  # nothing complete: fresh
    assert checkpointing.resolve_resume(None, str(tmp_path)) == (None, None)
    (tmp_path / "junk").mkdir()
    with pytest.raises(ValueError, match="neither a Trainer checkpoint nor a complete adapter"):
        checkpointing.resolve_resume(str(tmp_path / "junk"), str(tmp_path))


def test_saved_adapter_is_checked_against_the_in_memory_lora(tiny_base, tmp_path):
    """The ZeRO-3 tiny-adapter problem: a saved file with empty or missing tensors is refused."""
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM

    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_base), LoraConfig(r=4, target_modules=["q_proj", "v_proj"])
    )
    model.save_pretrained(tmp_path / "ok")
    assert checkpointing.adapter_problem(tmp_path / "ok", model) is None
    tensors = load_file(str(tmp_path / "ok" / "adapter_model.safetensors"))
    shutil.copytree(tmp_path / "ok", tmp_path / "empty")
    save_file({k: torch.empty(0) for k in tensors}, str(tmp_path / "empty" / "adapter_model.safetensors"))
    assert "holds no weights" in checkpointing.adapter_problem(tmp_path / "empty", model)
    shutil.copytree(tmp_path / "ok", tmp_path / "fewer")
    save_file(dict(list(tensors.items())[:-1]), str(tmp_path / "fewer" / "adapter_model.safetensors"))
    assert "missing" in checkpointing.adapter_problem(tmp_path / "fewer", model)
    other = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_base), LoraConfig(r=8, target_modules=["q_proj", "v_proj"])
    )
    assert "wrong shape" in checkpointing.adapter_problem(tmp_path / "ok", other)


@pytest.mark.slow
def test_kill_during_saving_never_leaves_a_loadable_partial_adapter(tiny_base, tmp_path):
    """SIGKILL a process that saves adapters in a loop at random moments: the folder always either
    loads completely (every tensor from one save) or is rejected by both our check and PEFT."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    rng = random.Random(os.getpid())
    base = AutoModelForCausalLM.from_pretrained(tiny_base)
    outcomes = {"complete": 0, "rejected": 0}
    for attempt in range(4):
        folder = tmp_path / f"adapter-{attempt}"
        proc = subprocess.Popen(
            [sys.executable, str(HELPERS / "save_loop.py"), tiny_base, str(folder)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=REPO_ROOT,
        )
        first = proc.stdout.readline()  # wait until the loop runs (imports take seconds on a busy CPU)
        assert first.startswith("saved"), first
        time.sleep(rng.uniform(0.0, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        problem = checkpointing.adapter_problem(folder)
        try:
            loaded = PeftModel.from_pretrained(base, str(folder))
        except Exception:  # noqa: BLE001 - PEFT raises several types for an unusable folder; rejected is what we want
            loaded = None
        if problem is None:
            assert loaded is not None
            values = {p.flatten()[0].item() for n, p in loaded.named_parameters() if "lora_" in n}
            tensors = [p for n, p in loaded.named_parameters() if "lora_" in n]
            assert len(values) == 1 and all(torch.all(t == t.flatten()[0]) for t in tensors), values
            outcomes["complete"] += 1
            base = loaded.unload()
        else:
            assert loaded is None, f"PEFT loaded a folder our check rejects: {problem}"
            outcomes["rejected"] += 1
    assert sum(outcomes.values()) == 4


class RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_checkpoint_checks_never_unpickle_code(tmp_path, monkeypatch):
    """Resume validation reads .bin adapters through the weights-only loader (the Trainer's own
    torch.load calls for optimizer/scheduler/RNG state pass weights_only=True in transformers 5)."""
    import pickle

    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "checkpoint-3"
    folder.mkdir()
    with open(folder / "adapter_model.bin", "wb") as handle:
        pickle.dump({"x": RunsCode()}, handle)
    (folder / "adapter_config.json").write_text("{}")
    (folder / "trainer_state.json").write_text('{"global_step": 3}')
    problem = checkpointing.checkpoint_problem(folder)
    assert problem and "unreadable" in problem
    with pytest.raises(ValueError, match="cannot resume"):
        checkpointing.resolve_resume(str(folder), str(tmp_path))
    assert not (tmp_path / "pwned").exists()
