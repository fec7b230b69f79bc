"""One way to get a model ready to answer: the adapter's settings, the prompter, the model.

Every script that asks a model questions (infer.py, infer_literature.py, generate.py, score.py,
benchmark.py, bench/infer_speed.py) calls :func:`load_for_inference` with its flag groups. An empty
``--base_model`` / ``--prompt_template`` / ``--system_prompt`` is taken from the adapter's
``run_config.json`` (``adapters.settings``: an explicit flag that disagrees wins, with a warning), the
prompter is built from the template so chosen, and the base (+ adapter) is loaded in eval mode on one
device (``loading.load_tokenizer_and_model``). What was used comes back beside the model, for the
results file.
"""

from dataclasses import dataclass

from utils.args import AdapterArgs, ModelArgs, PromptArgs
from utils.data.prompter import DEFAULT_TEMPLATE, make_prompter
from utils.model import adapters, loading


@dataclass
class Loaded:
    """A model ready to answer, and the settings it was loaded with."""

    prompter: object  # utils.data.prompter's Prompter or ChatPrompter: prompts in, answers split out
    tokenizer: object
    model: object  # eval mode, on one device (a PeftModel when an adapter was applied)
    settings: dict  # base_model (its local folder), lora_weights (as given; "" = none), prompt_template,
    # system_prompt, load_8bit, load_4bit: written beside the answers


def load_for_inference(
    model: ModelArgs,
    adapter: AdapterArgs,
    prompt: PromptArgs = PromptArgs(),
    default_template: str = DEFAULT_TEMPLATE,
) -> Loaded:
    """Prompter, tokenizer and eval-mode model for ``model`` + ``adapter`` (when ``adapter.use_lora``),
    with the base model, template and system prompt the flags leave empty read from the adapter's
    run_config.json; a template neither gives is ``default_template``."""
    lora_weights = adapter.lora_weights if adapter.use_lora else ""
    chosen = adapters.settings(
        lora_weights, model.base_model, prompt.prompt_template, prompt.system_prompt, default_template
    )
    prompter = make_prompter(chosen["prompt_template"], chosen["system_prompt"])
    tokenizer, loaded, base_model = loading.load_tokenizer_and_model(
        base_model=chosen["base_model"],
        lora_weights=chosen["lora_weights"],
        use_lora=bool(lora_weights),
        load_8bit=model.load_8bit,
        load_4bit=model.load_4bit,
        precision=model.precision,
        trust_remote_code=model.trust_remote_code,
    )
    settings = {
        "base_model": base_model,
        "lora_weights": lora_weights,
        "prompt_template": prompter.template_name,
        "system_prompt": prompter.system_prompt,
        "load_8bit": model.load_8bit,
        "load_4bit": model.load_4bit,
    }
    return Loaded(prompter=prompter, tokenizer=tokenizer, model=loaded, settings=settings)
