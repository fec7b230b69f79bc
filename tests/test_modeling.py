"""Precision rules: what `precision=auto` resolves to on each kind of machine."""

import pytest
import torch

from utils.model import loading


@pytest.mark.parametrize(
    "cuda, cuda_bf16, cpu_bf16, training, expected",
    [
        (True, True, False, True, "bf16"),
        (True, False, True, True, "fp16"),
        (False, False, True, True, "bf16"),  # CPU with AMX: train in bf16 (faster there)
        (False, False, True, False, "fp32"),  # ... but infer in fp32 (batched == one-at-a-time)
        (False, False, False, True, "fp32"),  # CPU without native bf16: never fp16 on CPU
    ],
)
def test_auto_precision_follows_the_hardware(monkeypatch, cuda, cuda_bf16, cpu_bf16, training, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(
        torch.cuda, "get_device_capability", lambda *a: (8, 0) if cuda_bf16 else (7, 5)
    )  # Ampere+ or Turing
    monkeypatch.setattr(loading, "cpu_bf16_is_faster", lambda: cpu_bf16)
    assert loading.resolve_precision("auto", training=training) == expected
    assert loading.resolve_precision("fp32", training=training) == "fp32"  # an explicit choice is kept


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision must be one of"):
        loading.resolve_precision("fp8")
