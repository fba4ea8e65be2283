"""Fitting span tasks: every head of the kind cross-validated on the same folds, the encoder's head chosen
unless the no-transfer baseline beats it (the negative-transfer guard), then refit on all examples; for
answers, the "no answer" threshold tuned on the out-of-fold scores.

Entities are cross-validated on **name-disjoint** folds (:func:`entity_folds`): a head that memorises the
names of its training examples must not be rewarded for finding them again in the held-out part, since
the names a served task meets are mostly new ones (docs/spans.md#choosing-by-cross-validation).
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.model_selection import KFold

from .codec import Span
from .heads import Answer, Encoded, SpanPointer, TokenTagger, WordPointer, WordTagger
from .metrics import answer_scores, entity_scores
from .words import STOP, WORD


@dataclass
class SpanFit:
    head: Any  # the chosen head, refit on every example
    chosen: str  # its kind
    metrics: dict[str, dict[str, Any]]  # head kind → out-of-fold metrics (and fit seconds)
    warnings: list[str] = field(default_factory=list)
    # the chosen head's out-of-fold answers per example: spans (entities; on folds over examples, for the
    # promotion comparison) or answer texts, None for none
    oof: list[Any] = field(default_factory=list)
    cv: dict[str, Any] = field(default_factory=dict)  # the folds used: count, split, scoring, training sizes


def _folds(n: int, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    k = max(2, min(k, n))
    return list(KFold(n_splits=k, shuffle=True, random_state=seed).split(np.arange(n)))


@dataclass(frozen=True)
class EntityFolds:
    """Cross-validation folds for entities and how their out-of-fold spans are scored.

    ``split``: ``grouped`` (examples that share an entity word are in the same fold: no entity word of a
    test part occurs in its training part), ``names-held-out`` (each fold holds out a share of the entity
    words: its training part is the other examples that contain none of them; a test example may still
    share other entity words with it) or ``examples`` (plain K-fold over examples, where neither leaves
    enough to train on or to score). ``scored``: ``unseen-mentions`` (a gold or predicted span counts only when one of
    its words is not an entity word of its fold's training part) or ``all``. ``seen[i]``: the entity words
    of the training part of the fold that holds example ``i`` out."""

    folds: list[tuple[np.ndarray, np.ndarray]]
    split: str
    scored: str
    seen: list[frozenset[str]]

    def score(
        self, gold: Sequence[Sequence[Span]], pred: Sequence[Sequence[Span]], texts: Sequence[str]
    ) -> dict[str, Any]:
        """Entity P/R/F1 (:func:`entity_scores`) of the out-of-fold spans as ``scored`` says; with
        ``unseen-mentions`` also ``f1_seen``, the F1 on the mentions left out (every word seen)."""
        if self.scored == "all":
            return entity_scores(gold, pred)
        unseen_gold, unseen_pred, seen_gold, seen_pred = [], [], [], []
        for text, g, p, seen in zip(texts, gold, pred, self.seen, strict=True):
            new_g = [s for s in g if _is_unseen(text, s, seen)]
            new_p = [s for s in p if _is_unseen(text, s, seen)]
            unseen_gold.append(new_g)
            unseen_pred.append(new_p)
            seen_gold.append([s for s in g if s not in new_g])
            seen_pred.append([s for s in p if s not in new_p])
        out = entity_scores(unseen_gold, unseen_pred)
        out["f1_seen"] = entity_scores(seen_gold, seen_pred)["f1"]
        out["support_seen"] = sum(len(g) for g in seen_gold)
        return out

    def describe(self) -> dict[str, Any]:
        return {"folds": len(self.folds), "split": self.split, "scored": self.scored,
                "train_sizes": [len(train) for train, _ in self.folds]}


def span_words(text: str, span: Span) -> set[str]:
    """The normalised words of a span (case-folded runs of word characters, stop words left out)."""
    return {w.casefold() for w in WORD.findall(text[span.start : span.end])
            if w[0].isalnum() or w[0] == "_"} - STOP


def _is_unseen(text: str, span: Span, seen: frozenset[str]) -> bool:
    found = span_words(text, span)
    return not found or not found <= seen


def entity_folds(texts: Sequence[str], spans: Sequence[Sequence[Span]], k: int, seed: int) -> EntityFolds:
    """Name-disjoint folds for entities, deterministic for ``seed``.

    1. **Grouped**: examples are joined (union-find) when they share a normalised entity word
       (:func:`span_words`); when the largest group fits in a fold (at most n/k examples), the groups are
       dealt to ``k`` folds, largest first, each to the fold with fewest examples (GroupKFold's rule; ties
       broken by a seeded shuffle). No entity word is then on both sides of any fold; every span is scored.
    2. **Names held out**, when the groups collapse (names repeat across most examples, as in any data with
       common names): the entity vocabulary is dealt at random into ``k`` parts; fold ``i`` tests the
       examples whose entity words fall mostly in part ``i`` (examples without entities: a random fold)
       and trains on the other examples that contain no word of part ``i``. Scored on unseen mentions.
    3. **Examples** (plain K-fold, every span scored) when that leaves a fold under 2 training examples or
       without test examples, or no unseen mention to score (every example names the same entity, say)."""
    n = len(texts)
    k = max(2, min(k, n))
    vocab = [sorted(set().union(*(span_words(t, s) for s in row))) for t, row in zip(texts, spans, strict=True)]
    rng = random.Random(seed)
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[str, int] = {}
    for i, words in enumerate(vocab):
        for w in words:
            if w in first:
                parent[root(i)] = root(first[w])
            else:
                first[w] = i
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(root(i), []).append(i)
    members = list(groups.values())
    if len(members) >= k and max(map(len, members)) <= n / k:
        rng.shuffle(members)
        members.sort(key=len, reverse=True)  # stable: the shuffle breaks ties
        assigned: list[list[int]] = [[] for _ in range(k)]
        for group in members:
            min(assigned, key=len).extend(group)
        folds = _as_folds(assigned, n)
        return EntityFolds(folds, "grouped", "all", _seen_of(folds, vocab, n))
    words = sorted(first)
    rng.shuffle(words)
    part = {w: j % k for j, w in enumerate(words)}
    tests: list[list[int]] = [[] for _ in range(k)]
    for i, mine in enumerate(vocab):
        counts = np.bincount([part[w] for w in mine], minlength=k) if mine else np.ones(k)
        best = np.flatnonzero(counts == counts.max())
        tests[int(best[rng.randrange(len(best))])].append(i)
    folds = []
    for j, test in enumerate(tests):
        held = set(test)
        train = [i for i in range(n) if i not in held and all(part[w] != j for w in vocab[i])]
        folds.append((np.array(train, dtype=np.int64), np.array(sorted(test), dtype=np.int64)))
    seen = _seen_of(folds, vocab, n)
    enough = all(len(train) >= 2 and len(test) for train, test in folds)
    mentions = any(_is_unseen(texts[i], s, seen[i]) for i in range(n) for s in spans[i])
    if enough and mentions:
        return EntityFolds(folds, "names-held-out", "unseen-mentions", seen)
    return _plain(n, k, seed)


def _plain(n: int, k: int, seed: int) -> EntityFolds:
    return EntityFolds(_folds(n, k, seed), "examples", "all", [frozenset()] * n)


def _as_folds(tests: list[list[int]], n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for test in tests:
        held = set(test)
        out.append((np.array([i for i in range(n) if i not in held], dtype=np.int64),
                    np.array(sorted(test), dtype=np.int64)))
    return out


def _seen_of(folds: list[tuple[np.ndarray, np.ndarray]], vocab: list[list[str]], n: int) -> list[frozenset[str]]:
    seen: list[frozenset[str]] = [frozenset()] * n
    for train, test in folds:
        words = frozenset(w for i in train for w in vocab[i])
        for i in test:
            seen[int(i)] = words
    return seen


def _pick(items: Sequence[Any] | None, idx: np.ndarray) -> Any:
    return None if items is None else [items[i] for i in idx]


def fit_entities(
    texts: Sequence[str], spans: Sequence[Sequence[Span]], labels: Sequence[str],
    encoded: Sequence[Encoded] | None, folds: int = 5, seed: int = 0, pinned: str | None = None,
    name_disjoint: bool = True,
) -> SpanFit:
    """Cross-validate the token tagger (when ``encoded`` is given) and the word-feature baseline on the
    same name-disjoint folds (:func:`entity_folds`); entity-level P/R/F1 of each, as the folds say to
    score them; the higher F1 (or the ``pinned`` head) is refit on all examples. ``SpanFit.cv`` says
    which folds and scoring were used; ``SpanFit.oof`` is the chosen head's on plain folds over examples.
    ``name_disjoint=False``: plain folds over examples, every span scored (the selection before issue 18's
    fix, kept for benchmarks/spans.py ``--plain-cv``)."""
    if len(texts) < 2:
        raise ValueError("entities need at least 2 examples")
    candidates: dict[str, Any] = {"word-tagger": WordTagger}
    if encoded is not None:
        candidates = {"tagger": TokenTagger, **candidates}
    metrics: dict[str, dict[str, Any]] = {}
    oofs: dict[str, list[list[Span]]] = {}
    plan = entity_folds(texts, spans, folds, seed) if name_disjoint else _plain(len(texts), folds, seed)
    for kind, cls in candidates.items():
        began = time.perf_counter()
        oofs[kind] = _entity_oof(cls, labels, texts, spans, encoded, plan.folds)
        metrics[kind] = {**plan.score(spans, oofs[kind], texts), "cv_seconds": time.perf_counter() - began}
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
    # The promotion comparison pits these answers against the active version's on the examples added since:
    # folds over examples, as the served head will have seen the other examples' names too.
    oof = oofs[chosen] if plan.split == "examples" else _entity_oof(
        candidates[chosen], labels, texts, spans, encoded, _folds(len(texts), folds, seed))
    return SpanFit(head, chosen, metrics, warnings, oof, {**plan.describe(), "promotion_folds": "examples"})


def _entity_oof(
    cls: Any, labels: Sequence[str], texts: Sequence[str], spans: Sequence[Sequence[Span]],
    encoded: Sequence[Encoded] | None, folds: list[tuple[np.ndarray, np.ndarray]],
) -> list[list[Span]]:
    """Each held-out example's spans as found by the head ``cls`` fitted on its fold's training part."""
    oof: list[list[Span]] = [[] for _ in texts]
    for train, test in folds:
        head = cls(list(labels)).fit(_pick(texts, train), _pick(spans, train), _pick(encoded, train))
        for i, found in zip(test, head.predict(_pick(texts, test), _pick(encoded, test)), strict=True):
            oof[i] = [span for span, _ in found]
    return oof


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
