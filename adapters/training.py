"""Fit a head with cross-validated selection, calibration and metrics.

This is the code the service's training jobs run, and the code the quality benchmarks run.

Every head kind the inputs allow is cross-validated on the *same* stratified folds: the heads on
frozen embeddings (``linear``, ``prototype``), the from-scratch ``baseline`` (TF-IDF + logistic
regression, no backbone) and the ``hybrid`` (both feature sets in one logistic regression). Each
kind's hyper-parameters are chosen by CV; ``head="auto"`` then serves the kind CV scores best, a
pinned kind is served as asked. All candidates' scores are reported, a warning says so in words
when the no-transfer baseline beats transfer, and temperature scaling is fitted on the served
kind's out-of-fold probabilities when it lowers the expected calibration error.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

import numpy as np
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import StratifiedKFold
from threadpoolctl import threadpool_limits

from . import diagnostics
from .calibration import apply_temperature, calibrate, nll
from .encoding import encode_labels
from .heads import EMBEDDING, HEADS, RAW, TRANSFER_HEADS, Head
from .heads.features import FEATURIZERS, FOR_MODALITY

P = ParamSpec("P")
R = TypeVar("R")
AUTO = "auto"
# Hyper-parameter grids, searched by CV. Embeddings and TF-IDF rows are L2-normalised, so useful
# inverse-regularisation strengths for the logistic regressions are large.
GRIDS: dict[str, list[dict[str, float]]] = {
    "linear": [{"c": c} for c in (0.5, 2.0, 8.0, 32.0, 128.0)],
    "prototype": [{"scale": s} for s in (5.0, 10.0, 20.0, 40.0)],
    "baseline": [{"c": c} for c in (8.0, 32.0, 128.0)],
    "hybrid": [{"c": c, "weight_embedding": w} for c in (8.0, 32.0) for w in (0.5, 1.0, 2.0)],
}
# What head="auto" chooses among, in order of preference when CV cannot tell them apart (within one
# example): the hybrid uses the most information, then transfer alone, then no transfer.
AUTO_HEADS = ("hybrid", "linear", "baseline", "prototype")
# Head "auto" on a text task with fewer than PRIOR_BELOW_PER_LABEL examples in some label: there the candidates'
# CV accuracies differ by less than their noise, and picking the best by a hair lost up to 1.6 pt against a plain
# logistic regression (docs/quality.md, "The floor per run"). Each kind then keeps its default grid entry, and the
# linear head is served, unless another entry or transfer kind is right on clearly more examples: by more than PRIOR_Z
# paired standard errors of the per-example CV correctness (the from-scratch baseline, as without the prior, where it
# is right on more than one example more).
PRIOR_BELOW_PER_LABEL = 16
PRIOR_Z = 2.0
DEFAULT_PARAMS: dict[str, dict[str, float]] = {
    "linear": {"c": 2.0},
    "prototype": {"scale": 20.0},
    "baseline": {"c": 32.0},
    "hybrid": {"c": 8.0, "weight_embedding": 2.0},
}
HEAD_NAMES = {
    "linear": "logistic regression on the frozen embeddings",
    "prototype": "nearest class centroid on the frozen embeddings",
    "baseline": (
        "logistic regression on from-scratch features of the raw inputs, no pretrained backbone: TF-IDF for "
        "text, raw pixels for images, MFCC summaries for audio"
    ),
    "hybrid": "frozen embeddings and from-scratch features in one logistic regression",
}

log_loss = nll  # kept for callers of the earlier name


class TrainingDataError(ValueError):
    """The examples cannot train a head (e.g. fewer than two labels)."""


@dataclass
class FitResult:
    head: Head
    metrics: dict[str, Any] = field(default_factory=dict)
    oof_proba: np.ndarray | None = None  # served kind's out-of-fold probabilities (uncalibrated), CV only
    # multilabel / regression (adapters/kinds.py), CV only: out-of-fold predictions as the served head
    # decides them — 0/1 label decisions (thresholds cross-fitted), or values
    oof_pred: np.ndarray | None = None

    @property
    def warnings(self) -> list[str]:
        return self.metrics.setdefault("warnings", [])


def _make(kind: str, classes: list[str], params: dict[str, float], modality: str, features: Any = None) -> Head:
    cls = HEADS[kind]
    if RAW in cls.consumes:
        return cls(classes, **params, modality=modality, features=features)
    return cls(classes, **params)


def _take(raw: Sequence[str] | None, idx: np.ndarray) -> list[str] | None:
    return None if raw is None else [raw[i] for i in idx]


def _scores(y: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    pred = proba.argmax(axis=1)
    return {
        "accuracy": float(accuracy_score(y, pred)),
        "macro_f1": float(f1_score(y, pred, average="macro")),
        "log_loss": nll(y=y, proba=proba),
    }


def available_heads(has_embeddings: bool, has_raw: bool, modality: str = "text") -> list[str]:
    """Head kinds the given inputs can train (from-scratch features exist only for some modalities)."""
    have = ({EMBEDDING} if has_embeddings else set()) | ({RAW} if has_raw and modality in FOR_MODALITY else set())
    return [kind for kind, cls in HEADS.items() if cls.consumes <= have]


def cross_validate(
    kinds: Sequence[str], classes: list[str], x: np.ndarray | None, y: np.ndarray, raw: Sequence[str] | None,
    splitter: StratifiedKFold, modality: str = "text",
) -> dict[str, list[np.ndarray]]:
    """Out-of-fold probabilities of every (kind, grid entry), all on the same folds. The raw-input
    featurizer (e.g. the TF-IDF vocabulary) is fitted once per fold, on that fold's training part."""
    proba = {kind: [np.zeros((len(y), len(classes))) for _ in GRIDS[kind]] for kind in kinds}
    needs_raw = any(RAW in HEADS[k].consumes for k in kinds)
    for train, test in splitter.split(np.zeros(len(y)), y):
        raw_train, raw_test = _take(raw, train), _take(raw, test)
        features = FEATURIZERS[FOR_MODALITY[modality]]().fit(raw_train) if needs_raw and raw_train is not None else None
        x_train = None if x is None else x[train]
        x_test = None if x is None else x[test]
        for kind in kinds:
            for i, params in enumerate(GRIDS[kind]):
                head = _make(kind, classes, params, modality, features).fit(x_train, y[train], raw=raw_train)
                proba[kind][i][test] = head.predict_proba(x_test, raw=raw_test)
    return proba


def clearly_better(a: np.ndarray, b: np.ndarray, z: float = PRIOR_Z) -> bool:
    """Whether per-example correctness ``a`` beats ``b`` (same examples) by more than ``z`` paired standard errors."""
    d = a.astype(float) - b.astype(float)
    if len(d) < 2:
        return False
    mean = float(d.mean())
    return mean > 0 and mean > z * float(d.std(ddof=1)) / np.sqrt(len(d))


def uses_prior(kind: str, modality: str, counts: Counter[str]) -> bool:
    """Whether head ``auto`` chooses with the prior towards default entries and the linear head (see PRIOR_Z)."""
    return kind == AUTO and modality == "text" and min(counts.values()) < PRIOR_BELOW_PER_LABEL


def choose_with_prior(
    kinds: Sequence[str], correct: dict[str, list[np.ndarray]], top: dict[str, int]
) -> tuple[str, dict[str, int]]:
    """The served kind and each kind's grid entry under the prior: an entry other than the kind's default, or the
    hybrid or prototype head instead of ``linear``, only where its out-of-fold correctness is clearly better
    (:func:`clearly_better`); the from-scratch baseline where it is right on more than one example more (negative
    transfer is not held to the prior). ``top``: each kind's best entry by CV; ``kinds``: the choosable kinds
    (``linear`` among them)."""
    entry = {}
    for kd, best in top.items():
        default = GRIDS[kd].index(DEFAULT_PARAMS[kd])
        entry[kd] = best if clearly_better(correct[kd][best], correct[kd][default]) else default
    served = "linear"
    for kd in ("hybrid", "prototype"):
        if kd in kinds and clearly_better(correct[kd][entry[kd]], correct[served][entry[served]]):
            served = kd
    # the negative-transfer guard as without the prior: the from-scratch baseline is served where it is right on
    # more than one example more than the transfer head chosen
    if "baseline" in kinds:
        ahead = int(correct["baseline"][entry["baseline"]].sum()) - int(correct[served][entry[served]].sum())
        if ahead > 1:
            served = "baseline"
    return served, entry


def choose(kinds: Sequence[str], heads: dict[str, dict[str, Any]], n: int) -> str:
    """The kind with the best CV accuracy; kinds within one example of the best count as tied, and a
    tie goes to the kind listed first in ``kinds`` (CV on a few dozen examples cannot resolve less)."""
    best = max(heads[k]["accuracy"] for k in kinds)
    return next(k for k in kinds if heads[k]["accuracy"] >= best - 1.0 / n - 1e-12)


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def transfer_warnings(heads: dict[str, dict[str, Any]], served: str) -> list[str]:
    """Plain-words warnings when the no-transfer baseline beats every head on frozen embeddings."""
    transfer = {k: v for k, v in heads.items() if k in TRANSFER_HEADS}
    if "baseline" not in heads or not transfer:
        return []
    best_kind = max(transfer, key=lambda k: transfer[k]["accuracy"])
    base, best = heads["baseline"]["accuracy"], transfer[best_kind]["accuracy"]
    if base <= best:
        return []
    served_note = (
        f"This version serves the '{served}' head, which does not rely on transfer alone."
        if served not in TRANSFER_HEADS
        else f"This version serves the '{served}' head as pinned; head 'auto' would serve the best-scoring one."
    )
    return [
        f"Transfer from the pretrained backbone did not help this task: the from-scratch baseline "
        f"({HEAD_NAMES['baseline']}) scored {_pct(base)} accuracy in cross-validation, better than the best head "
        f"on the frozen embeddings ('{best_kind}', {_pct(best)}). {served_note}"
    ]


def plots(
    kind: str, best: dict[str, Any], classes: list[str], x: np.ndarray | None, y: np.ndarray, raw: Sequence[str] | None,
    oof_proba: np.ndarray, temperature: float, splitter: StratifiedKFold, modality: str, seed: int,
) -> dict[str, Any]:
    """The dashboard's figures (see adapters/diagnostics.py), from the served kind's CV predictions."""
    pred = oof_proba.argmax(axis=1)

    def fit_predict(train: np.ndarray, test: np.ndarray) -> np.ndarray:
        head = _make(kind, classes, best["params"], modality).fit(
            None if x is None else x[train], y[train], raw=_take(raw, train)
        )
        return head.predict_proba(None if x is None else x[test], raw=_take(raw, test)).argmax(axis=1)

    return {
        "confusion_matrix": diagnostics.confusion(y, pred, classes),
        "per_label": diagnostics.per_label(y, pred, classes),
        "reliability": diagnostics.reliability(
            apply_temperature(oof_proba, temperature) if temperature != 1.0 else oof_proba, y
        ),
        "learning_curve": {
            **diagnostics.learning_curve(fit_predict, y, splitter, best["accuracy"], seed),
            "head": kind,
            "params": best["params"],
        },
    }


def single_threaded_blas(fn: Callable[P, R]) -> Callable[P, R]:
    """Run ``fn`` with BLAS on one thread: head fitting is many small problems, and OpenBLAS threads
    fighting over a shared CPU made the logistic regressions 20-40x slower here."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with threadpool_limits(limits=1, user_api="blas"):
            return fn(*args, **kwargs)

    return wrapper


@single_threaded_blas
def fit_head(
    kind: str,
    x: np.ndarray | None,
    labels: Sequence[str],
    *,
    raw: Sequence[str] | None = None,
    modality: str = "text",
    folds: int = 5,
    seed: int = 0,
    candidates: Sequence[str] | None = None,
) -> FitResult:
    """Cross-validate every head kind the inputs allow on the same folds, serve ``kind`` (or, for
    ``"auto"``, the best in CV), calibrate it, fit it on all data and report metrics.

    ``x`` are the frozen embeddings (or None), ``raw`` the raw inputs (or None: no baseline/hybrid).
    ``candidates`` limits which kinds are evaluated (default: all available; the benchmark uses it).
    With fewer than two examples in some label there is nothing to fold: the head is fitted with
    default parameters and metrics are training-set figures, flagged as such.
    """
    if len(labels) != (len(x) if x is not None else len(raw or [])):
        raise TrainingDataError("inputs and labels differ in length")
    if raw is not None and x is not None and len(raw) != len(x):
        raise TrainingDataError("embeddings and raw inputs differ in length")
    available = available_heads(x is not None, raw is not None, modality)
    if candidates is not None:
        available = [k for k in available if k in candidates]
    if kind != AUTO and kind not in available:
        known = sorted(HEADS) + [AUTO]
        raise TrainingDataError(
            f"unknown head {kind!r}; choose one of {known}"
            if kind not in HEADS
            else f"head {kind!r} cannot be trained on these inputs"
        )
    classes, y = encode_labels(labels)
    if len(classes) < 2:
        raise TrainingDataError("at least 2 distinct labels are needed to train a classifier")
    choosable = [k for k in AUTO_HEADS if k in available] if kind == AUTO else [kind]
    if not choosable:
        raise TrainingDataError("no head can be trained on these inputs")

    counts = Counter(labels)
    k = min(folds, min(counts.values()))
    metrics: dict[str, Any] = {
        "examples_per_label": dict(sorted(counts.items())),
        "majority_baseline_accuracy": max(counts.values()) / len(labels),
        "selection": "auto" if kind == AUTO else "pinned",
        "warnings": [],
    }
    if k < 2:
        served = choosable[0]
        params = GRIDS[served][len(GRIDS[served]) // 2]
        head = _make(served, classes, params, modality).fit(x, y, raw=raw)
        pred = head.predict_proba(x, raw=raw).argmax(axis=1)
        metrics.update(
            evaluation="train", too_small_to_fold=True, head=served, selected=params,
            accuracy=float(accuracy_score(y, pred)), macro_f1=float(f1_score(y, pred, average="macro")),
        )
        metrics["warnings"].append(
            "Some label has a single example, so nothing could be cross-validated: the accuracy shown is on the "
            "training examples and says little. Add at least 2 examples per label (5 or more is better)."
        )
        return FitResult(head=head, metrics=metrics)

    evaluated = sorted(set(available) | set(choosable), key=list(HEADS).index)
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    oof = cross_validate(evaluated, classes, x, y, raw, splitter, modality)
    grid_rows, best_of, rows_of = [], {}, {}
    for kd in evaluated:
        rows: list[dict[str, Any]] = [
            {"head": kd, "params": p, **_scores(y, proba)} for p, proba in zip(GRIDS[kd], oof[kd], strict=True)
        ]
        grid_rows.extend(rows)
        rows_of[kd] = rows
        i = max(range(len(rows)), key=lambda j: (rows[j]["accuracy"], -rows[j]["log_loss"]))
        best_of[kd] = (i, rows[i])
    prior = uses_prior(kind, modality, counts) and "linear" in choosable
    if prior:
        correct = {kd: [p.argmax(axis=1) == y for p in oof[kd]] for kd in evaluated}
        served, entry = choose_with_prior(choosable, correct, {kd: i for kd, (i, _) in best_of.items()})
        best_of = {kd: (i, rows_of[kd][i]) for kd, i in entry.items()}
    if kind != AUTO:
        metrics["selection_rule"] = "pinned"
    elif prior:
        metrics["selection_rule"] = (
            f"prior: fewer than {PRIOR_BELOW_PER_LABEL} examples in some label, so default settings and the linear "
            f"head unless CV shows clearly better (by more than {PRIOR_Z:g} standard errors)"
        )
    else:
        metrics["selection_rule"] = "best cross-validated accuracy"
    heads = {
        kd: {key: row[key] for key in ("params", "accuracy", "macro_f1", "log_loss")}
        for kd, (_, row) in best_of.items()
    }
    if not prior:
        served = choose(choosable, heads, len(y))
    index, best = best_of[served]
    oof_proba = oof[served][index]
    calibration = calibrate(oof_proba, y)
    metrics.update(
        evaluation="cv", folds=k, head=served, selected=best["params"], accuracy=best["accuracy"],
        macro_f1=best["macro_f1"], log_loss=calibration.log_loss_calibrated, heads=heads, candidates=grid_rows,
        calibration=calibration.as_dict(), ece=calibration.ece_calibrated,
    )
    metrics["warnings"].extend(transfer_warnings(heads, served))
    metrics.update(
        plots(served, best, classes, x, y, raw, oof_proba, calibration.temperature, splitter, modality, seed)
    )
    head = _make(served, classes, best["params"], modality).fit(x, y, raw=raw)
    if calibration.applied:
        head.temper(calibration.temperature)
    return FitResult(head=head, metrics=metrics, oof_proba=oof_proba)


@single_threaded_blas
def refit_predict(
    kind: str, params: dict[str, float], x: np.ndarray | None, labels: Sequence[str], raw: Sequence[str] | None,
    train: np.ndarray, test: np.ndarray, modality: str = "text",
) -> list[str]:
    """The frozen heads' choice (``kind`` with its CV-chosen ``params``) fitted on the examples at ``train``
    only, and its predicted label for each example at ``test`` — so that another model held out on those
    same examples (the fine-tuned head, service/pipeline.py) is compared with it on equal terms."""
    classes, y = encode_labels(labels)
    head = _make(kind, classes, params, modality).fit(
        None if x is None else x[train], y[train], raw=_take(raw, train)
    )
    pred = head.predict_proba(None if x is None else x[test], raw=_take(raw, test)).argmax(axis=1)
    return [classes[i] for i in pred]
