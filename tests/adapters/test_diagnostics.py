"""The dashboard's figures in a version's metrics: consistent with each other and with the
cross-validated scores they come from."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from adapters import diagnostics
from adapters.calibration import BINS
from adapters.training import fit_head
from tests.adapters.test_heads import clusters
from tests.conftest import per_label

OLD_KEYS = {
    "examples_per_label",
    "majority_baseline_accuracy",
    "selection",
    "warnings",
    "evaluation",
    "folds",
    "head",
    "selected",
    "accuracy",
    "macro_f1",
    "log_loss",
    "heads",
    "candidates",
    "calibration",
    "ece",
}


def noisy(n_per: int = 30, k: int = 4) -> tuple[np.ndarray, list[str]]:
    """Overlapping clusters with unequal label counts, so the figures have errors to show."""
    x, labels = clusters(n_per, k, spread=3.0, seed=3)
    keep = [i for i, label in enumerate(labels) if label != "class-3" or i % 3 == 0]
    return x[keep], [labels[i] for i in keep]


@pytest.fixture(scope="module")
def result():
    x, labels = noisy()
    return fit_head("linear", x, labels, folds=5, seed=0), labels


def test_old_metric_keys_are_kept(result) -> None:
    fit, _ = result
    assert OLD_KEYS <= set(fit.metrics)


def test_confusion_matrix_counts_every_example_once(result) -> None:
    fit, labels = result
    cm = fit.metrics["confusion_matrix"]
    matrix = np.array(cm["matrix"])
    assert cm["labels"] == fit.head.labels == sorted(set(labels))
    assert matrix.shape == (4, 4) and matrix.sum() == len(labels)
    counts = Counter(labels)
    assert matrix.sum(axis=1).tolist() == [counts[label] for label in cm["labels"]]  # rows: true labels
    assert np.trace(matrix) / len(labels) == pytest.approx(fit.metrics["accuracy"])
    assert np.trace(matrix) < len(labels), "overlapping clusters: some out-of-fold predictions are wrong"
    truth = np.array([fit.head.labels.index(label) for label in labels])
    pred = fit.oof_proba.argmax(axis=1)
    assert all(matrix[i, j] == np.sum((truth == i) & (pred == j)) for i in range(4) for j in range(4))


def test_per_label_scores_follow_from_the_matrix(result) -> None:
    fit, labels = result
    matrix = np.array(fit.metrics["confusion_matrix"]["matrix"])
    scores = fit.metrics["per_label"]
    assert list(scores) == fit.head.labels
    for i, label in enumerate(fit.head.labels):
        row = scores[label]
        assert row["support"] == Counter(labels)[label]
        assert row["recall"] == pytest.approx(matrix[i, i] / matrix[i].sum())
        assert row["precision"] == pytest.approx(matrix[i, i] / matrix[:, i].sum() if matrix[:, i].sum() else 0.0)
        p, r = row["precision"], row["recall"]
        assert row["f1"] == pytest.approx(2 * p * r / (p + r) if p + r else 0.0)
    assert np.mean([s["f1"] for s in scores.values()]) == pytest.approx(fit.metrics["macro_f1"])


def test_reliability_bins_reproduce_the_reported_ece(result) -> None:
    fit, labels = result
    bins = fit.metrics["reliability"]["bins"]
    assert len(bins) == BINS and sum(b["count"] for b in bins) == len(labels)
    assert bins[0]["lower"] == 0.0 and bins[-1]["upper"] == 1.0
    ece = sum(b["count"] * abs(b["accuracy"] - b["confidence"]) for b in bins if b["count"]) / len(labels)
    assert ece == pytest.approx(fit.metrics["ece"])  # the calibrated (served) probabilities
    for b in bins:
        if b["count"]:
            assert b["lower"] <= b["confidence"] <= b["upper"] and 0.0 <= b["accuracy"] <= 1.0
        else:
            assert b["confidence"] is None and b["accuracy"] is None


def test_learning_curve_ends_at_the_cv_accuracy(result) -> None:
    fit, _ = result
    curve = fit.metrics["learning_curve"]
    points = curve["points"]
    sizes = [p["examples_per_label"] for p in points]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes) and sizes[0] == 1
    assert [p["all"] for p in points] == [False] * (len(points) - 1) + [True]
    assert points[-1]["accuracy"] == fit.metrics["accuracy"]
    assert all(0.0 <= p["accuracy"] <= 1.0 for p in points)
    assert points[0]["accuracy"] < points[-1]["accuracy"], "one example per label is worse than all of them"
    assert curve["head"] == "linear" and curve["params"] == fit.metrics["selected"]


def test_many_labels_keep_only_the_non_zero_cells() -> None:
    y = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 1, 1, 1, 2, 0])
    dense = diagnostics.confusion(y, pred, ["a", "b", "c"])
    sparse = diagnostics.confusion(y, pred, ["a", "b", "c"], dense_up_to=2)
    assert dense["matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert sparse["matrix"] is None and sparse["labels"] == ["a", "b", "c"]
    assert sparse["cells"] == [[0, 0, 1], [0, 1, 1], [1, 1, 2], [2, 0, 1], [2, 2, 1]]
    assert sum(count for _, _, count in sparse["cells"]) == len(y)


@pytest.mark.parametrize(("smallest", "expected"), [(1, []), (2, [1]), (5, [1, 2]), (24, [1, 4, 8]), (200, [1, 8, 64])])
def test_curve_sizes(smallest: int, expected: list[int]) -> None:
    assert diagnostics.curve_sizes(smallest) == expected


def test_raw_input_heads_get_a_learning_curve_too(bbc_train) -> None:
    """The baseline refits its TF-IDF vocabulary on each subsample."""
    rows = per_label(bbc_train, 8)
    texts, labels = [r["input"] for r in rows], [r["label"] for r in rows]
    fit = fit_head("baseline", None, labels, raw=texts, folds=4)
    sizes = [p["examples_per_label"] for p in fit.metrics["learning_curve"]["points"]]
    assert sizes == [1, 2, 6]
    assert np.array(fit.metrics["confusion_matrix"]["matrix"]).sum() == len(texts)


def test_no_figures_without_cross_validation() -> None:
    x, labels = clusters(1, 3)
    metrics = fit_head("prototype", x, labels).metrics
    assert not {"confusion_matrix", "per_label", "reliability", "learning_curve"} & set(metrics)
