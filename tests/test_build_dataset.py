"""build_dataset.py: offline build (size, speed, grounding, determinism, split, dedup) and the
openai backend against a real loopback server with injected failures, SIGKILL and resume."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import build_dataset
from tests.fake_openai_server import FakeOpenAI
from utils.llm_client import ChatClient, LLMError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "build_dataset.py")
SPLIT_FILES = ("llama_data.json", "llama_data.valid.json", "llama_data.test.json")


def read_split(out_dir) -> dict[str, list[dict]]:
    result = {}
    for name, split in zip(SPLIT_FILES, ("train", "valid", "test")):
        with open(os.path.join(out_dir, name), encoding="utf-8") as f:
            result[split] = [json.loads(line) for line in f]
    return result


def all_records(out_dir) -> list[dict]:
    return [r for records in read_split(out_dir).values() for r in records]


def entities(record) -> list[str]:
    return record["entity"] if isinstance(record["entity"], list) else [record["entity"]]


def run_script(*args, **kwargs):
    return subprocess.run([sys.executable, SCRIPT, *args], cwd=REPO, capture_output=True, text=True, **kwargs)


# ============================================================================ offline


@pytest.fixture(scope="module")
def big_offline(tmp_path_factory):
    out = tmp_path_factory.mktemp("offline")
    start = time.perf_counter()
    result = run_script("--max_records", "3000", "--output_path", str(out / "llama_data.json"), timeout=120)
    seconds = time.perf_counter() - start
    assert result.returncode == 0, result.stderr
    return out, seconds, result


def test_offline_builds_2000_distinct_records_under_30s(big_offline):
    out, seconds, result = big_offline
    records = all_records(out)
    assert len(records) >= 2000
    assert len({build_dataset.normalize(r["instruction"]) for r in records}) == len(records)
    assert seconds < 30, f"offline build of {len(records)} records took {seconds:.1f}s"
    print(f"offline build: {len(records)} records in {seconds:.2f}s (subprocess, incl. start-up)")
    assert "per style:" in result.stdout and "instruction chars" in result.stdout


def test_records_have_seed_format_and_grounded_facts(big_offline):
    out, _, _ = big_offline
    styles = set()
    for r in all_records(out):
        assert set(r) == {"instruction", "input", "output", "style", "entity", "facts", "id"}
        assert r["input"] == "" and r["instruction"].strip() and r["output"].strip()
        assert r["facts"], r
        for fact in r["facts"]:
            assert set(fact) <= {"field", "value", "entity"}
            assert fact["value"] in r["output"], (fact, r["output"])
        styles.add(r["style"])
    assert styles == {"single_fact", "vignette", "triage", "comparison", "drug_usage",
                      "drug_side_effects", "drug_contraindication"}


def test_split_by_entity_has_no_overlap(big_offline):
    out, _, _ = big_offline
    by_split = {s: {e for r in records for e in entities(r)} for s, records in read_split(out).items()}
    assert not by_split["train"] & by_split["valid"]
    assert not by_split["train"] & by_split["test"]
    assert not by_split["valid"] & by_split["test"]
    assert all(by_split.values())


def test_meta_file_records_flags_hashes_and_counts(big_offline):
    out, _, _ = big_offline
    meta = json.loads((out / "llama_data.meta.json").read_text(encoding="utf-8"))
    assert meta["flags"]["max_records"] == 3000 and meta["flags"]["backend"] == "offline"
    assert {os.path.basename(f["path"]) for f in meta["kb_files"]} == {"diseases.jsonl", "drugs.jsonl"}
    assert sum(meta["outputs"][s]["records"] for s in ("train", "valid", "test")) == meta["stats"]["records"]


def test_same_seed_same_bytes_and_other_seed_differs(tmp_path):
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        build_dataset.main(output_path=str(tmp_path / name / "llama_data.json"), max_records=300, seed=seed)
    for f in SPLIT_FILES:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    assert (tmp_path / "a" / SPLIT_FILES[0]).read_bytes() != (tmp_path / "c" / SPLIT_FILES[0]).read_bytes()


def test_committed_data_is_what_the_kb_builds(tmp_path):
    """data/llama_data*.json are the offline build of data/knowledge with default flags, each < 1 MiB."""
    build_dataset.main(output_path=str(tmp_path / "llama_data.json"))
    for f in SPLIT_FILES:
        committed = os.path.join(REPO, "data", f)
        assert os.path.getsize(committed) < 1024 * 1024
        with open(committed, "rb") as fh:
            assert fh.read() == (tmp_path / f).read_bytes(), f"{f} is stale: rerun bash scripts/build_dataset.sh"


def test_dedup_by_normalised_instruction():
    tasks = [{"instruction": "高血压的并发症有哪些？"}, {"instruction": " 高血压的并发症有哪些? "},
             {"instruction": "高血压的并发症，有哪些"}, {"instruction": "冠心病的并发症有哪些？"}]
    kept, dups = build_dataset.take_unique(tasks, limit=10)
    assert [t["instruction"] for t in kept] == ["高血压的并发症有哪些？", "冠心病的并发症有哪些？"] and dups == 2
    kept, _ = build_dataset.take_unique(tasks, limit=1)
    assert len(kept) == 1
    records, n = build_dataset.dedup_records([{"instruction": "ＡＢＣ。"}, {"instruction": "abc"}])
    assert len(records) == 1 and n == 1


def test_bad_kb_exits_with_file_line_field(tmp_path):
    bad = tmp_path / "diseases.jsonl"
    bad.write_text('{"中心词": "甲病", "所属科室": 3, "相关症状": ["发热"]}\n', encoding="utf-8")
    result = run_script("--kb_path", str(bad), "--output_path", str(tmp_path / "o.json"), timeout=60)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "diseases.jsonl:1: field '所属科室': expected a list of non-empty strings, got int" in result.stderr


# ============================================================================ openai backend

FAST = dict(backoff_base=0.01, backoff_max=0.05, timeout=0.5, progress=False)


def offline_ids(tmp_path, max_records, seed=42) -> set[str]:
    build_dataset.main(output_path=str(tmp_path / "offline" / "llama_data.json"), max_records=max_records, seed=seed)
    return {r["id"] for r in all_records(tmp_path / "offline")}


def test_parse_answer_rejects_malformed():
    task = {"id": "x", "style": "single_fact", "entity": "甲病", "facts": [{"field": "检查", "value": "血常规"}],
            "instruction": "q"}
    good = build_dataset.parse_answer('```json\n{"instruction": "问", "output": "做血常规"}\n```', task, 1.0)
    assert good["output"] == "做血常规" and good["facts"] == task["facts"]
    for bad in ("不是JSON", '{"instruction": "问", "output": "做血', '{"instruction": "问"}',
                '{"instruction": "", "output": "做血常规"}', '{"instruction": "问", "output": "多喝水"}', "[1, 2]"):
        with pytest.raises(build_dataset.MalformedAnswer):
            build_dataset.parse_answer(bad, task, 1.0)


def test_client_honours_retry_after_and_retries_transport_errors():
    with FakeOpenAI(script=["429", "500", "truncated", "slow", "ok"], retry_after="0.3", slow_seconds=0.8) as server:
        client = ChatClient(server.base_url, "m", api_key="k", timeout=0.3, max_retries=5, backoff_base=0.01)
        start = time.perf_counter()
        content = client.chat([{"role": "user", "content": "你好"}])
        assert json.loads(content)["output"]
        assert time.perf_counter() - start >= 0.3 + 0.3  # Retry-After wait + the slow call's timeout
        assert server.calls == 5


def test_client_fails_fast_on_client_errors_and_when_retries_run_out():
    with FakeOpenAI(script=["400"]) as server:
        with pytest.raises(LLMError, match="HTTP 400") as err:
            ChatClient(server.base_url, "m", max_retries=5, backoff_base=0.01).chat([{"role": "user", "content": "x"}])
        assert err.value.status == 400 and server.calls == 1
    with FakeOpenAI(failure_rate=1.0, kinds=["503"]) as server:
        with pytest.raises(LLMError, match="giving up after 3 attempt"):
            ChatClient(server.base_url, "m", max_retries=2, backoff_base=0.01).chat([{"role": "user", "content": "x"}])
        assert server.calls == 3


def test_flaky_server_every_record_exactly_once(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret")
    n = 60
    with FakeOpenAI(failure_rate=0.2, slow_seconds=0.8, seed=1) as server:
        build_dataset.main(backend="openai", base_url=server.base_url, model="fake", max_records=n, num_workers=4,
                           max_retries=8, output_path=str(tmp_path / "llama_data.json"), **FAST)
    records = all_records(tmp_path)
    ids = [r["id"] for r in records]
    assert len(ids) == n == len(set(ids))
    assert set(ids) == offline_ids(tmp_path, n)
    assert sum(v for k, v in server.outcomes.items() if k != "ok") >= 5  # failures were injected...
    assert server.calls > n  # ...and retried
    for r in records:
        assert r["facts"] and all(f["value"] in r["output"] for f in r["facts"])
    assert not os.path.exists(tmp_path / "llama_data.json.partial.jsonl")
    captured = capsys.readouterr()
    assert "sk-test-secret" not in captured.out + captured.err
    assert "sk-test-secret" not in (tmp_path / "llama_data.meta.json").read_text(encoding="utf-8")


def test_sigkill_then_rerun_loses_and_duplicates_nothing(tmp_path):
    n = 80
    out = tmp_path / "llama_data.json"
    checkpoint = tmp_path / "llama_data.json.partial.jsonl"
    with FakeOpenAI(failure_rate=0.1, kinds=["500", "429", "nonjson"], delay=0.03, seed=2) as server:
        cmd = [sys.executable, SCRIPT, "--backend", "openai", "--base_url", server.base_url, "--model", "fake",
               "--max_records", str(n), "--num_workers", "3", "--max_retries", "8", "--timeout", "2",
               "--backoff_base", "0.01", "--backoff_max", "0.05", "--output_path", str(out), "--progress", "False"]
        env = {**os.environ, "OPENAI_API_KEY": "sk-test"}
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.time() + 30
        while time.time() < deadline:
            if checkpoint.exists() and checkpoint.read_bytes().count(b"\n") >= 15:
                break
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        saved = checkpoint.read_bytes().count(b"\n")
        assert 15 <= saved < n, saved
        assert not out.exists()
        ok_before = server.outcomes["ok"]

        result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert "resuming from" in result.stderr
        # the second run got exactly one good answer per record the first had not saved
        assert server.outcomes["ok"] - ok_before == n - saved
    records = all_records(tmp_path)
    ids = [r["id"] for r in records]
    assert len(ids) == n == len(set(ids))
    assert set(ids) == offline_ids(tmp_path, n)
    assert not checkpoint.exists()


def test_exhausted_retries_are_reported_not_dropped(tmp_path):
    out = tmp_path / "llama_data.json"
    with FakeOpenAI(failure_rate=1.0, kinds=["500", "nonjson"]) as server:
        result = run_script("--backend", "openai", "--base_url", server.base_url, "--model", "fake",
                            "--max_records", "5", "--num_workers", "2", "--max_retries", "1", "--backoff_base", "0.01",
                            "--output_path", str(out), "--progress", "False", timeout=60)
    assert result.returncode == 2
    assert "5 of 5 records failed" in result.stderr
    assert result.stderr.count("failed: ") == 5
    assert not out.exists()
    # a partial failure: a later run with a healthy server finishes the job from the checkpoint
    with FakeOpenAI() as server:
        result = run_script("--backend", "openai", "--base_url", server.base_url, "--model", "fake",
                            "--max_records", "5", "--output_path", str(out), "--progress", "False", timeout=60)
        assert result.returncode == 0, result.stderr
        assert server.calls == 5
    assert len(all_records(tmp_path)) == 5
