"""The generated data is learnable: tuning on the train split lowers loss on the held-out test split."""

import json

import pytest
from conftest import REPO_ROOT, tiny_train_args, write_jsonl

import finetune
from utils.data.prompter import Prompter
from utils.eval import loss
from utils.model import loading

pytestmark = pytest.mark.slow


def test_tuning_on_generated_train_split_lowers_test_split_loss(tiny_base, tmp_path):
    test_records = [
        json.loads(l) for l in (REPO_ROOT / "data" / "llama_data.test.json").read_text(encoding="utf-8").splitlines()
    ][:64]
    train_entities = {
        json.dumps(json.loads(l)["entity"], ensure_ascii=False)
        for l in (REPO_ROOT / "data" / "llama_data.json").read_text(encoding="utf-8").splitlines()
    }
    assert (
        not {json.dumps(r["entity"], ensure_ascii=False) for r in test_records} & train_entities
    )  # held out by entity
    train = write_jsonl(
        tmp_path / "train.json",
        [json.loads(l) for l in (REPO_ROOT / "data" / "llama_data.json").read_text(encoding="utf-8").splitlines()][
            :640
        ],
    )
    finetune.train(
        **tiny_train_args(
            base_model=tiny_base,
            data_path=str(train),
            output_dir=str(tmp_path / "lora"),
            val_set_size=0,
            micro_batch_size=16,
            batch_size=32,
            max_steps=16,
            learning_rate=5e-3,
            save_steps=16,
            logging_steps=4,
        )
    )
    prompter = Prompter()
    base_tokenizer, base, _ = loading.load_tokenizer_and_model(tiny_base, use_lora=False)
    before = loss.reference_loss(base, base_tokenizer, prompter, test_records)["loss"]
    tokenizer, tuned, _ = loading.load_tokenizer_and_model(tiny_base, str(tmp_path / "lora"))
    after = loss.reference_loss(tuned, tokenizer, prompter, test_records)["loss"]
    assert after < before - 0.1, (before, after)
