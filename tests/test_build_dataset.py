"""build_dataset.py: the default offline build (cMeKG + ours: size, speed, grounding, safety, variety,
split, determinism, the committed files) and the openai backend against a real loopback server with
injected failures, an invented drug, SIGKILL and resume."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import build_dataset
from tests.fake_openai_server import INVENTED_DRUG, FakeOpenAI
from utils.knowledge import answer_checks, cmekg, findings, paraphrase, selection, tasks
from utils.knowledge.schema import NAME_FIELD, NOT_TREATMENT_PHRASES, TREATMENT_FIELDS, Entry, load_knowledge
from utils.knowledge.slots import fill
from utils.llm import ReplyError, api_errors, ask_json, json_objects, make_client

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "build_dataset.py")
SPLIT_FILES = ("llama_data.json", "llama_data.valid.json", "llama_data.test.json")
HUATUO_DATA = os.path.join(os.path.dirname(REPO), "shared", "huatuo", "llama_data.json")  # HuaTuo's, when beside us
HUATUO_OUTPUT_CHARS = (16, 54, 107)  # its answers' 5th percentile, median, 95th percentile (measured 2026-11)


def percentiles(lengths: list[int]) -> tuple[int, int, int]:
    lengths = sorted(lengths)
    return tuple(lengths[int(q * len(lengths))] for q in (0.05, 0.5, 0.95))


def test_huatuo_answer_lengths_are_what_the_constants_say():
    if not os.path.isfile(HUATUO_DATA):
        pytest.skip(f"{HUATUO_DATA} not present")
    with open(HUATUO_DATA, encoding="utf-8") as f:
        assert percentiles([len(json.loads(line)["output"]) for line in f if line.strip()]) == HUATUO_OUTPUT_CHARS


def read_split(out_dir) -> dict[str, list[dict]]:
    result = {}
    for name, split in zip(SPLIT_FILES, ("train", "valid", "test")):
        with open(os.path.join(out_dir, name), encoding="utf-8") as f:
            result[split] = [json.loads(line) for line in f]
    return result


def out_of(build) -> str:
    return build[0]


def all_records(out_dir) -> list[dict]:
    return [r for records in read_split(out_dir).values() for r in records]


def entities(record) -> list[str]:
    return record["entity"] if isinstance(record["entity"], list) else [record["entity"]]


def run_script(*args, **kwargs):
    return subprocess.run([sys.executable, SCRIPT, *args], cwd=REPO, capture_output=True, text=True, **kwargs)


def have_cmekg() -> bool:
    try:
        cmekg.find_pickle()
        return True
    except cmekg.CmekgError:
        return False


needs_cmekg = pytest.mark.skipif(not have_cmekg(), reason="pycmekg is not installed")


# ============================================================================ the default offline build


@pytest.fixture(scope="module")
def default_build(tmp_path_factory):
    """`python build_dataset.py` with default flags (cMeKG + ours), into a temporary folder."""
    if not have_cmekg():
        pytest.skip("pycmekg is not installed")
    out = tmp_path_factory.mktemp("offline")
    start = time.perf_counter()
    result = run_script("--output_path", str(out / "llama_data.json"), timeout=300)
    seconds = time.perf_counter() - start
    assert result.returncode == 0, result.stderr
    return out, seconds, result


@pytest.fixture(scope="module")
def entry_of():
    own = load_knowledge()
    if not have_cmekg():
        return {e.name: e for e in own}
    merged, _ = cmekg.load_installed_entries(own)
    return {e.name: e for e in merged}


@pytest.mark.slow
def test_default_build_size_speed_and_variety(default_build):
    out, seconds, result = default_build
    records = all_records(out)
    meta = json.loads((out / "llama_data.meta.json").read_text(encoding="utf-8"))
    assert len(records) >= 8000
    assert len({selection.normalize(r["instruction"]) for r in records}) == len(records)
    assert meta["stats"]["diseases"] >= 1500
    assert meta["stats"]["instruction_patterns"] >= 300 and meta["stats"]["answer_patterns"] >= 200
    assert seconds < 60, f"offline build of {len(records)} records took {seconds:.1f}s"
    print(f"offline build: {len(records)} records in {seconds:.2f}s (subprocess, incl. start-up)")
    assert "per style:" in result.stdout and "masked patterns: " in result.stdout
    assert set(meta["stats"]["per_source"]) == {"ours", "cmekg"}
    # no style family dominates any more (the hand-written set was 56% single facts)
    assert max(meta["stats"]["per_style"].values()) / len(records) < 0.35


@pytest.mark.slow
def test_records_keep_provenance_and_every_fact_is_a_fact_of_its_entry(default_build, entry_of):
    out, _, _ = default_build
    styles = set()
    for r in all_records(out):
        assert set(r) == {"instruction", "input", "output", "style", "entity", "source", "facts", "id"}
        assert r["input"] == "" and r["instruction"].strip() and r["output"].strip()
        assert r["facts"], r
        names = entities(r)
        assert r["source"] == (
            [entry_of[n].source for n in names] if isinstance(r["entity"], list) else entry_of[names[0]].source
        )
        for fact in r["facts"]:
            assert set(fact) <= {"field", "value", "source", "entity"}
            assert fact["value"] in r["output"], (fact, r["output"])
            entry = entry_of[fact.get("entity", names[0])]
            assert fact["source"] == entry.source
            if fact["field"] == NAME_FIELD:
                assert fact["value"] == entry.name
            else:
                assert fact["value"] in entry.get(fact["field"]), (fact, entry.name)
        styles.add(r["style"])
    assert styles == {
        "single_fact",
        "overview",
        "vignette",
        "triage",
        "comparison",
        "drug_usage",
        "drug_side_effects",
        "drug_contraindication",
    }


@pytest.mark.slow
def test_unsafe_patterns_occur_in_no_record(default_build, entry_of):
    out, _, _ = default_build
    records = all_records(out)
    for r in records:
        treatment = [f for f in r["facts"] if f["field"] in TREATMENT_FIELDS]
        assert not [f for f in treatment if any(p in f["value"] for p in NOT_TREATMENT_PHRASES)], r
        assert answer_checks.prevention_as_treatment(r["output"], r["facts"]) is None, r
        assert "检查等检查" not in r["output"]
        assert not [f for f in r["facts"] if f["field"] == "相关症状" and "无症状" in f["value"]], r
        if r["entity"] == "乳腺增生":
            assert "乳腺纤维腺瘤" not in r["output"]
        if r["entity"] == "狂犬病" and r["style"] in ("vignette", "overview"):
            assert "免疫球蛋白" not in r["output"] and "疫苗" not in r["output"], r
        if r["entity"] == "肾上腺素" and r["style"] == "drug_contraindication":
            assert "无绝对禁忌" in r["output"], r
    for name in ("流行性感冒", "狂犬病", "水痘", "宫颈癌"):  # the prevention itself is still taught, as prevention
        assert entry_of[name].get("预防")


@pytest.mark.slow
def test_patients_have_three_typical_findings_two_specific_and_the_differential_is_named(default_build, entry_of):
    """Cause 10: no diagnosis from two non-specific complaints. The findings a question states fit the disease
    and, where they fit other diseases too, the answer names those as the differential."""
    having = {}  # symptom -> diseases listing it
    for e in entry_of.values():
        for s in findings.symptoms_of(e):
            having.setdefault(s, set()).add(e.name)
    specific = findings.specific_findings(having)
    patients = [r for r in all_records(out_of(default_build)) if r["style"] in ("vignette", "triage")]
    assert len(patients) > 1000
    with_differential = 0
    for r in patients:
        entry = entry_of[r["entity"]]
        given = [s for s in findings.symptoms_of(entry)[: findings.TYPICAL_VALUES] if s in r["instruction"]]
        assert len(given) >= findings.MIN_FINDINGS, r
        assert len(set(given) & specific) >= findings.MIN_SPECIFIC, r
        assert not any(findings.gives_away(s, entry) for s in given), r
        fitting = set.intersection(*(having[s] for s in given)) - {r["entity"]}
        named = {
            f["value"] for f in r["facts"] if f["field"] == NAME_FIELD and f.get("entity") not in (None, r["entity"])
        }
        assert named == fitting, (r["instruction"], named, fitting)  # all of them, each in the answer
        with_differential += bool(named)
    assert with_differential, "no answer names a differential"


@pytest.mark.slow
def test_treatment_is_asked_only_where_the_entry_has_a_checked_one_and_then_answered(default_build, entry_of):
    """Cause 9: a vignette that asks how to treat states a treatment of its entry."""
    asks = [
        r
        for r in all_records(out_of(default_build))
        if r["style"] == "vignette" and any(w in r["instruction"] for w in ("治疗", "怎么治", "用什么药"))
    ]
    assert asks
    for r in asks:
        assert any(f["field"] in TREATMENT_FIELDS for f in r["facts"]), r


@pytest.mark.slow
def test_urgency_comes_from_the_red_flag_rules_only(default_build, entry_of):
    """Cause 10: an emergency says so (立即 + 120/急诊) and is never sent to "先挂" a ward; no record of a disease the
    red-flag rules call routine carries an urgency word (urgency is never drawn at random)."""
    from utils.knowledge import clinical

    urgent = 0
    for r in all_records(out_of(default_build)):
        if r["style"].startswith("drug_"):
            assert not answer_checks.urges(r["output"], r["facts"]), r
            continue
        names = entities(r)
        by_name = any(clinical.urgency(entry_of[n]).emergency for n in names)
        if r["style"] in ("vignette", "triage"):
            entry = entry_of[names[0]]
            given = [s for s in findings.symptoms_of(entry) if s in r["instruction"]]
            emergency = clinical.urgency(entry, given).emergency
            if "新生儿" not in r["instruction"]:  # newborn findings count only for a newborn patient
                assert answer_checks.urges(r["output"], r["facts"]) == emergency, r
            assert not answer_checks.urges(r["output"], r["facts"]) or "先挂" not in r["output"], r
            urgent += emergency
        elif r["style"] == "overview":
            assert answer_checks.urges(r["output"], r["facts"]) == by_name, r
        else:
            assert by_name or not answer_checks.urges(r["output"], r["facts"]), r
    assert urgent, "no emergency in the build"


@pytest.mark.slow
def test_comparisons_are_between_related_diseases_and_verdicts_read_the_full_lists(default_build, entry_of):
    """Cause 2: a verdict on the whole lists; pairs share a department and a body site or a specific finding."""
    having = {}
    for e in entry_of.values():
        for s in findings.symptoms_of(e):
            having.setdefault(s, set()).add(e.name)
    diseases = [e for e in entry_of.values() if e.kind == "disease"]
    sites, specific = findings.comparable_sites(diseases), findings.specific_findings(having)
    pairs = [r for r in all_records(out_of(default_build)) if r["style"] == "comparison"]
    assert len(pairs) > 500
    for r in pairs:
        a, b = (entry_of[n] for n in r["entity"])
        assert set(a.get("所属科室")) & set(b.get("所属科室")), r["entity"]
        assert (
            findings.relatedness(findings.grounds(a, sites, specific), findings.grounds(b, sites, specific))
            >= findings.MIN_RELATEDNESS
        ), r["entity"]
        field = next(f["field"] for f in r["facts"] if f["field"] != "所属科室")
        shares = set(a.get(field)) & set(b.get(field))
        if r["output"].startswith(("不一致", "两者不同")) or "但{label}不同" in r["output"]:
            assert not shares, r


@pytest.mark.slow
def test_no_name_of_a_held_out_entity_in_training(default_build, entry_of):
    """Cause 7: one entity, one name. No training record is about a valid/test entity under any of its names,
    and no training question names one."""
    split = read_split(out_of(default_build))
    held_out = {n for s in ("valid", "test") for r in split[s] for e in entities(r) for n in entry_of[e].names}
    assert held_out
    for r in split["train"]:
        for e in entities(r):
            assert not set(entry_of[e].names) & held_out, (e, entry_of[e].names)
        own = " ".join(n for e in entities(r) for n in entry_of[e].names)
        leaked = [n for n in held_out if len(n) >= 3 and n in r["instruction"] and n not in own]
        assert not leaked, (r["instruction"], leaked)


@pytest.mark.slow
def test_split_by_entity_has_no_overlap(default_build):
    out, _, _ = default_build
    by_split = {s: {e for r in records for e in entities(r)} for s, records in read_split(out).items()}
    assert not by_split["train"] & by_split["valid"]
    assert not by_split["train"] & by_split["test"]
    assert not by_split["valid"] & by_split["test"]
    assert all(by_split.values())


@pytest.mark.slow
def test_meta_report_and_data_card(default_build):
    out, _, _ = default_build
    meta = json.loads((out / "llama_data.meta.json").read_text(encoding="utf-8"))
    assert meta["flags"]["max_records"] == 9000 and meta["flags"]["backend"] == "offline" and meta["flags"]["cmekg"]
    assert {os.path.basename(f["path"]) for f in meta["kb_files"]} == {"diseases.jsonl", "drugs.jsonl"}
    source = cmekg.find_pickle()
    assert meta["cmekg"]["version"] == source.version and meta["cmekg"]["sha256"] == source.sha256
    assert sum(meta["outputs"][s]["records"] for s in ("train", "valid", "test")) == meta["stats"]["records"]
    report = json.loads((out / "llama_data.cmekg_import.json").read_text(encoding="utf-8"))
    assert report["diseases_imported"] >= 1500 and set(report["rules"]) == set(cmekg.RULES)
    assert report["per_field"]["相关症状"]["raw"] > report["per_field"]["相关症状"]["kept"] > 0
    card = (out / "llama_data.card.md").read_text(encoding="utf-8")
    for needle in (
        "## Sources",
        "## Records per style",
        "## Records per department",
        "## Known limits",
        source.sha256[:16],
        "llama_data.lengths.png",
    ):
        assert needle in card
    assert (out / "llama_data.lengths.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.slow
def test_committed_data_is_what_the_default_build_gives(default_build):
    """data/llama_data*.json are the default offline build (cMeKG + ours), each under 10 MB."""
    out, _, _ = default_build
    for f in SPLIT_FILES + ("llama_data.meta.json", "llama_data.card.md", "llama_data.cmekg_import.md"):
        committed = os.path.join(REPO, "data", f)
        assert os.path.getsize(committed) < 10 * 1024 * 1024
        with open(committed, "rb") as fh:
            if f == "llama_data.meta.json":  # the python version and timings may differ; data and inputs may not
                got, want = json.loads(fh.read()), json.loads((out / f).read_bytes())
                for key in ("kb_files", "styles_file", "cmekg", "entities", "stats"):
                    assert got[key] == want[key], f"{f}: {key} is stale: rerun python build_dataset.py"
                strip = lambda outputs: {s: {k: v for k, v in o.items() if k != "path"} for s, o in outputs.items()}
                assert strip(got["outputs"]) == strip(want["outputs"])
            else:
                assert fh.read() == (out / f).read_bytes(), f"{f} is stale: rerun python build_dataset.py"


def test_same_seed_same_bytes_and_other_seed_differs(tmp_path):
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        build_dataset.main(
            output_path=str(tmp_path / name / "llama_data.json"), max_records=300, seed=seed, cmekg=False
        )
    for f in SPLIT_FILES:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    assert (tmp_path / "a" / SPLIT_FILES[0]).read_bytes() != (tmp_path / "c" / SPLIT_FILES[0]).read_bytes()


def test_without_pycmekg_one_line_and_our_kb_alone(tmp_path, monkeypatch, caplog):
    def missing():
        raise cmekg.CmekgError("pycmekg is not installed (pip install pycmekg)")

    monkeypatch.setattr(cmekg, "find_pickle", missing)
    build_dataset.main(output_path=str(tmp_path / "llama_data.json"), max_records=500)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ["pycmekg is not installed (pip install pycmekg): building from our knowledge base alone"]
    records = all_records(tmp_path)
    assert len(records) == 500 and {s for r in records for s in entities({"entity": r["source"]})} == {"ours"}
    meta = json.loads((tmp_path / "llama_data.meta.json").read_text(encoding="utf-8"))
    assert meta["cmekg"] is None and not (tmp_path / "llama_data.cmekg_import.json").exists()


def test_dedup_by_normalised_instruction():
    tasks = [
        {"instruction": "高血压的并发症有哪些？"},
        {"instruction": " 高血压的并发症有哪些? "},
        {"instruction": "高血压的并发症，有哪些"},
        {"instruction": "冠心病的并发症有哪些？"},
    ]
    kept, dups = selection.take_unique(tasks, limit=10)
    assert [t["instruction"] for t in kept] == ["高血压的并发症有哪些？", "冠心病的并发症有哪些？"] and dups == 2
    kept, _ = selection.take_unique(tasks, limit=1)
    assert len(kept) == 1
    records, n = selection.dedup_records([{"instruction": "ＡＢＣ。"}, {"instruction": "abc"}])
    assert len(records) == 1 and n == 1


def test_quotas_share_by_weight_and_pass_on_what_a_family_cannot_use():
    q = selection.quotas(
        {
            "single_fact": 10_000,
            "overview": 10_000,
            "drug": 50,
            "vignette": 10_000,
            "triage": 10_000,
            "comparison": 10_000,
        },
        1000,
    )
    assert sum(q.values()) == 1000 and q["drug"] == 50
    assert q["single_fact"] > q["overview"] > q["triage"] > q["drug"]
    assert selection.quotas({"single_fact": 3}, 10) == {"single_fact": 3}


def test_fill_drops_a_doubled_category_word_but_never_touches_a_value():
    slots = {
        "exams": ("血常规检查、X线检查", [{"field": "检查", "value": "X线检查"}]),
        "drugs": ("服用止痛药物等药物", []),
    }
    assert fill("可做{exams}等检查明确诊断", slots)[0] == "可做血常规检查、X线检查等明确诊断"
    assert fill("与{drugs}等有关", slots)[0] == "与服用止痛药物等药物等有关"
    assert fill("用{drugs}治疗", {"drugs": ("阿司匹林", [])})[0] == "用阿司匹林治疗"
    assert fill("用{drugs}等药物", {"drugs": ("阿司匹林", [])})[0] == "用阿司匹林等药物"


@pytest.mark.slow
def test_bad_kb_exits_with_file_line_field(tmp_path):
    bad = tmp_path / "diseases.jsonl"
    bad.write_text('{"中心词": "甲病", "所属科室": 3, "相关症状": ["发热"]}\n', encoding="utf-8")
    result = run_script("--kb_path", str(bad), "--output_path", str(tmp_path / "o.json"), timeout=120)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "diseases.jsonl:1: field '所属科室': expected a list of non-empty strings, got int" in result.stderr


# ============================================================================ openai backend (our KB only: fast)

FAST = dict(timeout=0.5, progress=False, cmekg=False)
CLI_FAST = ("--cmekg", "False", "--progress", "False")


def offline_ids(tmp_path, max_records, seed=42) -> set[str]:
    build_dataset.main(
        output_path=str(tmp_path / "offline" / "llama_data.json"), max_records=max_records, seed=seed, cmekg=False
    )
    return {r["id"] for r in all_records(tmp_path / "offline")}


TASK = {
    "id": "0f",
    "style": "single_fact",
    "entity": "甲病",
    "source": "ours",
    "instruction": "甲病怎么查？",
    "output": "甲病常做血常规。",
    "facts": [{"field": "检查", "value": "血常规", "source": "ours"}],
}
VOCAB = {"血常规", "头孢曲松", "心电图", "呼吸内科"}


def test_parse_answer_rejects_malformed_and_ungrounded():
    good = paraphrase.parse_answer('```json\n{"instruction": "问", "output": "做血常规"}\n```', TASK, 1.0, VOCAB)
    assert good["output"] == "做血常规" and good["facts"] == TASK["facts"]
    for bad, why in (
        ("不是JSON", "not a JSON object"),
        ('{"instruction": "问", "output": "做血', "not a JSON object"),
        ('{"instruction": "问"}', "non-empty strings"),
        ('{"instruction": "", "output": "做血常规"}', "non-empty"),
        ('{"instruction": "问", "output": "多喝水"}', "states 0/1 facts"),
        ("[1, 2]", "not a JSON object"),
        ('{"instruction": "问", "output": "做血常规，再用头孢曲松"}', "names 头孢曲松"),
        ('{"instruction": "问", "output": "做血常规和心电图，去呼吸内科"}', "names 呼吸内科、心电图"),
    ):
        with pytest.raises(paraphrase.MalformedAnswer, match=why):
            paraphrase.parse_answer(bad, TASK, 1.0, VOCAB)


def test_a_paraphrase_keeps_the_emergency_advice_and_adds_no_urgency():
    """The openai backend paraphrases a whole build under the same fact check: urgency comes from the red-flag
    rules, so a rewrite may neither drop an emergency's advice nor add urgency to a routine answer."""
    urgent = dict(
        TASK, style="vignette", urgent=True, output="这可能是急症，请立即拨打120或到最近的医院急诊就诊。做血常规。"
    )
    kept = '{"instruction": "问", "output": "请立即拨打120或去急诊。需要做血常规。"}'
    assert paraphrase.parse_answer(kept, urgent, 1.0, VOCAB)["output"].startswith("请立即拨打120")
    with pytest.raises(paraphrase.MalformedAnswer, match="drops the emergency advice"):
        paraphrase.parse_answer('{"instruction": "问", "output": "需要做血常规。"}', urgent, 1.0, VOCAB)
    with pytest.raises(paraphrase.MalformedAnswer, match="adds urgency"):
        paraphrase.parse_answer('{"instruction": "问", "output": "请立即去急诊做血常规。"}', TASK, 1.0, VOCAB)
    ward = dict(TASK, facts=[{"field": "所属科室", "value": "急诊科", "source": "ours"}])  # a fact, not advice
    assert paraphrase.parse_answer('{"instruction": "问", "output": "中暑由急诊科诊治。"}', ward, 1.0, VOCAB)
    assert "急症" in paraphrase.build_messages(urgent)[1]["content"]
    assert "不要添加" in paraphrase.build_messages(TASK)[1]["content"]


def test_prompts_come_in_several_voices_and_carry_only_the_facts():
    tasks = [dict(TASK, id=f"{i:04x}") for i in range(8)]
    users = [paraphrase.build_messages(t)[1]["content"] for t in tasks]
    assert sum(any(v in u for u in users) for v in paraphrase.VOICES) == len(paraphrase.VOICES)
    material = json.loads(users[0].split("资料(JSON)：", 1)[1])
    assert material["facts"] == [{"field": "检查", "value": "血常规"}] and material["entity"] == "甲病"


@pytest.mark.slow
def test_client_honours_retry_after_and_retries_transport_errors():
    with FakeOpenAI(script=["429", "500", "slow", "ok"], retry_after="0.3", slow_seconds=0.8) as server:
        client = make_client(server.base_url, api_key="k", timeout=0.3, max_retries=5)
        start = time.perf_counter()
        reply = ask_json(client, "m", [{"role": "user", "content": "你好"}], parse=json.loads, max_attempts=1)
        assert reply.value["output"] and reply.attempts == 1
        assert time.perf_counter() - start >= 0.3 + 0.3  # Retry-After wait + the slow call's timeout
        assert server.calls == 4


def parse_output(text: str) -> dict:
    obj = next(json_objects(text), None)
    if not obj or not obj.get("output"):
        raise ReplyError("no output")
    return obj


@pytest.mark.slow
def test_unusable_replies_are_asked_again_with_the_reason():
    with FakeOpenAI(script=["truncated", "nonjson", "empty", "ok"]) as server:
        client = make_client(server.base_url, api_key="k", timeout=2, max_retries=0)
        reply = ask_json(
            client,
            "m",
            [{"role": "user", "content": "x"}],
            parse_output,
            max_attempts=4,
            retry_prompt="不可用：{reason}",
        )
        assert reply.attempts == 4 and server.calls == 4
    with FakeOpenAI(script=["nonjson", "nonjson"]) as server:
        client = make_client(server.base_url, api_key="k", timeout=2, max_retries=0)
        with pytest.raises(ReplyError, match="2 unusable replies; last: no output") as err:
            ask_json(client, "m", [{"role": "user", "content": "x"}], parse_output, max_attempts=2)
        assert err.value.attempts == 2 and server.calls == 2


@pytest.mark.slow
def test_client_fails_fast_on_client_errors_and_when_retries_run_out():
    with FakeOpenAI(script=["400"]) as server:
        with pytest.raises(api_errors(), match="400"):
            ask_json(make_client(server.base_url, max_retries=5), "m", [{"role": "user", "content": "x"}], json.loads)
        assert server.calls == 1
    with FakeOpenAI(failure_rate=1.0, kinds=["503"]) as server:
        with pytest.raises(api_errors()):
            ask_json(make_client(server.base_url, max_retries=2), "m", [{"role": "user", "content": "x"}], json.loads)
        assert server.calls == 3


@pytest.mark.slow
def test_grounding_check_rejects_an_invented_drug_and_asks_again(tmp_path):
    with FakeOpenAI(script=["invented", "invented"]) as server:
        build_dataset.main(
            backend="openai",
            base_url=server.base_url,
            model="fake",
            max_records=2,
            num_workers=1,
            max_retries=3,
            output_path=str(tmp_path / "llama_data.json"),
            **FAST,
        )
        assert server.outcomes["invented"] == 2 and server.outcomes["ok"] == 2
    records = all_records(tmp_path)
    assert len(records) == 2 and not [
        r for r in records if INVENTED_DRUG in r["output"] and r["entity"] != INVENTED_DRUG
    ]


@pytest.mark.slow
def test_flaky_server_every_record_exactly_once(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret")
    n = 60
    with FakeOpenAI(failure_rate=0.2, slow_seconds=0.8, seed=1) as server:
        build_dataset.main(
            backend="openai",
            base_url=server.base_url,
            model="fake",
            max_records=n,
            num_workers=4,
            max_retries=8,
            output_path=str(tmp_path / "llama_data.json"),
            **FAST,
        )
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


@pytest.mark.slow
def test_sigkill_then_rerun_loses_and_duplicates_nothing(tmp_path):
    n = 80
    out = tmp_path / "llama_data.json"
    checkpoint = tmp_path / "llama_data.json.partial.jsonl"
    with FakeOpenAI(failure_rate=0.1, kinds=["500", "429", "nonjson"], delay=0.03, seed=2) as server:
        cmd = [
            sys.executable,
            SCRIPT,
            "--backend",
            "openai",
            "--base_url",
            server.base_url,
            "--model",
            "fake",
            "--max_records",
            str(n),
            "--num_workers",
            "3",
            "--max_retries",
            "8",
            "--timeout",
            "2",
            "--output_path",
            str(out),
            *CLI_FAST,
        ]
        env = {**os.environ, "OPENAI_API_KEY": "sk-test"}
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.time() + 60
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

        result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
        assert result.returncode == 0, result.stderr
        assert "resuming from" in result.stderr
        # the second run got exactly one good answer per record the first had not saved
        assert server.outcomes["ok"] - ok_before == n - saved
    records = all_records(tmp_path)
    ids = [r["id"] for r in records]
    assert len(ids) == n == len(set(ids))
    assert set(ids) == offline_ids(tmp_path, n)
    assert not checkpoint.exists()


@pytest.mark.slow
def test_exhausted_retries_are_reported_not_dropped(tmp_path):
    out = tmp_path / "llama_data.json"
    with FakeOpenAI(failure_rate=1.0, kinds=["500", "nonjson"]) as server:
        result = run_script(
            "--backend",
            "openai",
            "--base_url",
            server.base_url,
            "--model",
            "fake",
            "--max_records",
            "5",
            "--num_workers",
            "2",
            "--max_retries",
            "1",
            "--output_path",
            str(out),
            *CLI_FAST,
            timeout=120,
        )
    assert result.returncode == 2
    assert "5 of 5 records failed" in result.stderr
    assert result.stderr.count("failed: ") == 5
    assert not out.exists()
    # a partial failure: a later run with a healthy server finishes the job from the checkpoint
    with FakeOpenAI() as server:
        result = run_script(
            "--backend",
            "openai",
            "--base_url",
            server.base_url,
            "--model",
            "fake",
            "--max_records",
            "5",
            "--output_path",
            str(out),
            *CLI_FAST,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        assert server.calls == 5
    assert len(all_records(tmp_path)) == 5


def test_a_specific_finding_points_somewhere():
    """Cause 10 as the review found it after the first fix: 剧痛, 神疲乏力, 发热畏寒 and 肢体疼痛 are rare spellings of
    generic complaints (listed by few diseases, specific in nothing); 午后低热 and 视力突然下降 point somewhere."""
    having = {
        "疼痛": set(range(200)),
        "乏力": set(range(150)),
        "发热": set(range(300)),
        "畏寒": set(range(120)),
        "剧痛": {1},
        "神疲乏力": {2},
        "发热畏寒": {3},
        "肢体疼痛": {4},
        "僵硬": {5},
        "午后低热": {6},
        "视力突然下降": {7},
        "果酱样血便": {8},
        "低热": set(range(101)),
    }
    assert findings.specific_findings(having) == {"午后低热", "视力突然下降", "果酱样血便"}


def test_a_symptom_that_names_a_disease_is_no_finding():
    """慢性阻塞性肺气肿 in a cMeKG symptom list is a disease (it holds 肺气肿): a question stating it names that
    disease, which may be held out, in a training record."""

    def disease(name, symptoms):
        return Entry(
            kind="disease", name=name, fields={"所属科室": ["呼吸内科"], "相关症状": symptoms}, path="", line=0
        )

    diseases = [disease("肺气肿", ["气短"]), disease("慢性肺源性心脏病", ["慢性阻塞性肺气肿", "下肢水肿", "气短"])]
    having = {
        "气短": {"肺气肿", "慢性肺源性心脏病"},
        "慢性阻塞性肺气肿": {"慢性肺源性心脏病"},
        "下肢水肿": {"慢性肺源性心脏病"},
    }
    assert findings.names_a_disease(having, diseases) == {"慢性阻塞性肺气肿"}


def test_the_ward_after_the_emergency_department_and_for_an_adult():
    """The review found "急诊处理后由急诊科进一步诊治" and a 26-year-old sent to 儿科."""
    from types import SimpleNamespace

    adult, child = SimpleNamespace(age_years=26), SimpleNamespace(age_years=4)

    def disease(*depts):
        return Entry(
            kind="disease", name="甲病", fields={"所属科室": list(depts), "相关症状": ["咳嗽"]}, path="", line=0
        )

    assert tasks.ward(disease("急诊科"), adult, emergency=True) == ("相关专科", [])
    assert tasks.ward(disease("急诊科", "普外科"), adult, emergency=True)[0] == "普外科"
    assert tasks.ward(disease("儿科", "消化内科"), adult, emergency=False)[0] == "消化内科"
    assert tasks.ward(disease("儿科", "消化内科"), child, emergency=False)[0] == "儿科、消化内科"


def test_comparable_sites_leave_out_common_sites_and_whole_systems():
    def disease(name, *sites):
        return Entry(
            kind="disease",
            name=name,
            fields={"所属科室": ["内科"], "相关症状": ["咳嗽"], "发病部位": list(sites)},
            path="",
            line=0,
        )

    diseases = [disease(f"病{i}", "皮肤") for i in range(findings.SPECIFIC_MAX_SITES + 1)]
    diseases += [disease("鄂木斯克出血热", "神经系统"), disease("马钱子中毒", "神经系统"), disease("甲亢", "甲状腺")]
    assert findings.comparable_sites(diseases) == {"甲状腺"}
    having = {"腰椎间盘突出": {"腰椎峡部崩裂"}, "腰痛": {"腰椎峡部崩裂"}}
    assert findings.names_a_disease(having, [disease("腰椎间盘突出症", "腰椎")]) == {"腰椎间盘突出"}


@pytest.mark.slow
def test_no_patient_question_for_a_disease_that_needs_a_history(default_build):
    """The final review: 酒精性肝硬化 from 肝掌 and 鼻出血, 烧伤后关节僵硬 with no burn, 粗制棉子油中毒 with no
    ingestion, 双胎妊娠 from 痔疮发作. The knowledge base records no history, so such diseases are not asked from
    findings at all."""
    patients = [r for r in all_records(out_of(default_build)) if r["style"] in ("vignette", "triage")]
    assert patients and not [r["entity"] for r in patients if findings.HISTORY_NAMES.search(r["entity"])]
    assert findings.HISTORY_NAMES.search("酒精性肝硬化") and not findings.HISTORY_NAMES.search("肝硬化")


def test_a_patient_shows_no_finding_of_the_other_sex_and_is_asked_only_what_the_entry_answers():
    """The final review: a 40-year-old woman with 阴囊红肿 (淋菌性尿道炎), "要做哪些检查？" with no test in the
    entry."""
    assert findings.OTHER_SEX["女"].search("阴囊红肿") and findings.OTHER_SEX["男"].search("子宫颈红肿")
    assert not findings.OTHER_SEX["女"].search("尿道流脓")
    bare = Entry(kind="disease", name="甲病", fields={"所属科室": ["内科"], "相关症状": ["咳嗽"]}, path="", line=0)
    assert tasks.answerable(["是什么病？需要做什么检查？", "是什么病？"], bare) == ["是什么病？"]
    assert tasks.answerable(["一般用什么药？", "如何治疗？"], bare) == ["如何治疗？"]


@pytest.mark.slow
def test_a_cmekg_disease_is_a_possibility_not_the_most_likely_diagnosis(default_build, entry_of):
    """A cMeKG disease singled out within the knowledge base is offered as a possibility (the review read
    "最可能是布氏杆菌性关节炎" from 肢体疼痛、出汗、头痛 as unjustified); ours keep "most likely"."""
    patients = [
        r
        for r in all_records(out_of(default_build))
        if r["style"] == "vignette"
        and not any(f["field"] == NAME_FIELD and f.get("entity") not in (None, r["entity"]) for f in r["facts"])
    ]
    cmekg_ones = [r for r in patients if entry_of[r["entity"]].source == "cmekg"]
    assert cmekg_ones and not [r for r in cmekg_ones if "最可能" in r["output"] or "最符合" in r["output"]]


def test_a_patient_tells_only_what_a_patient_can_tell():
    """The final review: 右心室肥厚 and 胰管内充盈缺损 as complaints, 头昏乏力 in a 10-month-old."""
    assert findings.NOT_TOLD.search("右心室肥厚") and findings.NOT_TOLD.search("胰管内充盈缺损")
    assert not findings.NOT_TOLD.search("腹痛")
    assert findings.FELT.search("头昏乏力") and not findings.FELT.search("呕血")
