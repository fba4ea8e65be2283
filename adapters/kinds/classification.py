"""Classification: one label string per example; softmax heads chosen by cross-validation (or pinned);
a prediction is the top-k labels with their probabilities."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..encoding import encode_labels
from ..heads import HEADS, Head
from ..selection import Decision, compare_on_unseen
from ..training import FitResult, fit_head
from .base import TaskKind, label_set_problem, register_kind, shape, string_problem

NAME = "classification"


@dataclass(frozen=True)
class Prediction:
    label: str
    score: float
    scores: dict[str, float]  # the top_k labels' probabilities, most probable first

    def as_json(self) -> dict[str, Any]:
        return {"label": self.label, "score": self.score, "scores": self.scores}


def top_predictions(labels: Sequence[str], proba: np.ndarray, top_k: int | None) -> list[Prediction]:
    k = len(labels) if top_k is None else min(top_k, len(labels))
    order = np.argsort(-proba, axis=1, kind="stable")[:, :k]
    return [
        Prediction(label=labels[row[0]], score=float(p[row[0]]), scores={labels[j]: float(p[j]) for j in row})
        for row, p in zip(order, proba, strict=True)
    ]


@register_kind
class Classification(TaskKind):
    name = NAME
    modalities = ("text", "image", "audio")
    pinnable_heads = tuple(HEADS)  # linear, prototype, baseline, hybrid, finetune
    chooses_backbone = True
    dataset_uploads = True

    def problem(self, label: Any) -> str | None:
        if not isinstance(label, str):
            return f"a classification task takes one label string, got {shape(label)}"
        return string_problem(label)

    def encode(self, label: Any) -> str:
        return str(label)

    def decode(self, stored: str) -> Any:
        return stored

    def names(self, stored: Sequence[str]) -> list[str]:
        return list(stored)

    def examples_problem(self, labels: Sequence[Any], declared: Sequence[str] | None) -> str | None:
        return label_set_problem(set(labels), declared)

    def transfer_targets(self, labels: Sequence[Any]) -> np.ndarray | None:
        return encode_labels(labels)[1]

    def fit(
        self, x: np.ndarray, labels: Sequence[Any], *, head: str, raw: Sequence[str] | None, modality: str,
        folds: int, seed: int,
    ) -> FitResult:
        return fit_head(head, x, labels, raw=raw, modality=modality, folds=folds, seed=seed)

    def answer(self, prediction: Any) -> Any:
        return prediction.label

    def uncertainty_proba(self, output: np.ndarray) -> np.ndarray | None:
        return output  # softmax probabilities

    def ood_groups(self, labels: Sequence[Any]) -> list[str] | None:
        return [str(label) for label in labels]

    def comparable(self, result: FitResult) -> bool:
        return result.oof_proba is not None

    def compare(
        self, active: Head, vectors: np.ndarray | None, raw: Sequence[str], truth: Sequence[str], result: FitResult,
        unseen: np.ndarray, active_number: int,
    ) -> Decision:
        active_pred = [active.labels[i] for i in active.predict_proba(vectors, raw=raw).argmax(axis=1)]
        assert result.oof_proba is not None  # comparable(): the comparison needs CV predictions
        new_pred = [result.head.labels[i] for i in result.oof_proba[unseen].argmax(axis=1)]
        return compare_on_unseen(truth, new_pred, active_pred, active_number)

    def format(self, head: Head, output: np.ndarray, top_k: int | None) -> list[Any]:
        return top_predictions(head.labels, output, top_k)
