"""Test helper: save a LoRA adapter into the same folder over and over until killed.

    python tests/save_loop.py BASE_MODEL FOLDER

Save number i sets every LoRA tensor to the constant i, so a reader can tell a complete save
(all tensors equal) from a mix of two saves. Prints "saved i" after each complete save.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from utils.model.adapters import PARTIAL_DIR, publish

    base, folder = sys.argv[1], Path(sys.argv[2])
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base), LoraConfig(r=8, target_modules=["q_proj", "v_proj"])
    )
    lora = [p for n, p in model.named_parameters() if "lora_" in n]
    for i in range(1, 1_000_000):
        with torch.no_grad():
            for param in lora:
                param.fill_(float(i))
        partial = folder / PARTIAL_DIR
        model.save_pretrained(str(partial))
        publish(partial, folder)
        print(f"saved {i}", flush=True)


if __name__ == "__main__":
    main()
