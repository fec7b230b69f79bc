"""The loss of reference answers under a model: the one reference-loss function.

The score script (``score.py --data_path``), the training benchmark (``bench/train_speed.py``) and
the tests call it, so a loss reported anywhere is computed the same way: examples tokenized and
masked exactly as in training, token-weighted over every answer token.
"""

import math

from utils.cli import UserError
from utils.data.prompter import IGNORE_INDEX


def reference_loss(model, tokenizer, prompter, records: list[dict], cutoff_len: int = 512, batch_size: int = 8) -> dict:
    """Loss and perplexity of the reference answers (``output``) under ``model``.

    Examples are tokenized and masked exactly as in training (``prompter.tokenize``: the prompt is
    masked, the answer and EOS count). The one reference-loss function: the score script, the
    bench and the tests call it. The loss is the token-weighted mean over every
    answer token of every record (a long answer weighs more than a short one), perplexity its exp.
    """
    import torch
    from tqdm.auto import tqdm

    from utils.model.generation import model_device

    examples, dropped = prompter.tokenize(tokenizer, records, cutoff_len)
    device = model_device(model)
    pad = tokenizer.pad_token_id
    total_loss, total_tokens = 0.0, 0
    model.eval()
    with torch.inference_mode():
        for start in tqdm(range(0, len(examples), batch_size), desc="reference loss", unit="batch"):
            batch = examples[start : start + batch_size]
            width = max(len(e["input_ids"]) for e in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, e in enumerate(batch):  # right padding: positions stay those of training
                n = len(e["input_ids"])
                ids[row, :n] = torch.tensor(e["input_ids"])
                labels[row, :n] = torch.tensor(e["labels"])
                mask[row, :n] = 1
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
            shift_logits = logits[:, :-1].reshape(-1, logits.shape[-1])
            shift_labels = labels[:, 1:].reshape(-1).to(device)
            loss_sum = torch.nn.functional.cross_entropy(
                shift_logits, shift_labels, ignore_index=IGNORE_INDEX, reduction="sum"
            )
            total_loss += float(loss_sum)
            total_tokens += int((shift_labels != IGNORE_INDEX).sum())
    if not total_tokens:
        raise UserError("no answer tokens to score: every record's prompt fills cutoff_len")
    loss = total_loss / total_tokens
    return {
        "loss": loss,
        "perplexity": math.exp(loss),
        "tokens": total_tokens,
        "examples": len(examples),
        "dropped": dropped,
    }
