"""Prompt templates: one Prompter renders prompts for training and inference and splits answers.

Templates are data files (``templates/NAME.json``, schema in ``templates/README.md``), found
relative to this file so scripts work from any working directory.
"""

import json
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"
DEFAULT_TEMPLATE = "med_template"
REQUIRED_KEYS = ("prompt_input", "prompt_no_input", "response_split")


def template_path(name: str) -> Path:
    """``templates/NAME.json`` for a bare name; a path to a JSON file is taken as it is."""
    candidate = Path(name)
    if candidate.suffix == ".json" and candidate.is_file():
        return candidate
    path = TEMPLATES_DIR / f"{name}.json"
    if not path.is_file():
        available = ", ".join(sorted(p.stem for p in TEMPLATES_DIR.glob("*.json")))
        raise ValueError(f"unknown prompt template {name!r}: no file {path} (available: {available})")
    return path


def available_templates() -> list[str]:
    return sorted(p.stem for p in TEMPLATES_DIR.glob("*.json"))


class Prompter:
    def __init__(self, template_name: str = DEFAULT_TEMPLATE):
        self.template_name = template_name or DEFAULT_TEMPLATE
        path = template_path(self.template_name)
        try:
            self.template = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{err.lineno}: invalid JSON in prompt template: {err.msg}") from None
        missing = [key for key in REQUIRED_KEYS if not isinstance(self.template.get(key), str)]
        if missing:
            raise ValueError(f"{path}: prompt template lacks string field(s) {', '.join(missing)}")
        if "{instruction}" not in self.template["prompt_no_input"]:
            raise ValueError(f"{path}: field 'prompt_no_input' must contain {{instruction}}")
        if "{instruction}" not in self.template["prompt_input"] or "{input}" not in self.template["prompt_input"]:
            raise ValueError(f"{path}: field 'prompt_input' must contain {{instruction}} and {{input}}")
        self.response_split = self.template["response_split"]
        logger.info("prompt template %s: %s", self.template_name, self.template.get("description", ""))

    def generate_prompt(self, instruction: str, input: str | None = None, label: str | None = None) -> str:
        """The prompt for ``instruction`` (and ``input`` when non-empty), followed by ``label`` if given."""
        if input:
            prompt = self.template["prompt_input"].format(instruction=instruction, input=input)
        else:
            prompt = self.template["prompt_no_input"].format(instruction=instruction)
        if label:
            prompt = f"{prompt}{label}"
        return prompt

    def get_response(self, output: str) -> str:
        """The answer part of a decoded generation: the text after the last response marker.

        A generation that does not contain the marker (a model that rewrote the prompt, or a decode
        of only the new tokens) is returned whole rather than raising, as the seed's did.
        """
        head, marker, tail = output.rpartition(self.response_split)
        return (tail if marker else output).strip()
