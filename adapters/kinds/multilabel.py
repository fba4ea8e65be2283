"""Multi-label: a non-empty list of distinct label strings per example; one sigmoid per label with
cross-validated thresholds (adapters/kinds/fitting.py); a prediction is the chosen labels and the top-k
labels' probabilities against their thresholds."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..heads import Head
from ..selection import Decision, compare_on_unseen
from ..training import FitResult
from .base import LABEL_CHARS, TaskKind, label_set_problem, register_kind, shape, string_problem
from .fitting import fit_multilabel


@dataclass(frozen=True)
class LabelScore:
    label: str
    probability: float
    threshold: float
    chosen: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "label": self.label, "probability": self.probability, "threshold": self.threshold, "chosen": self.chosen
        }


@dataclass(frozen=True)
class MultiLabelPrediction:
    labels: list[str]  # chosen (probability >= threshold), most probable first
    scores: list[LabelScore]  # top_k by probability

    def as_json(self) -> dict[str, Any]:
        return {"labels": self.labels, "scores": [score.as_json() for score in self.scores]}


def multilabel_predictions(head: Head, proba: np.ndarray, top_k: int | None) -> list[MultiLabelPrediction]:
    labels, thresholds = head.labels, head.thresholds  # type: ignore[attr-defined]
    k = len(labels) if top_k is None else min(top_k, len(labels))
    out = []
    for p in proba:
        order = np.argsort(-p, kind="stable")
        # thresholds are float32 grid points (0.05, 0.075, ...): shown rounded, which compares the same
        scores = [
            LabelScore(labels[j], float(p[j]), round(float(thresholds[j]), 4), bool(p[j] >= thresholds[j]))
            for j in order
        ]
        out.append(MultiLabelPrediction(labels=[sc.label for sc in scores if sc.chosen], scores=scores[:k]))
    return out


@register_kind
class MultiLabel(TaskKind):
    name = "multilabel"

    def problem(self, label: Any) -> str | None:
        if not isinstance(label, list):
            return f"a multilabel task takes a list of label strings, got {shape(label)}"
        if not label:
            return "the label list is empty; give each example at least one label"
        problem = next(filter(None, (string_problem(item) for item in label)), None)
        if problem:
            return f"in the label list: {problem}"
        if len(set(label)) != len(label):
            return f"the label list repeats a label: {label}"
        if len(json.dumps(sorted(label), ensure_ascii=False)) > LABEL_CHARS:
            return f"the label list is longer than {LABEL_CHARS} characters as JSON"
        return None

    def encode(self, label: Any) -> str:
        return json.dumps(sorted(label), ensure_ascii=False)  # the sorted list as JSON: ["business","money"]

    def decode(self, stored: str) -> Any:
        return json.loads(stored)

    def names(self, stored: Sequence[str]) -> list[str]:
        return [label for one in stored for label in json.loads(one)]

    def per_label(self, counts: dict[str, int]) -> dict[str, int]:
        out: Counter[str] = Counter()  # an example counts once for each of its labels
        for stored, n in counts.items():
            for label in json.loads(stored):
                out[label] += n
        return dict(sorted(out.items()))

    def examples_problem(self, labels: Sequence[Any], declared: Sequence[str] | None) -> str | None:
        return label_set_problem({label for chosen in labels for label in chosen}, declared)

    def fit(
        self, x: np.ndarray, labels: Sequence[Any], *, head: str, raw: Sequence[str] | None, modality: str,
        folds: int, seed: int,
    ) -> FitResult:
        return fit_multilabel(x, labels, folds=folds, seed=seed)

    def comparable(self, result: FitResult) -> bool:
        return result.oof_pred is not None

    def compare(
        self, active: Head, vectors: np.ndarray | None, raw: Sequence[str], truth: Sequence[str], result: FitResult,
        unseen: np.ndarray, active_number: int,
    ) -> Decision:
        def as_sets(decisions: np.ndarray, names: list[str]) -> list[str]:  # right = exactly the example's label set
            return [self.encode([names[j] for j in np.flatnonzero(row)]) for row in decisions]

        active_pred = as_sets(active.predict(vectors), active.labels)  # type: ignore[attr-defined]
        new_pred = as_sets(result.oof_pred[unseen], result.head.labels)  # type: ignore[index]
        return compare_on_unseen(truth, new_pred, active_pred, active_number)

    def uncertainty_proba(self, output: np.ndarray) -> np.ndarray | None:
        # each label is its own yes/no: an input is as uncertain as its least certain label
        p = np.asarray(output, dtype=np.float64)
        closest = p[np.arange(len(p)), np.abs(p - 0.5).argmin(axis=1)]
        return np.stack([closest, 1.0 - closest], axis=1)

    def answer(self, prediction: Any) -> Any:
        return list(prediction.labels)  # exact-set accuracy: every chosen label right and none missing

    def format(self, head: Head, output: np.ndarray, top_k: int | None) -> list[Any]:
        return multilabel_predictions(head, output, top_k)

    def manifest(self, head: Head) -> dict[str, Any]:
        # a label is predicted when its probability reaches its threshold
        thresholds = head.thresholds  # type: ignore[attr-defined]
        return {"thresholds": dict(zip(head.labels, (float(t) for t in thresholds), strict=True))}
