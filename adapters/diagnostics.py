"""What the dashboard plots about a classification version, all from cross-validation.

Every figure here is computed from held-out predictions, never from the training examples:

- ``confusion_matrix``: counts of (true label, predicted label) over the served head's out-of-fold
  predictions; rows are true labels, columns predictions, both in ``labels`` order; it sums to n
  (with more than ``DENSE_LABELS`` labels, only its non-zero ``cells``).
- ``per_label``: precision, recall, F1 and support of each label, from the same predictions.
- ``reliability``: the calibrated out-of-fold probabilities' top-label confidence binned in equal
  widths, with each bin's mean confidence and accuracy (a reliability diagram; its weighted gap is
  the ECE).
- ``learning_curve``: CV accuracy of the served head kind and hyper-parameters refitted, within
  each of the first ``CURVE_FOLDS`` folds, on a random ``s`` examples per label of the fold's
  training part, for a few ``s``; the last point is the full cross-validated accuracy. It tells whether
  more examples would help.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support
from sklearn.model_selection import StratifiedKFold

from .calibration import BINS

# Tasks with more labels keep their confusion matrix sparse (non-zero cells only).
DENSE_LABELS = 100
# At most this many subsample sizes on the learning curve (plus the full-data point): each size
# refits the served head once per fold, on a fraction of the data.
CURVE_POINTS = 3
# ... on the first few CV folds only (their held-out parts still cover most examples).
CURVE_FOLDS = 3


def confusion(
    y: np.ndarray, pred: np.ndarray, labels: Sequence[str], dense_up_to: int = DENSE_LABELS
) -> dict[str, Any]:
    """Rows true labels, columns predictions. Past ``dense_up_to`` labels the k×k matrix would
    bloat every version's metrics, so only its non-zero cells are kept, as [row, column, count]."""
    matrix = confusion_matrix(y, pred, labels=list(range(len(labels)))).astype(int)
    if len(labels) <= dense_up_to:
        return {"labels": list(labels), "matrix": matrix.tolist(), "source": "cv"}
    rows, cols = np.nonzero(matrix)
    cells = [[int(i), int(j), int(matrix[i, j])] for i, j in zip(rows, cols, strict=True)]
    return {"labels": list(labels), "matrix": None, "cells": cells, "source": "cv"}


def per_label(y: np.ndarray, pred: np.ndarray, labels: Sequence[str]) -> dict[str, dict[str, float | int]]:
    precision, recall, f1, support = precision_recall_fscore_support(
        y, pred, labels=list(range(len(labels))), zero_division=0
    )
    return {
        label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for label, p, r, f, s in zip(labels, precision, recall, f1, support, strict=True)
    }


def reliability(proba: np.ndarray, y: np.ndarray, bins: int = BINS) -> dict[str, Any]:
    """Equal-width bins of top-label confidence (as :func:`calibration.expected_calibration_error`);
    empty bins are listed with ``count`` 0 and null means."""
    confidence = proba.max(axis=1)
    correct = proba.argmax(axis=1) == y
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    rows = []
    for b in range(bins):
        mask = which == b
        count = int(mask.sum())
        rows.append({
            "lower": b / bins, "upper": (b + 1) / bins, "count": count,
            "confidence": float(confidence[mask].mean()) if count else None,
            "accuracy": float(correct[mask].mean()) if count else None,
        })
    return {"bins": rows, "source": "cv", "calibrated": True}


def curve_sizes(smallest_label: int, points: int = CURVE_POINTS) -> list[int]:
    """Examples per label to subsample: powers of two up to half of ``smallest_label`` (the fewest
    examples any label has in any fold's training part), thinned to ``points`` spread evenly, the
    smallest and largest kept. The full-data point completes the curve."""
    sizes = [1 << i for i in range(32) if (1 << i) <= smallest_label // 2]
    if len(sizes) <= points:
        return sizes
    picks = np.linspace(0, len(sizes) - 1, points).round().astype(int)
    return [sizes[i] for i in sorted(set(picks.tolist()))]


def learning_curve(
    fit_predict: Callable[[np.ndarray, np.ndarray], np.ndarray],
    y: np.ndarray,
    splitter: StratifiedKFold,
    full_accuracy: float,
    seed: int = 0,
) -> dict[str, Any]:
    """CV accuracy with ``s`` examples per label for a few ``s``. ``fit_predict(train_idx, test_idx)``
    fits the served head on ``train_idx`` and returns its predicted classes for ``test_idx``."""
    folds = list(splitter.split(np.zeros(len(y)), y))[:CURVE_FOLDS]
    n_classes = int(y.max()) + 1
    smallest = min(int(np.bincount(y[train], minlength=n_classes).min()) for train, _ in folds)
    typical = int(np.median([np.bincount(y[train], minlength=n_classes).mean() for train, _ in folds]).round())
    scored = sum(len(test) for _, test in folds)
    rng = np.random.default_rng(seed)
    points = []
    for size in curve_sizes(smallest):
        correct = 0
        for train, test in folds:
            subsample = np.concatenate(
                [rng.choice(train[y[train] == k], size, replace=False) for k in range(n_classes)]
            )
            correct += int((fit_predict(np.sort(subsample), test) == y[test]).sum())
        points.append({"examples_per_label": size, "accuracy": correct / scored, "all": False})
    points.append({"examples_per_label": typical, "accuracy": full_accuracy, "all": True})
    return {"points": points, "source": "cv", "folds": len(folds)}
