"""Fitting span tasks: every head of the kind cross-validated on the same folds (over examples), the
encoder's head chosen unless the no-transfer baseline beats it (the negative-transfer guard), then refit
on all examples; for answers, the "no answer" threshold tuned on the out-of-fold scores."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.model_selection import KFold

from .codec import Span
from .heads import Answer, Encoded, SpanPointer, TokenTagger, WordPointer, WordTagger
from .metrics import answer_scores, entity_scores


@dataclass
class SpanFit:
    head: Any  # the chosen head, refit on every example
    chosen: str  # its kind
    metrics: dict[str, dict[str, Any]]  # head kind → out-of-fold metrics (and fit seconds)
    warnings: list[str] = field(default_factory=list)
    # the chosen head's out-of-fold answers per example: spans (entities) or answer texts, None for none
    oof: list[Any] = field(default_factory=list)


def _folds(n: int, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    k = max(2, min(k, n))
    return list(KFold(n_splits=k, shuffle=True, random_state=seed).split(np.arange(n)))


def _pick(items: Sequence[Any] | None, idx: np.ndarray) -> Any:
    return None if items is None else [items[i] for i in idx]


def fit_entities(
    texts: Sequence[str], spans: Sequence[Sequence[Span]], labels: Sequence[str],
    encoded: Sequence[Encoded] | None, folds: int = 5, seed: int = 0, pinned: str | None = None,
) -> SpanFit:
    """Cross-validate the token tagger (when ``encoded`` is given) and the word-feature baseline on the
    same folds; entity-level P/R/F1 of each; the higher F1 (or the ``pinned`` head) is refit on all examples."""
    if len(texts) < 2:
        raise ValueError("entities need at least 2 examples")
    candidates: dict[str, Any] = {"word-tagger": WordTagger}
    if encoded is not None:
        candidates = {"tagger": TokenTagger, **candidates}
    metrics: dict[str, dict[str, Any]] = {}
    oofs: dict[str, list[list[Span]]] = {}
    for kind, cls in candidates.items():
        oof: list[list[Span]] = oofs.setdefault(kind, [[] for _ in texts])
        began = time.perf_counter()
        for train, test in _folds(len(texts), folds, seed):
            head = cls(list(labels)).fit(_pick(texts, train), _pick(spans, train), _pick(encoded, train))
            for i, found in zip(test, head.predict(_pick(texts, test), _pick(encoded, test)), strict=True):
                oof[i] = [span for span, _ in found]
        metrics[kind] = {**entity_scores(spans, oof), "cv_seconds": time.perf_counter() - began}
    best = max(metrics, key=lambda kind: (metrics[kind]["f1"], kind == "tagger"))
    chosen = _pinned(pinned, metrics) or best
    warnings = []
    if encoded is not None and best != "tagger":
        warnings.append(
            f"the no-transfer baseline ({metrics[best]['f1']:.3f} F1) beat the encoder's tagger "
            f"({metrics['tagger']['f1']:.3f}) in cross-validation: "
            + ("serving the baseline" if chosen == best else f"serving the pinned head {chosen!r} anyway")
        )
    head = candidates[chosen](list(labels)).fit(texts, spans, encoded)
    return SpanFit(head, chosen, metrics, warnings, oofs[chosen])


def _pinned(pinned: str | None, metrics: dict[str, Any]) -> str | None:
    """The pinned head kind (None: choose by CV); ValueError when it was not a candidate."""
    if pinned is None:
        return None
    if pinned not in metrics:
        raise ValueError(f"head {pinned!r} is not one of the candidates {sorted(metrics)}")
    return pinned


def tune_threshold(gold: Sequence[str | None], answers: Sequence[Answer], contexts: Sequence[str]) -> float:
    """The "no answer" threshold that maximises mean token F1 of the out-of-fold answers: each answer's
    best span is kept when its score reaches the threshold. 0 (always answer) when every question has an
    answer; ties go to the lowest threshold."""
    if all(g is not None for g in gold):
        return 0.0
    candidates = sorted({0.0, *(a.score for a in answers)})
    best, best_f1 = 0.0, -1.0
    for threshold in candidates:
        preds = [a.text(c) if a.score >= threshold else None for a, c in zip(answers, contexts, strict=True)]
        f1 = answer_scores(gold, preds)["f1"]
        if f1 > best_f1 + 1e-12:
            best, best_f1 = threshold, f1
    return float(best)


def fit_answers(
    questions: Sequence[str], contexts: Sequence[str], answers: Sequence[tuple[int, int] | None],
    encoded: Sequence[Encoded] | None, folds: int = 5, seed: int = 0, pinned: str | None = None,
) -> SpanFit:
    """Cross-validate the span pointer (when ``encoded`` is given) and the word-feature baseline on the
    same folds; tune each one's "no answer" threshold on its out-of-fold scores; exact match and token F1
    at that threshold; the higher F1 (or the ``pinned`` head) is refit on all examples with its threshold."""
    if len(contexts) < 2:
        raise ValueError("answers need at least 2 examples")
    gold = [None if a is None else c[a[0] : a[1]] for c, a in zip(contexts, answers, strict=True)]
    candidates: dict[str, Any] = {"word-pointer": WordPointer}
    if encoded is not None:
        candidates = {"pointer": SpanPointer, **candidates}
    metrics: dict[str, dict[str, Any]] = {}
    thresholds: dict[str, float] = {}
    answered: dict[str, list[str | None]] = {}
    for kind, cls in candidates.items():
        oof: list[Answer] = [Answer(None, None, 0.0)] * len(contexts)
        began = time.perf_counter()
        for train, test in _folds(len(contexts), folds, seed):
            head = cls().fit(_pick(questions, train), _pick(contexts, train), _pick(answers, train),
                             _pick(encoded, train))
            found = head.predict(_pick(questions, test), _pick(contexts, test), _pick(encoded, test))
            for i, answer in zip(test, found, strict=True):
                oof[i] = answer
        thresholds[kind] = tune_threshold(gold, oof, contexts)
        preds = [a.text(c) if a.score >= thresholds[kind] else None for a, c in zip(oof, contexts, strict=True)]
        answered[kind] = preds
        metrics[kind] = {**answer_scores(gold, preds), "threshold": thresholds[kind],
                         "cv_seconds": time.perf_counter() - began}
    best = max(metrics, key=lambda kind: (metrics[kind]["f1"], kind == "pointer"))
    chosen = _pinned(pinned, metrics) or best
    warnings = []
    if encoded is not None and best != "pointer":
        warnings.append(
            f"the no-transfer baseline ({metrics[best]['f1']:.3f} F1) beat the encoder's pointer "
            f"({metrics['pointer']['f1']:.3f}) in cross-validation: "
            + ("serving the baseline" if chosen == best else f"serving the pinned head {chosen!r} anyway")
        )
    head = candidates[chosen](threshold=thresholds[chosen]).fit(questions, contexts, answers, encoded)
    return SpanFit(head, chosen, metrics, warnings, answered[chosen])
