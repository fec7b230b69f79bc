"""Shared fixtures: the tiny base model, a small training file and one trained adapter per session."""

import json
import logging
import socket
import threading
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED = REPO_ROOT.parent / "shared" / "huatuo"  # HuaTuo's public data, when present beside the checkout


def seed_file(name: str) -> Path:
    """A file of ../shared/huatuo, or skip the test cleanly when the folder is absent."""
    path = SHARED / name
    if not path.is_file():
        pytest.skip(f"{path} not present (HuaTuo's reference data lives beside the checkout, in ../shared)")
    return path


# One tiny training run: a few optimizer steps of finetune.train, small batches, wandb and the sample
# answers off. Tests start from it and change what they test: finetune.train(**tiny_train_args(...)).
TINY_TRAIN = dict(
    base_model="",  # the embedded tiny LLaMA (tests pass the tiny_base fixture's folder, the same model)
    val_set_size=16,
    micro_batch_size=8,
    batch_size=16,
    max_steps=3,
    eval_steps=3,
    save_steps=3,
    logging_steps=1,  # every step's loss in metrics.json's log_history
    wandb_project="",  # wandb off
    sample_questions=0,  # no sample answers at the evaluations
)


def tiny_train_args(**overrides) -> dict:
    """TINY_TRAIN with ``overrides``: keyword arguments for finetune.train."""
    return {**TINY_TRAIN, **overrides}


# the subprocess runs (torchrun, kill and resume): smaller micro-batches so a few steps hold several,
# a faster learning rate so the adapters move measurably, no evaluation before the end
CLI_RUN = dict(micro_batch_size=4, batch_size=8, cutoff_len=64, eval_steps=100, learning_rate=3e-3)


def tiny_train_cli(**overrides) -> list[str]:
    """TINY_TRAIN with ``overrides`` as finetune.py's command line (``--name value`` pairs)."""
    return [arg for name, value in tiny_train_args(**overrides).items() for arg in (f"--{name}", str(value))]


@pytest.fixture(scope="session")
def tiny_base() -> str:
    """The embedded tiny LLaMA, built (or reused when current) exactly as the scripts do."""
    from utils.model.tiny_base import ensure_tiny_base

    logging.getLogger().setLevel(logging.INFO)
    return ensure_tiny_base()


@pytest.fixture(scope="session")
def tokenizer(tiny_base):
    from utils.model.loading import load_tokenizer

    return load_tokenizer(tiny_base)


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def train_file(tmp_path_factory) -> Path:
    """160 records in HuaTuo's format built from the repository's own data."""
    records = [
        json.loads(line) for line in (REPO_ROOT / "data" / "infer.json").read_text().splitlines() if line.strip()
    ]
    data_file = REPO_ROOT / "data" / "llama_data.json"
    if data_file.is_file():
        records += [json.loads(line) for line in data_file.read_text().splitlines()[:148] if line.strip()]
    while len(records) < 160:
        records = records + [dict(r, instruction=r["instruction"] + "？") for r in records]
    return write_jsonl(tmp_path_factory.mktemp("data") / "train.json", records[:160])


@pytest.fixture(scope="session")
def trained_adapter(tiny_base, train_file, tmp_path_factory) -> Path:
    """A LoRA adapter trained for a few steps on the tiny base (shared by inference tests)."""
    import finetune

    out = tmp_path_factory.mktemp("lora")
    finetune.train(
        **tiny_train_args(
            base_model=tiny_base,
            data_path=str(train_file),
            output_dir=str(out),
            micro_batch_size=16,
            max_steps=6,
            learning_rate=3e-3,
        )
    )
    return out


def free_port() -> int:
    """A free TCP port on loopback, for a server a test starts."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ask_concurrently(ask, clients: int = 16, limit_s: float = 240.0) -> dict:
    """``ask(i)`` for every client i from as many threads at once; their answers by i. Fails on any
    client's error and on a client still waiting after ``limit_s`` (a server test must end by itself)."""
    answers, errors = {}, []

    def one(i: int) -> None:
        try:
            answers[i] = ask(i)
        except Exception as err:  # noqa: BLE001 - collected and reported by the assertion below
            errors.append(f"client {i}: {type(err).__name__}: {err}")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(1.0, limit_s - (time.monotonic() - start)))
    assert not errors, errors
    assert not [t for t in threads if t.is_alive()], f"clients still waiting after {limit_s:.0f} s"
    return answers


def loopback_listeners(processes, port: int) -> list:
    """The addresses ``processes`` listen on, after checking: ``port`` among them, every one on
    loopback, and no connection to an address outside this machine's loopback."""
    import psutil

    connections = [c for p in processes for c in p.net_connections(kind="inet")]
    listening = [c.laddr for c in connections if c.status == psutil.CONN_LISTEN]
    assert any(addr.port == port for addr in listening), listening
    assert all(addr.ip in ("127.0.0.1", "::1") for addr in listening), listening
    outside = [c.raddr for c in connections if c.raddr and c.raddr.ip not in ("127.0.0.1", "::1")]
    assert not outside, f"the server talks to {outside}"
    return listening
