"""Multinomial logistic regression on frozen embeddings (the feature-extraction head)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from sklearn.linear_model import LogisticRegression

from .base import EMBEDDING, Array, StoredHead, embeddings, register, softmax

SPARSE_TOL = 1e-4  # sklearn's default; the wide sparse problems (TF-IDF) need no tighter fit


def fit_logistic(
    x: Any, y: np.ndarray, n_labels: int, c: float, tol: float = 1e-6
) -> tuple[np.ndarray, np.ndarray]:
    """Fit multinomial logistic regression on ``x`` (dense or sparse); return float32 ``(weight
    (n_labels, dim), bias (n_labels,))`` with one row per label, also for labels absent from ``y``."""
    model = LogisticRegression(C=c, max_iter=2000, tol=tol)
    model.fit(x, y)
    weight = np.zeros((n_labels, x.shape[1]), dtype=np.float64)
    bias = np.full(n_labels, -1e4, dtype=np.float64)  # labels absent from this fit score ~0
    if len(model.classes_) == 2:  # sklearn keeps one row for binary problems
        weight[model.classes_[1]], bias[model.classes_[1]] = model.coef_[0] / 2, model.intercept_[0] / 2
        weight[model.classes_[0]], bias[model.classes_[0]] = -model.coef_[0] / 2, -model.intercept_[0] / 2
    else:
        weight[model.classes_], bias[model.classes_] = model.coef_, model.intercept_
    return weight.astype(np.float32), bias.astype(np.float32)


@register(rank=0)
class LinearHead(StoredHead):
    kind: ClassVar[str] = "linear"
    consumes: ClassVar[frozenset[str]] = frozenset({EMBEDDING})
    exportable: ClassVar[bool] = True
    settings: ClassVar[tuple[str, ...]] = ("c",)
    arrays: ClassVar[tuple[Array, ...]] = (Array("weight", ("labels", "dim")), Array("bias", ("labels",)))

    def __init__(self, labels: list[str], c: float = 10.0) -> None:
        self.labels = list(labels)
        self.c = float(c)
        self.weight = np.zeros((len(labels), 0), dtype=np.float32)
        self.bias = np.zeros(len(labels), dtype=np.float32)

    def fit(self, x: np.ndarray | None, y: np.ndarray, raw: Sequence[str] | None = None) -> LinearHead:
        x = embeddings(self.kind, x)
        self.weight, self.bias = fit_logistic(x, y, len(self.labels), self.c)
        return self

    def logits(self, x: np.ndarray) -> np.ndarray:
        return x.astype(np.float32, copy=False) @ self.weight.T + self.bias

    def predict_proba(self, x: np.ndarray | None, raw: Sequence[str] | None = None) -> np.ndarray:
        return softmax(self.logits(embeddings(self.kind, x)))

    def temper(self, temperature: float) -> None:
        self.weight, self.bias = self.weight / temperature, self.bias / temperature

    def softmax_affine(self) -> tuple[np.ndarray, np.ndarray]:
        """(weight, bias) such that ``predict_proba(x) == softmax(x @ weight.T + bias)``: lets the
        server apply the linear heads of a whole batch in one stacked product."""
        return self.weight, self.bias

    def torch_module(self) -> Any:
        """This head as a torch module, embeddings → probabilities (for ONNX export)."""
        from .torch_forms import LinearForm

        return LinearForm(self.weight, self.bias)
