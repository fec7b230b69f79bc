"""generate.py: prompt folding and settings (fast), streaming, and a real server on loopback driven by
gradio_client (16 concurrent clients) and by headless Chromium (slow; one server for the module)."""

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import REPO_ROOT, ask_concurrently, free_port, loopback_listeners, seed_file

import generate
from utils.data import literature
from utils.data.prompter import Prompter
from utils.model import generation

QUESTION = "高血压患者平时生活中需要注意哪些方面？"
SETTINGS = dict(temperature=0.1, top_p=0.75, top_k=40, num_beams=1, max_new_tokens=24, do_sample=False)


def respond_args(question, history=(), **overrides):
    """Positional arguments of the /respond endpoint, in the order of the page's controls."""
    s = {**SETTINGS, **overrides}
    return (
        question,
        "",
        list(history),
        s["temperature"],
        s["top_p"],
        s["top_k"],
        s["num_beams"],
        s["max_new_tokens"],
        s["do_sample"],
    )


def answer_text(history) -> str:
    return generate.message_text(history[-1])


# ----------------------------------------------------------------------------------------------
# fast: folding, settings, prompt fitting, adapter choice


def test_history_folds_to_the_seed_literature_format():
    history = [
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": [{"type": "text", "text": "a1"}]},  # Gradio 6 hands content as parts
    ]
    assert literature.fold(generate.history_messages(history), "q2") == " <user>: q1 <bot>: a1 <user>: q2"

    # A real multi-turn record of HuaTuo, rebuilt from its turns, comes out identical.
    records = json.loads(seed_file("liver_cancer.json").read_text(encoding="utf-8"))
    record = next(r for r in records if r["instruction"].count("<bot>:") == 2)
    pieces = [p.strip() for p in record["instruction"].replace("<bot>:", "<user>:").split("<user>:")[1:]]
    turns = [{"role": "user" if i % 2 == 0 else "assistant", "content": p} for i, p in enumerate(pieces[:-1])]
    assert literature.fold(generate.history_messages(turns), pieces[-1]) == record["instruction"]


@pytest.mark.parametrize("template, folded", [("literature_template", True), ("med_template", False)])
def test_infer_chat_modes_and_the_demo_send_the_same_prompts(tiny_base, tokenizer, monkeypatch, template, folded):
    """One question, then a follow-up: infer.py --mode single / multi and the demo build identical prompts."""
    import io

    import infer

    sent = []

    def fake_generate(model, tok, prompts, config):
        sent.extend(prompts)
        return ["答一"] * len(prompts)

    monkeypatch.setattr(generation, "generate_batch", fake_generate)
    for mode in ("single", "multi"):
        monkeypatch.setattr("sys.stdin", io.StringIO("肝癌能治好吗？\n需要做什么检查？\n"))
        infer.main(
            base_model=tiny_base, use_lora=False, prompt_template=template, mode=mode, num_beams=1, max_new_tokens=4
        )
    single_first, single_second, multi_first, multi_second = sent

    prompter = Prompter(template)
    demo_first, _ = generate.fit_prompt(tokenizer, prompter, [], "肝癌能治好吗？", "", 4, None)
    history = [{"role": "user", "content": "肝癌能治好吗？"}, {"role": "assistant", "content": "答一"}]
    demo_second, _ = generate.fit_prompt(tokenizer, prompter, history, "需要做什么检查？", "", 4, None)
    assert single_first == multi_first == demo_first
    assert multi_second == demo_second
    assert (" <user>: 肝癌能治好吗？" in demo_first) is folded  # the literature data folds single questions too
    assert " <user>: 肝癌能治好吗？ <bot>: 答一 <user>: 需要做什么检查？" in demo_second
    assert (
        single_second
        == prompter.prompts(tokenizer, [{"instruction": literature.instruction([], "需要做什么检查？", folded)}])[0]
    )


def test_clamp_settings_clamps_and_says_so():
    defaults = dict(SETTINGS, max_new_tokens=256)
    fixed, notes = generate.clamp_settings(dict(SETTINGS), defaults)
    assert fixed == SETTINGS and notes == []
    fixed, notes = generate.clamp_settings(
        dict(SETTINGS, temperature=9.0, top_k=-3, num_beams=2.6, max_new_tokens=None), defaults
    )
    assert fixed["temperature"] == generation.LIMITS["temperature"][1]
    assert fixed["top_k"] == 0 and fixed["num_beams"] == 3 and fixed["max_new_tokens"] == 256
    assert isinstance(fixed["num_beams"], int)
    assert (
        len(notes) == 3 and any("temperature=9" in n for n in notes) and any("max_new_tokens=None" in n for n in notes)
    )


def test_fit_prompt_drops_oldest_turns_then_refuses(tokenizer):
    prompter = Prompter()
    history = []
    for i in range(6):
        history += [
            {"role": "user", "content": f"第{i}个问题" * 10},
            {"role": "assistant", "content": f"第{i}个回答" * 10},
        ]
    full, dropped = generate.fit_prompt(tokenizer, prompter, history, "新问题", "", 16, None)
    assert dropped == 0 and "第0个问题" in full and full.count("<user>:") == 7

    need = len(tokenizer(full)["input_ids"])
    prompt, dropped = generate.fit_prompt(tokenizer, prompter, history, "新问题", "", 16, need + 16 - 1)
    assert dropped >= 2 and dropped % 2 == 0 and "第0个问题" not in prompt and "第5个回答" in prompt
    assert len(tokenizer(prompt)["input_ids"]) + 16 <= need + 15

    with pytest.raises(ValueError, match="too long"):
        generate.fit_prompt(tokenizer, prompter, history, "新问题" * 50, "", 16, 40)


def test_resolve_adapter_and_auth(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./lora-llama-med here
    adapter, line = generate.resolve_adapter(generate.DEFAULT_LORA, True)
    assert adapter == "" and "plain base model" in line
    with pytest.raises(FileNotFoundError, match="mine"):  # a folder the user named must exist
        generate.resolve_adapter(str(tmp_path / "mine"), True)
    (tmp_path / "mine").mkdir()
    with pytest.raises(FileNotFoundError, match="no adapter_config.json"):  # ... and be an adapter
        generate.resolve_adapter(str(tmp_path / "mine"), True)
    (tmp_path / "mine" / "adapter_config.json").write_text("{}")
    assert generate.resolve_adapter(str(tmp_path / "mine"), True)[0] == str(tmp_path / "mine")
    assert generate.resolve_adapter("x", False)[0] == ""
    assert generate.parse_auth("") is None and generate.parse_auth("doc:pw:x") == ("doc", "pw:x")
    with pytest.raises(ValueError, match="USER:PASSWORD"):
        generate.parse_auth("doc")


# ----------------------------------------------------------------------------------------------
# streaming


@pytest.mark.slow
def test_stream_answer_streams_the_batch_answer(tiny_base, trained_adapter):
    from utils.model.loading import load_tokenizer_and_model

    tokenizer, model, _ = load_tokenizer_and_model(tiny_base, str(trained_adapter))
    prompt = Prompter().generate_prompt(QUESTION)
    config = generation.make_generation_config(model, tokenizer, **SETTINGS)
    pieces = list(generation.stream_answer(model, tokenizer, prompt, config))
    expected = generation.generate_batch(model, tokenizer, [prompt], config)[0]
    assert expected and pieces[-1] == expected
    assert len(pieces) >= 5 and all(b.startswith(a) and b != a for a, b in zip(pieces, pieces[1:]))  # grows

    beams = generation.make_generation_config(model, tokenizer, **dict(SETTINGS, num_beams=2, max_new_tokens=12))
    assert list(generation.stream_answer(model, tokenizer, prompt, beams)) == generation.generate_batch(
        model, tokenizer, [prompt], beams
    )

    # A consumer that goes away stops the generation thread.
    long = generation.make_generation_config(model, tokenizer, **dict(SETTINGS, max_new_tokens=2000))
    stream = generation.stream_answer(model, tokenizer, prompt, long)
    next(stream)
    stream.close()
    assert not [t for t in threading.enumerate() if t.name == "stream_answer"]


# ----------------------------------------------------------------------------------------------
# a real server (module scope: started once)


@pytest.fixture(scope="module")
def server(trained_adapter, tmp_path_factory):
    """generate.py as a subprocess on the tiny base + a trained adapter, default bind address."""
    workdir = tmp_path_factory.mktemp("demo")
    port = free_port()
    log_path = workdir / "server.log"
    cmd = [
        sys.executable,
        str(REPO_ROOT / "generate.py"),
        "--lora_weights",
        str(trained_adapter),
        "--server_port",
        str(port),
        "--concurrency_limit",
        "4",
        "--max_new_tokens",
        "24",
    ]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 240
    while True:
        if proc.poll() is not None:
            pytest.fail(f"generate.py exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                if reply.status == 200:
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"generate.py did not serve {url} within 240 s:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.5)
    yield {"url": url, "port": port, "proc": proc, "log": log_path, "adapter": str(trained_adapter)}
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    return Client(server["url"], verbose=False)


@pytest.mark.slow
def test_client_gets_streamed_answers_and_follow_ups(server, client):
    job = client.submit(*respond_args(QUESTION), api_name="/respond")
    updates = list(job)
    history, notice, _ = job.result()
    assert answer_text(history) and notice == ""
    assert [generate.message_text(m) for m in history[:1]] == [QUESTION]
    streamed = [answer_text(h) for h, *_ in updates if len(h) == 2]
    assert len(set(streamed)) >= 3, "the answer should arrive in several growing pieces"

    history2, _, _ = client.predict(*respond_args("那饮食上呢？", history), api_name="/respond")
    assert len(history2) == 4 and answer_text(history2)

    history3, notice3, _ = client.predict(*respond_args("再问一次", num_beams=2), api_name="/respond")
    assert answer_text(history3) and "cannot stream" in notice3


@pytest.mark.slow
def test_bad_requests_get_messages_not_crashes(server, client):
    from gradio_client.exceptions import AppError

    history, notice, _ = client.predict(*respond_args("   "), api_name="/respond")
    assert history == [] and "Please type a question" in notice
    with pytest.raises(AppError, match="maximum"):
        client.predict(*respond_args(QUESTION, temperature=50.0), api_name="/respond")
    with pytest.raises(AppError, match="maximum"):
        client.predict(*respond_args(QUESTION, max_new_tokens=10**6), api_name="/respond")
    history, _, _ = client.predict(*respond_args(QUESTION), api_name="/respond")  # still serving
    assert answer_text(history) and server["proc"].poll() is None


@pytest.mark.slow
def test_sixteen_concurrent_clients_all_get_answers(server):
    from gradio_client import Client

    def ask(i: int) -> str:
        history, _, _ = Client(server["url"], verbose=False).predict(
            *respond_args(f"{QUESTION}（第{i}位）"), api_name="/respond"
        )
        return answer_text(history)

    answers = ask_concurrently(ask, clients=16, limit_s=240)
    assert sorted(answers) == list(range(16)) and all(answers.values())


@pytest.mark.slow
def test_listens_on_loopback_only_and_makes_no_outside_connections(server):
    import psutil

    loopback_listeners([psutil.Process(server["proc"].pid)], server["port"])

    others = [
        a.address
        for addrs in psutil.net_if_addrs().values()
        for a in addrs
        if a.family == socket.AF_INET and not a.address.startswith("127.")
    ]
    for address in others:  # the same port on the machine's other addresses refuses connections
        with pytest.raises(OSError), socket.create_connection((address, server["port"]), timeout=3):
            pass


# ----------------------------------------------------------------------------------------------
# a real browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def chromium() -> str:
    """/usr/bin/chromium, installed by scripts/setup_browser.sh when missing, else skip with its reason."""
    if not CHROMIUM.exists():
        result = subprocess.run(
            ["bash", str(REPO_ROOT / "scripts" / "setup_browser.sh")], capture_output=True, text=True
        )
        if not CHROMIUM.exists():
            pytest.skip(f"Chromium cannot be installed here: {(result.stderr or result.stdout).strip()[-400:]}")
    return str(CHROMIUM)


@pytest.mark.slow
@pytest.mark.browser
def test_browser_asks_a_question_and_sees_the_streamed_answer(server, client, chromium, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    # Greedy decoding is deterministic: the page must end up showing exactly the API's answer.
    expected = answer_text(client.predict(*respond_args(QUESTION), api_name="/respond")[0])

    outside_requests = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=chromium,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 1100},
        )
        try:
            page = browser.new_page()
            page.on(
                "request",
                lambda r: (
                    None
                    if r.url.startswith(server["url"]) or r.url.startswith("data:")
                    else outside_requests.append(r.url)
                ),
            )
            page.goto(server["url"], wait_until="domcontentloaded", timeout=60_000)

            disclaimer = page.locator("#disclaimer")
            expect(disclaimer).to_be_visible(timeout=60_000)
            expect(disclaimer).to_contain_text("不构成医疗建议")
            expect(disclaimer).to_contain_text("not medical advice")
            expect(page.locator("#model-info")).to_contain_text(server["adapter"])

            # Record every text the answer bubble shows, to see it grow rather than appear whole.
            page.evaluate("""() => {
                window.seenAnswers = [];
                new MutationObserver(() => {
                    const bots = document.querySelectorAll('#chat .message.bot');
                    const text = bots.length ? bots[bots.length - 1].innerText.trim() : '';
                    const last = window.seenAnswers[window.seenAnswers.length - 1];
                    if (text && text !== last) window.seenAnswers.push(text);
                }).observe(document.querySelector('#chat'), {subtree: true, childList: true, characterData: true});
            }""")
            page.locator("#instruction textarea").fill(QUESTION)
            page.locator("#submit").click()
            bot = page.locator("#chat .message.bot").last
            expect(bot).to_have_text(expected, timeout=120_000)  # the stream has ended
            expect(page.locator("#chat .message.user").last).to_contain_text(QUESTION)
            expect(page.locator("#instruction textarea")).to_have_value("")
            answer = bot.inner_text().strip()
            seen = page.evaluate("window.seenAnswers")
            page.screenshot(path=str(tmp_path / "generate_page.png"), full_page=True)
            (tmp_path / "answer.txt").write_text(answer, encoding="utf-8")
        finally:
            browser.close()
    seen = [text for text in seen if answer.startswith(text)]  # drops Gradio's "Loading content" placeholder
    assert answer == expected and seen[-1] == answer
    assert len(seen) >= 3 and all(b.startswith(a) for a, b in zip(seen, seen[1:])), f"not streamed: {seen}"
    assert (tmp_path / "generate_page.png").stat().st_size > 10_000
    assert not outside_requests, f"the page fetched from outside the server: {outside_requests[:5]}"
