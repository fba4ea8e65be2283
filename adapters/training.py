"""Fit a head with cross-validated hyper-parameter selection and report its metrics.

This is the code the service's training jobs run, and the code the quality benchmarks run.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import StratifiedKFold

from .heads import HEADS, Head

# Hyper-parameter grids, searched by CV. Embeddings are L2-normalised, so useful
# inverse-regularisation strengths for the linear head are large.
GRIDS: dict[str, list[dict[str, float]]] = {
    "linear": [{"c": c} for c in (0.5, 2.0, 8.0, 32.0, 128.0)],
    "prototype": [{"scale": s} for s in (5.0, 10.0, 20.0, 40.0)],
}


class TrainingDataError(ValueError):
    """The examples cannot train a head (e.g. fewer than two labels)."""


@dataclass
class FitResult:
    head: Head
    metrics: dict[str, Any] = field(default_factory=dict)


def encode_labels(labels: list[str]) -> tuple[list[str], np.ndarray]:
    classes = sorted(set(labels))
    index = {label: i for i, label in enumerate(classes)}
    return classes, np.array([index[label] for label in labels], dtype=np.int64)


def log_loss(y: np.ndarray, proba: np.ndarray) -> float:
    """Mean negative log-likelihood of the true labels."""
    return float(-np.mean(np.log(np.clip(proba[np.arange(len(y)), y], 1e-12, 1.0))))


def _make(kind: str, classes: list[str], params: dict[str, float]) -> Head:
    return HEADS[kind](classes, **params)


def cross_val_proba(
    kind: str, classes: list[str], params: dict[str, float], x: np.ndarray, y: np.ndarray, folds: StratifiedKFold
) -> np.ndarray:
    """Out-of-fold probabilities for every example."""
    proba = np.zeros((len(y), len(classes)), dtype=np.float64)
    for train, test in folds.split(x, y):
        proba[test] = _make(kind, classes, params).fit(x[train], y[train]).predict_proba(x[test])
    return proba


def fit_head(kind: str, x: np.ndarray, labels: list[str], *, folds: int = 5, seed: int = 0) -> FitResult:
    """Select the head's hyper-parameters by stratified k-fold CV, fit on all data, report metrics.

    With fewer than two examples in some label there is nothing to fold: the head is fitted
    with default parameters and metrics are training-set figures, flagged as such.
    """
    if kind not in HEADS:
        raise TrainingDataError(f"unknown head {kind!r}; choose one of {sorted(HEADS)}")
    if len(labels) != len(x):
        raise TrainingDataError("embeddings and labels differ in length")
    classes, y = encode_labels(labels)
    if len(classes) < 2:
        raise TrainingDataError("at least 2 distinct labels are needed to train a classifier")

    counts = Counter(labels)
    k = min(folds, min(counts.values()))
    metrics: dict[str, Any] = {
        "examples_per_label": dict(sorted(counts.items())),
        "majority_baseline_accuracy": max(counts.values()) / len(labels),
    }
    grid = GRIDS[kind]
    if k >= 2:
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        candidates = []
        for params in grid:
            proba = cross_val_proba(kind, classes, params, x, y, splitter)
            pred = proba.argmax(axis=1)
            candidates.append(
                {
                    "params": params,
                    "accuracy": float(accuracy_score(y, pred)),
                    "macro_f1": float(f1_score(y, pred, average="macro")),
                    "log_loss": log_loss(y, proba),
                }
            )
        best = max(candidates, key=lambda c: (c["accuracy"], -c["log_loss"]))
        params = best["params"]
        metrics.update(
            evaluation="cv",
            folds=k,
            accuracy=best["accuracy"],
            macro_f1=best["macro_f1"],
            log_loss=best["log_loss"],
            selected=params,
            candidates=candidates,
        )
    else:
        params = grid[len(grid) // 2]
    head = _make(kind, classes, params).fit(x, y)
    if k < 2:
        pred = head.predict_proba(x).argmax(axis=1)
        metrics.update(
            evaluation="train",
            too_small_to_fold=True,
            accuracy=float(accuracy_score(y, pred)),
            macro_f1=float(f1_score(y, pred, average="macro")),
            selected=params,
        )
    return FitResult(head=head, metrics=metrics)
