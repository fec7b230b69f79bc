import json

import pytest

from utils.data.prompter import TEMPLATES_DIR, Prompter, available_templates

MED_PROMPT = "下面是一个问题，运用医学知识来正确回答提问.\n### 问题:\n{q}\n### 回答:\n"


def test_med_template_is_the_seeds_exact_string():
    prompter = Prompter("med_template")
    assert prompter.generate_prompt("感冒了怎么办？") == MED_PROMPT.format(q="感冒了怎么办？")
    assert (
        prompter.generate_prompt("感冒了怎么办？", "", "多喝水。") == MED_PROMPT.format(q="感冒了怎么办？") + "多喝水。"
    )
    assert prompter.generate_prompt("感冒了怎么办？", None) == MED_PROMPT.format(q="感冒了怎么办？")
    assert prompter.response_split == "### 回答:"


@pytest.mark.parametrize("name", available_templates())
def test_every_template_renders_exactly(name):
    template = json.loads((TEMPLATES_DIR / f"{name}.json").read_text(encoding="utf-8"))
    prompter = Prompter(name)
    assert prompter.generate_prompt("Q?") == template["prompt_no_input"].replace("{instruction}", "Q?")
    with_input = template["prompt_input"].replace("{instruction}", "Q?").replace("{input}", "CTX")
    assert prompter.generate_prompt("Q?", "CTX") == with_input
    assert prompter.generate_prompt("Q?", "CTX", "A.") == with_input + "A."
    # the answer is recovered from a full decode, and a decode without the marker does not crash
    assert prompter.get_response(prompter.generate_prompt("Q?", label=" 答案。 ")) == "答案。"
    assert prompter.get_response("  没有分隔符的输出 ") == "没有分隔符的输出"


def test_expected_templates_exist():
    assert {"med_template", "alpaca", "literature_template", "bloom_deploy", "ori_template"} <= set(
        available_templates()
    )


def test_prompter_finds_templates_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert Prompter("ori_template").generate_prompt("头痛？") == "问题：头痛？ 回答:"


def test_unknown_or_broken_template_gives_clear_error(tmp_path):
    with pytest.raises(ValueError, match="unknown prompt template 'nope'.*available"):
        Prompter("nope")
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps({"prompt_input": "{instruction}", "prompt_no_input": "{instruction}", "response_split": "x"})
    )
    with pytest.raises(ValueError, match="prompt_input' must contain"):
        Prompter(str(bad))
