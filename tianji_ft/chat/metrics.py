"""Answer metrics for ``tianji-ft eval``.

With references: corpus BLEU (sacrebleu; its ``zh`` tokenizer when the
references are Chinese), ROUGE-L F1 and exact match. Always: answer length,
distinct-2 and the stop rate, the share of answers that ended on the stop
token instead of the token limit, which is what exposes a wrong template.

ROUGE-L and distinct-2 count "units": every CJK character is one unit (so
Chinese is scored at character level, as there are no spaces to split on),
every run of letters/digits is one unit, every other visible character is one.
"""

from __future__ import annotations

import re

_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_UNIT = re.compile(rf"[{_CJK}]|[^\W{_CJK}]+|[^\w\s]", re.UNICODE)
_HAS_CJK = re.compile(rf"[{_CJK}]")


def has_chinese(text: str) -> bool:
    return bool(_HAS_CJK.search(text))


def units(text: str) -> list[str]:
    return _UNIT.findall(text)


def lcs_length(a: list[str], b: list[str]) -> int:
    if len(a) < len(b):
        a, b = b, a
    row = [0] * (len(b) + 1)
    for x in a:
        prev_diag = 0
        for j, y in enumerate(b, 1):
            prev_diag, row[j] = row[j], prev_diag + 1 if x == y else max(row[j], row[j - 1])
    return row[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 between two texts (character level for Chinese)."""
    p, r = units(prediction), units(reference)
    if not p or not r:
        return float(p == r)
    lcs = lcs_length(p, r)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(p), lcs / len(r)
    return 2 * precision * recall / (precision + recall)


def bleu(predictions: list[str], references: list[str]) -> float:
    """Corpus BLEU (0-100); sacrebleu's ``zh`` tokenizer when the references are Chinese."""
    import sacrebleu

    tokenize = "zh" if any(has_chinese(r) for r in references) else "13a"
    return float(sacrebleu.corpus_bleu(predictions, [references], tokenize=tokenize).score)


def _normalize(text: str) -> str:
    return " ".join(text.split())


def exact_match(predictions: list[str], references: list[str]) -> float:
    if not predictions:
        return 0.0
    return sum(_normalize(p) == _normalize(r) for p, r in zip(predictions, references)) / len(predictions)


def distinct_n(texts: list[str], n: int = 2) -> float:
    """Unique n-grams over all n-grams of all answers; low values mean repetition."""
    seen, total = set(), 0
    for text in texts:
        u = units(text)
        grams = [tuple(u[i:i + n]) for i in range(len(u) - n + 1)]
        seen.update(grams)
        total += len(grams)
    return len(seen) / total if total else 0.0


def answer_metrics(answers: list[str], finish_reasons: list[str], completion_tokens: list[int],
                   references: list[str | None] | None = None) -> dict:
    n = len(answers)
    metrics = {
        "count": n,
        "stop_rate": sum(f == "stop" for f in finish_reasons) / n if n else 0.0,
        "mean_answer_chars": sum(len(a) for a in answers) / n if n else 0.0,
        "mean_answer_tokens": sum(completion_tokens) / n if n else 0.0,
        "distinct_2": distinct_n(answers, 2),
    }
    pairs = [(a, r) for a, r in zip(answers, references or []) if r is not None]
    if pairs:
        preds, refs = [a for a, _ in pairs], [r for _, r in pairs]
        metrics.update(
            references=len(pairs),
            bleu=bleu(preds, refs),
            rouge_l=sum(rouge_l(p, r) for p, r in pairs) / len(pairs),
            exact_match=exact_match(preds, refs),
        )
    return metrics
