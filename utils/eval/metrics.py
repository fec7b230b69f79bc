"""Automatic scores for generated answers against reference answers: text only, no model (the loss of
the reference answers under a model is ``utils/eval/loss.py``).

* BLEU-4 is sacrebleu's corpus BLEU (0-100) on text we tokenize ourselves and hand over with
  ``tokenize="none"``; ROUGE-1/2/L are rouge-score's F1 (0-1), averaged over records, with our
  tokenizer plugged in (its default one drops every non-ASCII character, i.e. all Chinese).
* Two tokenizations: ``char`` (every non-space character is a token; Latin words are split into
  letters too) and ``word`` (jieba segmentation, whitespace tokens dropped). Punctuation counts.
* Fact coverage: when a record carries the knowledge-base facts it was built from (``facts``: list
  of ``{"field", "value"}``), the fraction of fact values found verbatim in the answer.
"""

import logging
import statistics

from utils.cli import UserError

logger = logging.getLogger(__name__)

TOKENIZATIONS = ("char", "word")
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def char_tokens(text: str) -> list[str]:
    return [c for c in text if not c.isspace()]


def word_tokens(text: str) -> list[str]:
    import jieba

    jieba.setLogLevel(logging.WARNING)  # its dictionary-loading chatter is not ours to print
    return [w for w in jieba.lcut(text) if w.strip()]


TOKENIZERS = {"char": char_tokens, "word": word_tokens}


class _RougeTokenizer:
    """The object rouge-score's RougeScorer(tokenizer=...) expects: ``tokenize(text) -> list``."""

    def __init__(self, fn):
        self.fn = fn

    def tokenize(self, text: str) -> list[str]:
        return self.fn(text)


def bleu4(references: list[str], predictions: list[str], tokenization: str = "char") -> float:
    """Corpus BLEU-4 (0-100) of ``predictions`` against one reference each."""
    import sacrebleu

    tok = TOKENIZERS[tokenization]
    hyps = [" ".join(tok(p)) for p in predictions]
    refs = [" ".join(tok(r)) for r in references]
    return float(sacrebleu.corpus_bleu(hyps, [refs], tokenize="none").score)


def rouge(references: list[str], predictions: list[str], tokenization: str = "char") -> dict[str, float]:
    """Mean ROUGE-1/2/L F1 (0-1) over the records."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), tokenizer=_RougeTokenizer(TOKENIZERS[tokenization]))
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for ref, pred in zip(references, predictions):
        scores = scorer.score(ref, pred)
        for name in ROUGE_TYPES:
            totals[name] += scores[name].fmeasure
    n = max(1, len(references))
    return {name: total / n for name, total in totals.items()}


def length_stats(texts: list[str]) -> dict[str, float]:
    """Answer lengths in characters (whitespace excluded): mean, median, min, max, empty count."""
    lengths = [len(char_tokens(t)) for t in texts]
    if not lengths:
        return {"mean": 0.0, "median": 0.0, "min": 0, "max": 0, "empty": 0}
    return {
        "mean": statistics.fmean(lengths),
        "median": float(statistics.median(lengths)),
        "min": min(lengths),
        "max": max(lengths),
        "empty": sum(1 for n in lengths if n == 0),
    }


def fact_coverage(facts: list[dict], answer: str) -> float | None:
    """Fraction of distinct fact values contained verbatim in ``answer`` (None without facts)."""
    values = list(dict.fromkeys(str(f["value"]).strip() for f in facts if str(f.get("value", "")).strip()))
    if not values:
        return None
    return sum(1 for v in values if v in answer) / len(values)


def text_metrics(references: list[str], predictions: list[str]) -> dict:
    """BLEU-4 and ROUGE-1/2/L at character and word level: ``{"char": {...}, "word": {...}}``."""
    if len(references) != len(predictions):
        raise UserError(f"{len(references)} references but {len(predictions)} predictions")
    return {
        tokenization: {
            "bleu4": bleu4(references, predictions, tokenization),
            **rouge(references, predictions, tokenization),
        }
        for tokenization in TOKENIZATIONS
    }
