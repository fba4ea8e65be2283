"""Span metrics: entity-level precision/recall/F1 (exact span and label, as seqeval's strict mode and
conlleval count them), overall (micro) and per label; SQuAD's exact match and token F1 for answers."""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from typing import Any

from .codec import Span


def _prf(tp: int, n_pred: int, n_gold: int) -> dict[str, float]:
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def entity_scores(gold: Sequence[Sequence[Span]], pred: Sequence[Sequence[Span]]) -> dict[str, Any]:
    """Micro precision/recall/F1 over all entities of all texts, a prediction counting only when its
    start, end and label all equal a gold entity's; ``per_label`` the same per label, with ``support``
    (gold entities of the label). A label with no gold and no predicted entity is absent."""
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold rows but {len(pred)} predicted")
    tp: Counter[str] = Counter()
    n_gold: Counter[str] = Counter()
    n_pred: Counter[str] = Counter()
    for g, p in zip(gold, pred, strict=True):
        gs, ps = set(g), set(p)
        n_gold.update(s.label for s in gs)
        n_pred.update(s.label for s in ps)
        tp.update(s.label for s in gs & ps)
    out: dict[str, Any] = _prf(sum(tp.values()), sum(n_pred.values()), sum(n_gold.values()))
    out["support"] = sum(n_gold.values())
    out["per_label"] = {
        label: {**_prf(tp[label], n_pred[label], n_gold[label]), "support": n_gold[label]}
        for label in sorted(set(n_gold) | set(n_pred))
    }
    return out


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles (a, an, the), single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(gold: str | None, pred: str | None) -> float:
    """1.0 when the normalised answers are equal; "no answer" (None) matches only "no answer"."""
    if gold is None or pred is None:
        return float(gold is None and pred is None)
    return float(normalize_answer(gold) == normalize_answer(pred))


def token_f1(gold: str | None, pred: str | None) -> float:
    """SQuAD's token F1 between normalised answers (bags of words); "no answer" scores 1 only against
    "no answer", and an answer that normalises to nothing scores 1 only against another such."""
    if gold is None or pred is None:
        return float(gold is None and pred is None)
    g, p = normalize_answer(gold).split(), normalize_answer(pred).split()
    if not g or not p:
        return float(g == p)
    common = sum((Counter(g) & Counter(p)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


def answer_scores(gold: Sequence[str | None], pred: Sequence[str | None]) -> dict[str, Any]:
    """Mean exact match and token F1 (SQuAD v2: unanswerable questions count, "no answer" is right
    only for them), with the counts of answerable and unanswerable questions."""
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold answers but {len(pred)} predicted")
    n = len(gold)
    return {
        "exact_match": sum(exact_match(g, p) for g, p in zip(gold, pred, strict=True)) / n if n else 0.0,
        "f1": sum(token_f1(g, p) for g, p in zip(gold, pred, strict=True)) / n if n else 0.0,
        "answerable": sum(g is not None for g in gold),
        "unanswerable": sum(g is None for g in gold),
    }
