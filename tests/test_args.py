"""utils/args.py: flags parsed into typed groups, the spellings Fire gives accepted, wrong values and
unknown names refused in one line, presets loaded with the command line winning, --help complete."""

import dataclasses

import pytest

from utils.args import (
    AdapterArgs,
    GenerationArgs,
    ModelArgs,
    PromptArgs,
    coerce,
    flag,
    help_text,
    parse,
)
from utils.cli import UserError

GROUPS = (ModelArgs, AdapterArgs, PromptArgs, GenerationArgs)


@dataclasses.dataclass
class OddArgs:
    """Flags of the types the scripts use beyond the plain ones."""

    micro_batch_size: int | str = flag("auto", "examples per micro-batch, or auto")
    targets: list[str] | str = flag("auto", "layers")


def test_defaults_and_given_values_land_in_their_groups():
    model, adapter, prompt, gen = parse(GROUPS, {"load_8bit": True, "num_beams": 2, "lora_weights": "./x"})
    assert (model.load_8bit, model.base_model, adapter.lora_weights, gen.num_beams) == (True, "", "./x", 2)
    assert (prompt.prompt_template, gen.max_new_tokens, gen.do_sample) == ("", 256, False)


@pytest.mark.parametrize(
    "given, expected",
    [
        ({"load_8bit": "False"}, ("load_8bit", False)),  # --load_8bit False as a string
        ({"load_8bit": "true"}, ("load_8bit", True)),
        ({"num_beams": "3"}, ("num_beams", 3)),
        ({"top_p": 1}, ("top_p", 1.0)),
        ({"base_model": 7}, ("base_model", "7")),  # Fire reads --base_model 7 as an int
        ({"base-model": "x"}, ("base_model", "x")),  # --base-model
        ({"prompt_template_name": "alpaca"}, ("prompt_template", "alpaca")),  # HuaTuo's finetune.py spelling
    ],
)
def test_values_as_fire_gives_them_are_converted(given, expected):
    values = {f: getattr(g, f) for g in parse(GROUPS, given) for f in vars(g)}
    assert values[expected[0]] == expected[1] and type(values[expected[0]]) is type(expected[1])


def test_unions_take_the_first_member_that_fits():
    assert coerce("micro_batch_size", "8", int | str) == 8
    assert coerce("micro_batch_size", "auto", int | str) == "auto"
    assert coerce("targets", ["q_proj", "v_proj"], list[str] | str) == ["q_proj", "v_proj"]  # Fire's [q_proj,v_proj]
    assert coerce("targets", "q_proj,v_proj", list[str] | str) == "q_proj,v_proj"


@pytest.mark.parametrize(
    "given, message",
    [
        ({"num_beams": "four"}, r"--num_beams: expected int, got 'four'"),
        ({"num_beams": 2.5}, r"--num_beams: expected int"),
        ({"load_8bit": "maybe"}, r"--load_8bit: expected bool, got 'maybe'"),
        ({"top_p": True}, r"--top_p: expected float"),
        ({"lora_weight": "x"}, r"unknown flag --lora_weight on the command line; did you mean --lora_weights"),
    ],
)
def test_wrong_values_and_unknown_flags_are_one_line_user_errors(given, message):
    with pytest.raises(UserError, match=message):
        parse(GROUPS, given)


def test_a_preset_loads_and_the_command_line_wins(tmp_path):
    preset = tmp_path / "run.yaml"
    preset.write_text("base_model: ./base\nload_4bit: true\nnum_beams: 1\n", encoding="utf-8")
    model, _, _, gen = parse(GROUPS, {"config": str(preset), "num_beams": 3})
    assert (model.base_model, model.load_4bit, gen.num_beams) == ("./base", True, 3)


@pytest.mark.parametrize(
    "text, message",
    [
        ("lora_weigths: x\n", r"unknown flag --lora_weigths in .*run.yaml"),
        ("- a\n- b\n", r"run.yaml: a preset is a mapping of flag: value, got list"),
        ("a: [unclosed\n", r"run.yaml: not valid YAML"),
        ("num_beams: many\n", r"--num_beams: expected int, got 'many'"),
    ],
)
def test_bad_presets_are_one_line_errors_naming_the_file(tmp_path, text, message):
    preset = tmp_path / "run.yaml"
    preset.write_text(text, encoding="utf-8")
    with pytest.raises(UserError, match=message):
        parse(GROUPS, {"config": str(preset)})


def test_a_missing_preset_names_the_shipped_ones():
    with pytest.raises(UserError, match=r"--config no-such-preset: no such file \(the shipped presets: "):
        parse(GROUPS, {"config": "no-such-preset"})


def test_help_lists_every_flag_with_its_meaning():
    text = help_text((*GROUPS, OddArgs), "The script.")
    assert text.startswith("The script.")
    for group in (*GROUPS, OddArgs):
        for field in dataclasses.fields(group):
            assert f"--{field.name} (" in text
            assert field.metadata["help"] and field.metadata["help"] in text
    assert "--micro_batch_size (int | str, default 'auto')" in text


def test_a_flag_defined_twice_is_refused():
    @dataclasses.dataclass
    class Again:
        """Clash."""

        base_model: str = flag("", "again")

    with pytest.raises(TypeError, match="'base_model' is in both ModelArgs and Again"):
        parse((ModelArgs, Again), {})


def test_a_preset_serves_several_scripts(tmp_path, caplog):
    """A training preset given to an inference script: its shared flags apply, the others are left out
    with a log line; a key that is nobody's flag is still an error."""
    preset = tmp_path / "run.yaml"
    preset.write_text("base_model: ./base\nnum_beams: 2\n", encoding="utf-8")
    caplog.set_level("INFO", logger="utils.args")
    (model,) = parse((ModelArgs,), {"config": str(preset)})
    assert model.base_model == "./base"
    assert "not flags of this script, left out: num_beams" in caplog.text
    preset.write_text("base_model: ./base\nnum_beam: 2\n", encoding="utf-8")
    with pytest.raises(UserError, match="unknown flag --num_beam in .*run.yaml"):
        parse((ModelArgs,), {"config": str(preset)})


def test_text_with_a_comma_survives_fire():
    """Fire reads --system_prompt a,b as a tuple; a text flag gets its text back."""
    (prompt,) = parse((PromptArgs,), {"system_prompt": ("你是医生", "请简洁回答")})
    assert prompt.system_prompt == "你是医生,请简洁回答"
