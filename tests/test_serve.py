"""serve_api.py / scripts/serve.sh: the chat template carries the training prompt (fast), the vLLM
command line is built right (fast), and a real `transformers serve` behind the front on loopback
answers through the openai client exactly as infer.py and the web demo do (slow; one server)."""

import json
import os
import re
import socket
import subprocess
import sys
import time

import pytest
from conftest import REPO_ROOT, ask_concurrently, free_port, loopback_listeners, seed_file, tiny_train_args, write_jsonl

import serve_api
from utils.data import literature
from utils.data.chat_template import chat_template_for
from utils.data.prompter import Prompter, available_templates, tokenize_records
from utils.data.records import load_records

QUESTIONS = [
    r["instruction"] for r in load_records(str(REPO_ROOT / "data" / "infer.json"), require_output=False).records[:5]
]
MAX_TOKENS = 32
API_KEY = "test-key"


def turns_of(folded: str) -> list[dict]:
    """HuaTuo's " <user>: q1 <bot>: a1 <user>: q2" as chat messages (written here, independently of
    the code under test)."""
    parts = re.split(r"\s*<(user|bot)>:\s*", folded)[1:]
    return [
        {"role": "user" if role == "user" else "assistant", "content": text}
        for role, text in zip(parts[::2], parts[1::2])
    ]


def template_ids(tokenizer, template: str, messages: list[dict], generation_prompt: bool = True) -> list[int]:
    """What an engine feeds the model for ``messages``: the chat template rendered and tokenized as they do."""
    out = tokenizer.apply_chat_template(
        messages, chat_template=template, add_generation_prompt=generation_prompt, tokenize=True, return_dict=True
    )
    return list(out["input_ids"])


# ----------------------------------------------------------------------------------------------
# fast: the chat template is the training prompt, token for token


@pytest.mark.parametrize("name", [t for t in available_templates()])
def test_chat_template_asks_and_trains_as_the_prompter_does(tokenizer, name):
    template = chat_template_for(tokenizer, name)
    prompter = Prompter(name)
    for question in QUESTIONS:
        instruction = (
            f" <user>: {question}" if name == "literature_template" else question
        )  # literature records always fold
        asked = template_ids(tokenizer, template, [{"role": "user", "content": question}])
        assert asked == tokenizer(prompter.generate_prompt(instruction))["input_ids"]  # what infer.py feeds the model
        record = {"instruction": instruction, "input": "", "output": "多喝水，低盐饮食。"}
        conversation = [{"role": "user", "content": question}, {"role": "assistant", "content": record["output"]}]
        trained = template_ids(tokenizer, template, conversation, generation_prompt=False)
        assert [trained] == [e["input_ids"] for e in tokenize_records(tokenizer, prompter, [record], cutoff_len=512)[0]]


def literature_records() -> list[dict]:
    """Multi-turn literature records: HuaTuo's liver-cancer dialogues when present, and one of ours."""
    ours = {
        "instruction": " <user>: 肝癌能治好吗？ <bot>: 早期肝癌可以手术切除。 <user>: 免疫疗法适合我吗？",
        "input": "",
        "output": "需要医生评估。",
    }
    try:
        seed = json.loads(seed_file("liver_cancer.json").read_text(encoding="utf-8"))
    except pytest.skip.Exception:
        seed = []
    return [ours] + [r for r in seed if "<bot>:" in r["instruction"]][:60]


def test_literature_template_folds_history_exactly_as_training_did(tokenizer):
    template = chat_template_for(tokenizer, "literature_template")
    prompter = Prompter("literature_template")
    records = literature_records()
    for record in records:
        messages = turns_of(record["instruction"])
        assert len(messages) >= 3 and messages[-1]["role"] == "user"
        rendered = tokenizer.apply_chat_template(
            messages, chat_template=template, add_generation_prompt=True, tokenize=False
        )
        assert rendered.endswith(prompter.generate_prompt(record["instruction"]))  # the same text, after bos
        assert (
            template_ids(tokenizer, template, messages)
            == tokenizer(prompter.generate_prompt(record["instruction"]))["input_ids"]
        )
        trained = template_ids(
            tokenizer, template, messages + [{"role": "assistant", "content": record["output"]}], False
        )
        assert [trained] == [
            e["input_ids"] for e in tokenize_records(tokenizer, prompter, [record], cutoff_len=2048)[0]
        ]


def test_med_template_folds_a_conversation_as_the_web_demo_does(tokenizer):
    import generate

    template = chat_template_for(tokenizer, "med_template")
    history = [{"role": "user", "content": QUESTIONS[0]}, {"role": "assistant", "content": " 注意休息。 "}]
    prompter = Prompter()
    prompt = prompter.generate_prompt(
        literature.instruction(generate.history_messages(history), QUESTIONS[1], prompter.folds_dialogue)
    )
    assert (
        template_ids(tokenizer, template, history + [{"role": "user", "content": QUESTIONS[1]}])
        == tokenizer(prompt)["input_ids"]
    )


def test_text_templates_refuse_what_they_have_no_place_for(tokenizer):
    from jinja2.exceptions import TemplateError

    template = chat_template_for(tokenizer, "med_template")
    bad = {
        "system message": [{"role": "system", "content": "你是医生"}, {"role": "user", "content": "q"}],
        "ends with the answer": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
        "two user turns": [{"role": "user", "content": "q"}, {"role": "user", "content": "q2"}],
    }
    for messages in bad.values():  # each refused, for the reason its key says
        with pytest.raises(TemplateError):
            template_ids(tokenizer, template, messages)
    with pytest.raises(ValueError, match="system prompt"):
        chat_template_for(tokenizer, "med_template", system_prompt="你是医生")


def test_chat_adapters_keep_the_base_template_and_their_system_prompt(tmp_path):
    from tiny_archs import build

    from utils.data.prompter import make_prompter
    from utils.model.loading import load_tokenizer

    for name in ("qwen2", "llama3", "gemma"):  # gemma has no system role: the text opens the first turn, as in training
        tokenizer = load_tokenizer(build(name, tmp_path / name))
        assert chat_template_for(tokenizer, "chat") == tokenizer.chat_template
        template = chat_template_for(tokenizer, "chat", system_prompt="你是一名医生。")
        prompter = make_prompter("chat", "你是一名医生。")
        for question in QUESTIONS[:2]:
            expected = tokenizer(prompter.prompts(tokenizer, [{"instruction": question}])[0])["input_ids"]
            assert template_ids(tokenizer, template, [{"role": "user", "content": question}]) == expected
        own = template_ids(
            tokenizer, template, [{"role": "system", "content": "别的"}, {"role": "user", "content": "q"}]
        )
        assert "别的" in tokenizer.decode(own) and "你是一名医生" not in tokenizer.decode(
            own
        )  # a client's system message wins


def test_a_tokenizer_that_adds_no_bos_gets_none_in_the_template(tmp_path):
    from tiny_archs import build

    from utils.model.loading import load_tokenizer

    tokenizer = load_tokenizer(build("bloom", tmp_path / "bloom"))  # has <s>, never adds it
    template = chat_template_for(tokenizer, "bloom_deploy")
    assert (
        template_ids(tokenizer, template, [{"role": "user", "content": QUESTIONS[0]}])
        == tokenizer(Prompter("bloom_deploy").generate_prompt(QUESTIONS[0]))["input_ids"]
    )


@pytest.fixture(scope="module")
def adapter(tiny_base, train_file, tmp_path_factory):
    """An adapter trained for 3 steps at a low rate: its greedy answers still differ from question to
    question (the shared ``trained_adapter``, 6 steps at 3e-3, answers every question with the same
    repeated token, against which an equality check could not fail)."""
    import finetune

    out = tmp_path_factory.mktemp("serve") / "lora-med"
    finetune.train(
        **tiny_train_args(
            data_path=str(train_file), output_dir=str(out), val_set_size=0, micro_batch_size=16, learning_rate=1e-3
        )
    )
    return out


# ----------------------------------------------------------------------------------------------
# fast: command lines (vLLM is not run here: its command is checked as built)


@pytest.mark.slow
def test_vllm_command_serves_the_adapter_with_its_template_and_stop_ids(tiny_base, adapter, tmp_path, capsys):
    import shutil

    trained, adapter = adapter, tmp_path / "lora-med"  # a copy: serving/ is written beside the adapter
    shutil.copytree(trained, adapter)
    serve_api.main(engine="vllm", lora_weights=str(adapter), port=8123, api_key="k", dry_run=True)
    out = capsys.readouterr().out
    command = next(line for line in out.splitlines() if line.startswith("command:")).split()[1:]
    assert command[:3] == ["vllm", "serve", tiny_base]
    serving = adapter.resolve() / "serving"
    options = {}
    for i, arg in enumerate(command):
        if arg.startswith("--") and i + 1 < len(command) and not command[i + 1].startswith("--"):
            options[arg] = command[i + 1]
    assert options["--lora-modules"] == f"lora-med={adapter.resolve()}" and "--enable-lora" in command
    assert options["--chat-template"] == str(serving / "chat_template.jinja")
    assert options["--generation-config"] == str(serving)
    assert options["--max-lora-rank"] == str(json.loads((adapter / "adapter_config.json").read_text())["r"])
    assert (options["--host"], options["--port"], options["--api-key"]) == ("127.0.0.1", "8123", "k")
    assert "base URL: http://127.0.0.1:8123/v1" in out and "model:    lora-med" in out

    from transformers import AutoTokenizer, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    template = (serving / "chat_template.jinja").read_text(encoding="utf-8")
    expected = tokenizer(Prompter().generate_prompt(QUESTIONS[0]))["input_ids"]
    assert template_ids(tokenizer, template, [{"role": "user", "content": QUESTIONS[0]}]) == expected
    assert tokenizer.eos_token_id in GenerationConfig.from_pretrained(serving).eos_token_id


@pytest.mark.slow
def test_serve_sh_builds_both_engines_commands_from_the_environment(adapter, tmp_path):
    env = dict(os.environ, LORA_WEIGHTS=str(adapter), DRY_RUN="True", PORT="8124", HOST="127.0.0.1")
    vllm = subprocess.run(
        ["bash", "scripts/serve.sh"],
        cwd=REPO_ROOT,
        env=dict(env, ENGINE="vllm"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert vllm.returncode == 0, vllm.stderr[-2000:]
    assert re.search(r"^command:  vllm serve .* --lora-modules \S+=\S+ .*--port 8124", vllm.stdout, re.M)
    merged = tmp_path / "merged"
    plain = subprocess.run(
        ["bash", "scripts/serve.sh", "--merged_dir", str(merged)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert plain.returncode == 0, plain.stderr[-2000:]
    assert "base URL: http://127.0.0.1:8124/v1" in plain.stdout and "model:    merged" in plain.stdout
    assert re.search(r"transformers\S* serve merged --host 127\.0\.0\.1 --port \d+", plain.stdout)
    assert not merged.exists()  # a dry run exports nothing

    # no settings at all: the quickstart's adapter (or a line saying how to make it)
    env.pop("LORA_WEIGHTS")
    default = subprocess.run(
        ["bash", "scripts/serve.sh"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    quickstart = REPO_ROOT / "lora-llama-med-quickstart"
    if quickstart.is_dir():
        assert default.returncode == 0 and "model:    lora-llama-med-quickstart-merged" in default.stdout
    else:
        assert (
            default.returncode == 2 and "scripts/quickstart.sh" in default.stderr and "Traceback" not in default.stderr
        )


@pytest.mark.slow
def test_the_merged_checkpoint_is_exported_again_only_when_the_adapter_changed(adapter, tmp_path, caplog):
    import shutil

    from safetensors.torch import load_file, save_file

    from utils.model import export
    from utils.serve import engines

    lora = tmp_path / "lora"
    shutil.copytree(adapter, lora)
    merged = tmp_path / "merged"
    settings = export.resolve_settings("", str(lora), "", "")
    engines.ensure_merged(settings, merged, trust_remote_code=False)
    first = (merged / "model.safetensors").stat().st_mtime_ns
    engines.ensure_merged(settings, merged, trust_remote_code=False)
    assert (merged / "model.safetensors").stat().st_mtime_ns == first and "up to date" in caplog.text

    weights = load_file(lora / "adapter_model.safetensors")  # the adapter is trained further
    save_file({k: v * 2 if "lora_B" in k else v for k, v in weights.items()}, lora / "adapter_model.safetensors")
    engines.ensure_merged(settings, merged, trust_remote_code=False)
    assert (merged / "model.safetensors").stat().st_mtime_ns != first and "exporting again" in caplog.text

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="did not write"):
        engines.ensure_merged(settings, foreign, trust_remote_code=False)


# ----------------------------------------------------------------------------------------------
# slow: a real server on loopback (started once for the module)


@pytest.fixture(scope="module")
def server(adapter, tmp_path_factory):
    """serve_api.py (transformers engine, with an API key) as a subprocess; stopped, engine included, at the end."""
    import psutil

    workdir = tmp_path_factory.mktemp("server")
    port, log_path = free_port(), workdir / "server.log"
    cmd = [
        sys.executable,
        str(REPO_ROOT / "serve_api.py"),
        "--lora_weights",
        str(adapter),
        "--port",
        str(port),
        "--api_key",
        API_KEY,
        "--merged_dir",
        str(workdir / "huatuo-med"),
    ]
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            cmd, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1")
        )
    deadline = time.monotonic() + 300
    while "base URL" not in log_path.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(
                f"serve_api.py did not start within 300 s (status {proc.poll()}):\n{log_path.read_text()[-3000:]}"
            )
        time.sleep(0.5)
    engine = psutil.Process(proc.pid).children(recursive=True)
    yield {
        "url": f"http://127.0.0.1:{port}/v1",
        "port": port,
        "proc": proc,
        "log": log_path,
        "model": "huatuo-med",
        "adapter": adapter,
        "engine": engine,
    }
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
    gone, alive = psutil.wait_procs(engine, timeout=30)
    for child in alive:
        child.kill()
    assert not alive, f"the engine outlived the server: {alive}"


def client(server, **kwargs):
    from openai import OpenAI

    return OpenAI(
        base_url=server["url"],
        api_key=kwargs.pop("api_key", API_KEY),
        max_retries=0,
        timeout=kwargs.pop("timeout", 120),
    )


def ask(server, messages, max_tokens: int = MAX_TOKENS) -> str:
    reply = client(server).chat.completions.create(
        model=server["model"], messages=messages, temperature=0, max_tokens=max_tokens
    )
    return reply.choices[0].message.content


@pytest.fixture(scope="module")
def demo(adapter):
    """generate.py's page (not launched) on the same adapter: its /respond function is called directly."""
    import generate
    from utils.data.prompter import make_prompter
    from utils.model.loading import load_tokenizer_and_model

    tokenizer, model, _ = load_tokenizer_and_model("", str(adapter))
    settings = dict(temperature=0.1, top_p=0.75, top_k=40, num_beams=1, max_new_tokens=MAX_TOKENS, do_sample=False)
    page = generate.build_demo(tokenizer, model, make_prompter("med_template"), settings, "", [])
    respond = next(f for f in page.fns.values() if f.api_name == "respond").fn

    def answer(question: str, history: list) -> list:
        *_, (new_history, notice, _) = respond(question, "", history, *settings.values())
        assert not notice, notice
        return new_history

    return answer


@pytest.mark.slow
def test_one_prompt_three_doors_api_infer_and_demo_answer_alike(server, demo, tmp_path):
    import infer

    questions = write_jsonl(tmp_path / "questions.json", [{"instruction": q} for q in QUESTIONS])
    out = tmp_path / "answers.jsonl"
    infer.main(
        lora_weights=str(server["adapter"]),
        instruct_dir=str(questions),
        output_file=str(out),
        num_beams=1,
        max_new_tokens=MAX_TOKENS,
        quiet=True,
    )
    expected = [json.loads(line)["model_output"] for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(set(expected)) >= 3, "the adapter answers every question alike: an equality check could not fail"

    api = client(server)
    for question, answer in zip(QUESTIONS, expected):
        messages = [{"role": "user", "content": question}]
        chat = ask(server, messages)
        assert chat.strip() == answer  # infer.py strips the surrounding whitespace of its answers
        stream = api.chat.completions.create(
            model=server["model"], messages=messages, temperature=0, max_tokens=MAX_TOKENS, stream=True
        )
        assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices) == chat
        assert generate_text(demo(question, [])) == answer
        # the prompt matters: the bare question without the template is answered differently
        bare = (
            api.completions.create(model=server["model"], prompt=question, temperature=0, max_tokens=MAX_TOKENS)
            .choices[0]
            .text
        )
        assert bare.strip() != answer

    # a follow-up question: the API folds the conversation as the demo does
    history = demo(QUESTIONS[0], [])
    follow_up = demo(QUESTIONS[1], history)
    conversation = [{"role": m["role"], "content": generate_text([m])} for m in history] + [
        {"role": "user", "content": QUESTIONS[1]}
    ]
    assert ask(server, conversation).strip() == generate_text(follow_up)


def generate_text(history: list) -> str:
    import generate

    return generate.message_text(history[-1])


@pytest.mark.slow
def test_sixteen_concurrent_clients_all_get_answers(server):
    answers = ask_concurrently(
        lambda i: ask(server, [{"role": "user", "content": f"{QUESTIONS[i % 5]}（第{i}位）"}], max_tokens=16),
        clients=16,
        limit_s=240,
    )
    assert sorted(answers) == list(range(16)) and all(answers.values())


@pytest.mark.slow
def test_bad_requests_get_4xx_quickly_and_the_server_keeps_serving(server):
    import httpx
    import openai

    question = [{"role": "user", "content": QUESTIONS[0]}]
    api = client(server, timeout=30)  # a hang fails here
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        api.chat.completions.create(model="gpt-4o", messages=question, max_tokens=8)
    with pytest.raises(openai.BadRequestError, match="at most"):
        api.chat.completions.create(model=server["model"], messages=question, max_tokens=10**9)
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        api.chat.completions.create(model=server["model"], messages=question, max_tokens=-3)
    with pytest.raises(openai.BadRequestError, match="system message"):
        api.chat.completions.create(
            model=server["model"], messages=[{"role": "system", "content": "你是医生"}, *question], max_tokens=8
        )
    with pytest.raises(openai.AuthenticationError):
        client(server, api_key="wrong").chat.completions.create(model=server["model"], messages=question, max_tokens=8)

    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    malformed = {
        "not JSON": b"{this is not json",
        "a list": b"[1, 2]",
        "no messages": json.dumps({"model": server["model"]}).encode(),
        "a tool message": json.dumps({"messages": [{"role": "tool", "content": "x"}]}).encode(),
        "numeric content": json.dumps({"messages": [{"role": "user", "content": 5}]}).encode(),
        "text max_tokens": json.dumps({"messages": question, "max_tokens": "many"}).encode(),
    }
    for why, body in malformed.items():
        reply = httpx.post(f"{server['url']}/chat/completions", content=body, headers=headers, timeout=30)
        assert 400 <= reply.status_code < 500, (why, reply.status_code, reply.text)
        assert reply.json()["error"]["message"], why
    assert (
        httpx.post(
            f"{server['url'].removesuffix('/v1')}/load_model", json={"model": "gpt2"}, headers=headers, timeout=30
        ).status_code
        == 404
    )

    assert ask(server, question) and server["proc"].poll() is None  # still serving
    assert [m.id for m in api.models.list()] == [server["model"]]


@pytest.mark.slow
def test_listens_on_loopback_only_and_makes_no_outside_connections(server):
    import psutil

    listening = loopback_listeners([psutil.Process(server["proc"].pid), *server["engine"]], server["port"])
    assert len(listening) >= 2  # the front and the engine

    others = [
        a.address
        for addrs in psutil.net_if_addrs().values()
        for a in addrs
        if a.family == socket.AF_INET and not a.address.startswith("127.")
    ]
    for address in others:
        for port in {addr.port for addr in listening}:
            with pytest.raises(OSError), socket.create_connection((address, port), timeout=3):
                pass
