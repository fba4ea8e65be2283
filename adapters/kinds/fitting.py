"""Fitting for the task kinds beyond single-label classification: multi-label and regression.

Both fit one head on the frozen embeddings, choose its regularisation by K-fold cross-validation
and report cross-validated metrics next to a no-learning baseline, so a transfer that does not
help is visible (and warned about in words):

- **multilabel** — one sigmoid (logistic regression) per label (:class:`MultiLabelHead`). Each
  label's decision threshold is the one that maximises that label's F1 on the out-of-fold
  probabilities. The reported micro/macro-F1 are honest about that tuning: each fold is scored with
  thresholds tuned on the *other* folds' out-of-fold probabilities (cross-fitting). Baseline: the
  best constant predictor, predicting every label on every example.
- **regression** — ridge regression (:class:`RidgeHead`). Reported: MAE, RMSE and R² of the
  out-of-fold predictions; baseline: each fold predicted by its training part's mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import f1_score, mean_absolute_error, r2_score
from sklearn.model_selection import KFold

from ..heads import MultiLabelHead, RidgeHead
from ..training import FitResult, TrainingDataError, single_threaded_blas

GRID_C = (0.5, 2.0, 8.0, 32.0, 128.0)
GRID_ALPHA = (0.001, 0.01, 0.1, 1.0, 10.0)
THRESHOLDS = np.round(np.arange(0.05, 0.951, 0.025), 3).astype(np.float32)  # as served: float32
MIN_CV_EXAMPLES = 4  # fewer cannot be folded usefully


def indicator(label_sets: Sequence[Sequence[str]], labels: Sequence[str]) -> np.ndarray:
    index = {label: j for j, label in enumerate(labels)}
    y = np.zeros((len(label_sets), len(labels)), dtype=np.int8)
    for i, chosen in enumerate(label_sets):
        y[i, [index[label] for label in chosen]] = 1
    return y


def tune_thresholds(proba: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per label, the threshold in :data:`THRESHOLDS` with the best F1 on ``(proba, y)``; ties go to
    the threshold nearest 0.5. A label never present keeps 0.5."""
    out = np.full(y.shape[1], 0.5, dtype=np.float32)
    preference = np.argsort(np.abs(THRESHOLDS - 0.5), kind="stable")
    for j in range(y.shape[1]):
        if not y[:, j].any():
            continue
        decided = proba[:, j][:, None] >= THRESHOLDS[None, :]  # (n, thresholds)
        tp = (decided & (y[:, j, None] == 1)).sum(axis=0)
        f1 = 2 * tp / (decided.sum(axis=0) + y[:, j].sum())
        best = f1.max()
        out[j] = THRESHOLDS[next(t for t in preference if f1[t] >= best - 1e-12)]
    return out


def _f1s(y: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    return {
        "micro_f1": float(f1_score(y, pred, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(y, pred, average="macro", zero_division=0)),
    }


def _bce(y: np.ndarray, proba: np.ndarray) -> float:
    p = np.clip(proba, 1e-7, 1 - 1e-7)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def _splits(n: int, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    return list(KFold(n_splits=min(folds, n), shuffle=True, random_state=seed).split(np.zeros(n)))


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


@single_threaded_blas
def fit_multilabel(x: np.ndarray, label_sets: Sequence[Sequence[str]], *, folds: int = 5, seed: int = 0) -> FitResult:
    """Fit a :class:`MultiLabelHead` on embeddings ``x`` and each example's label list."""
    if len(label_sets) != len(x):
        raise TrainingDataError("inputs and labels differ in length")
    labels = sorted({label for chosen in label_sets for label in chosen})
    if len(labels) < 2:
        raise TrainingDataError("at least 2 distinct labels are needed to train a multilabel task")
    y = indicator(label_sets, labels)
    counts = dict(zip(labels, (int(v) for v in y.sum(axis=0)), strict=True))
    metrics: dict[str, Any] = {
        "kind": "multilabel",
        "head": MultiLabelHead.kind,
        "examples_per_label": counts,
        "warnings": [],
    }
    always = [label for label, n in counts.items() if n == len(y)]
    if always:
        metrics["warnings"].append(f"Labels on every example carry no information and are always predicted: {always}.")
    if len(y) < MIN_CV_EXAMPLES:
        head = MultiLabelHead(labels, c=GRID_C[len(GRID_C) // 2]).fit(x, y)
        metrics.update(evaluation="train", too_small_to_fold=True, selected={"c": head.c}, **_f1s(y, head.predict(x)))
        metrics["warnings"].append(
            f"Fewer than {MIN_CV_EXAMPLES} examples: nothing was cross-validated, the F1 shown is on the training "
            "examples."
        )
        return FitResult(head=head, metrics=metrics)

    splits = _splits(len(y), folds, seed)
    oof = {c: np.zeros(y.shape, dtype=np.float64) for c in GRID_C}
    for train, test in splits:
        for c in GRID_C:
            oof[c][test] = MultiLabelHead(labels, c=c).fit(x[train], y[train]).predict_proba(x[test])
    candidates = [{"params": {"c": c}, "log_loss": _bce(y, oof[c]), **_f1s(y, oof[c] >= 0.5)} for c in GRID_C]
    best = min(candidates, key=lambda row: row["log_loss"])
    c = best["params"]["c"]
    proba = oof[c]
    pred = np.zeros(y.shape, dtype=bool)
    for train, test in splits:  # cross-fitted thresholds: each fold scored with thresholds tuned on the others
        pred[test] = proba[test] >= tune_thresholds(proba[train], y[train])
    scores = _f1s(y, pred)
    thresholds = tune_thresholds(proba, y)
    per_label_f1 = f1_score(y, pred, average=None, zero_division=0)
    baseline = {
        "method": "predict every label on every example (the best constant predictor)",
        **_f1s(y, np.ones_like(y)),
    }
    metrics.update(
        evaluation="cv",
        folds=len(splits),
        selected={"c": c},
        **scores,
        log_loss=best["log_loss"],
        micro_f1_at_0_5=best["micro_f1"],
        macro_f1_at_0_5=best["macro_f1"],
        per_label={
            label: {
                "f1": float(per_label_f1[j]),
                "threshold": round(float(thresholds[j]), 4),
                "examples": counts[label],
            }
            for j, label in enumerate(labels)
        },
        baseline=baseline,
        candidates=candidates,
    )
    if scores["micro_f1"] <= baseline["micro_f1"]:
        metrics["warnings"].append(
            f"The head did not beat predicting every label: cross-validated micro-F1 {_pct(scores['micro_f1'])} vs "
            f"{_pct(baseline['micro_f1'])} for the constant predictor. Transfer from this backbone does not help yet; "
            "add examples or try another backbone."
        )
    head = MultiLabelHead(labels, c=c).fit(x, y)
    head.thresholds = thresholds
    return FitResult(head=head, metrics=metrics, oof_proba=proba, oof_pred=pred)


def _regression_scores(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    return {
        "mae": float(mean_absolute_error(y, pred)),
        "rmse": float(np.sqrt(np.mean((y - pred) ** 2))),
        "r2": float(r2_score(y, pred)),
    }


@single_threaded_blas
def fit_regression(x: np.ndarray, values: Sequence[float], *, folds: int = 5, seed: int = 0) -> FitResult:
    """Fit a :class:`RidgeHead` on embeddings ``x`` and each example's target number."""
    y = np.asarray(values, dtype=np.float64)
    if y.shape != (len(x),):
        raise TrainingDataError("inputs and targets differ in length")
    if not np.isfinite(y).all():
        raise TrainingDataError("regression targets must be finite numbers")
    if len(set(y.tolist())) < 2:
        raise TrainingDataError("at least 2 distinct target values are needed to train a regression task")
    summary = {"mean": float(y.mean()), "std": float(y.std()), "min": float(y.min()), "max": float(y.max())}
    metrics: dict[str, Any] = {
        "kind": "regression",
        "head": RidgeHead.kind,
        "examples": len(y),
        "target": summary,
        "warnings": [],
    }
    if len(y) < MIN_CV_EXAMPLES:
        head = RidgeHead(alpha=GRID_ALPHA[len(GRID_ALPHA) // 2]).fit(x, y)
        metrics.update(
            evaluation="train",
            too_small_to_fold=True,
            selected={"alpha": head.alpha},
            **_regression_scores(y, head.predict_values(x)),
        )
        metrics["warnings"].append(
            f"Fewer than {MIN_CV_EXAMPLES} examples: nothing was cross-validated, the errors shown are on the training "
            "examples."
        )
        return FitResult(head=head, metrics=metrics)

    splits = _splits(len(y), folds, seed)
    oof = {a: np.zeros(len(y)) for a in GRID_ALPHA}
    mean_pred = np.zeros(len(y))
    for train, test in splits:
        mean_pred[test] = y[train].mean()
        for a in GRID_ALPHA:
            oof[a][test] = RidgeHead(alpha=a).fit(x[train], y[train]).predict_values(x[test])
    candidates: list[dict[str, Any]] = [{"params": {"alpha": a}, **_regression_scores(y, oof[a])} for a in GRID_ALPHA]
    best = min(candidates, key=lambda row: row["rmse"])
    baseline = {"method": "predict the mean target of the training folds", **_regression_scores(y, mean_pred)}
    metrics.update(
        evaluation="cv", folds=len(splits), selected=best["params"],
        **{k: best[k] for k in ("mae", "rmse", "r2")}, baseline=baseline, candidates=candidates,
    )
    if best["mae"] >= baseline["mae"]:
        metrics["warnings"].append(
            f"The head did not beat predicting the mean: cross-validated MAE {best['mae']:.4g} vs "
            f"{baseline['mae']:.4g} "
            "for the mean. Transfer from this backbone does not help yet; add examples or try another backbone."
        )
    head = RidgeHead(alpha=best["params"]["alpha"]).fit(x, y)
    return FitResult(head=head, metrics=metrics, oof_pred=oof[best["params"]["alpha"]])
