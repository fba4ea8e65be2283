"""Regression: a finite number per example; ridge regression on the embeddings
(adapters/kinds/fitting.py); a prediction is the value."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..heads import Head
from ..selection import Decision, compare_errors_on_unseen
from ..training import FitResult
from .base import TaskKind, register_kind, shape
from .fitting import fit_regression


@dataclass(frozen=True)
class RegressionPrediction:
    value: float

    def as_json(self) -> dict[str, Any]:
        return {"value": self.value}


@register_kind
class Regression(TaskKind):
    name = "regression"
    declares_labels = False

    def problem(self, label: Any) -> str | None:
        if isinstance(label, bool) or not isinstance(label, int | float):
            return f"a regression task takes a number, got {shape(label)}"
        try:
            finite = math.isfinite(float(label))
        except OverflowError:  # an int beyond float range
            finite = False
        return None if finite else f"the target must be a finite number, got {str(label)[:40]}"

    def encode(self, label: Any) -> str:
        return repr(float(label))  # Python's shortest round-tripping repr of a float: "3.5"

    def decode(self, stored: str) -> Any:
        return float(stored)

    def names(self, stored: Sequence[str]) -> list[str]:
        return []  # targets are numbers, not label names

    def per_label(self, counts: dict[str, int]) -> dict[str, int]:
        return {"value": sum(counts.values())} if counts else {}  # all examples count under "value"

    def examples_problem(self, labels: Sequence[Any], declared: Sequence[str] | None) -> str | None:
        if len(set(labels)) < 2:
            return f"at least 2 distinct target values are needed; got {sorted(set(labels))}"
        return None

    def fit(
        self, x: np.ndarray, labels: Sequence[Any], *, head: str, raw: Sequence[str] | None, modality: str,
        folds: int, seed: int,
    ) -> FitResult:
        return fit_regression(x, labels, folds=folds, seed=seed)

    def comparable(self, result: FitResult) -> bool:
        return result.oof_pred is not None

    def compare(
        self, active: Head, vectors: np.ndarray | None, raw: Sequence[str], truth: Sequence[str], result: FitResult,
        unseen: np.ndarray, active_number: int,
    ) -> Decision:
        values = self.decode_all(truth)
        active_values = active.predict_values(vectors).tolist()  # type: ignore[attr-defined]
        new_values = result.oof_pred[unseen].tolist()  # type: ignore[index]
        return compare_errors_on_unseen(values, new_values, active_values, active_number)

    def answer(self, prediction: Any) -> Any:
        return prediction.value

    def feedback_metrics(self, predicted: Sequence[Any], truth: Sequence[Any]) -> dict[str, float | None]:
        errors = [abs(float(p) - float(t)) for p, t in zip(predicted, truth, strict=True)]
        return {"accuracy": None, "mean_abs_error": sum(errors) / len(errors) if errors else None}

    def format(self, head: Head, output: np.ndarray, top_k: int | None) -> list[Any]:
        return [RegressionPrediction(float(v)) for v in np.asarray(output).reshape(-1)]  # values (n,)
