"""Multi-label head: one independent logistic regression (sigmoid) per label on frozen embeddings,
with a decision threshold per label (tuned by cross-validation in :mod:`adapters.kinds`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from sklearn.linear_model import LogisticRegression

from .base import EMBEDDING, Array, StoredHead, embeddings, register

PRIOR_CLIP = 1e-3  # a label constant in the training data gets a constant probability within [clip, 1 - clip]


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # numerically stable for large |z|


@register("multilabel")
class MultiLabelHead(StoredHead):
    """``fit(x, y)`` takes ``y`` as an (n, labels) 0/1 indicator matrix; ``predict_proba`` returns each
    label's own probability (rows do not sum to 1); ``predict`` the 0/1 decisions at the thresholds."""

    kind: ClassVar[str] = "multilabel"
    consumes: ClassVar[frozenset[str]] = frozenset({EMBEDDING})
    exportable: ClassVar[bool] = True
    settings: ClassVar[tuple[str, ...]] = ("c",)
    arrays: ClassVar[tuple[Array, ...]] = (
        Array("weight", ("labels", "dim")), Array("bias", ("labels",)), Array("thresholds", ("labels",)),
    )

    def __init__(self, labels: list[str], c: float = 8.0) -> None:
        self.labels = list(labels)
        self.c = float(c)
        self.weight = np.zeros((len(labels), 0), dtype=np.float32)
        self.bias = np.zeros(len(labels), dtype=np.float32)
        self.thresholds = np.full(len(labels), 0.5, dtype=np.float32)

    def fit(self, x: np.ndarray | None, y: np.ndarray, raw: Sequence[str] | None = None) -> MultiLabelHead:
        x = embeddings(self.kind, x)
        y = np.asarray(y)
        if y.ndim != 2 or y.shape != (len(x), len(self.labels)):
            raise ValueError(
                f"multilabel targets must be an (n, {len(self.labels)}) indicator matrix, got {y.shape}"
            )
        weight = np.zeros((len(self.labels), x.shape[1]), dtype=np.float64)
        bias = np.zeros(len(self.labels), dtype=np.float64)
        for j in range(len(self.labels)):
            column = y[:, j].astype(np.int64)
            if column.min() == column.max():  # nothing to separate: the label's (clipped) frequency
                p = float(np.clip(column.mean(), PRIOR_CLIP, 1 - PRIOR_CLIP))
                bias[j] = np.log(p / (1 - p))
                continue
            model = LogisticRegression(C=self.c, max_iter=2000, tol=1e-6).fit(x, column)
            weight[j], bias[j] = model.coef_[0], model.intercept_[0]
        self.weight, self.bias = weight.astype(np.float32), bias.astype(np.float32)
        return self

    def predict_proba(self, x: np.ndarray | None, raw: Sequence[str] | None = None) -> np.ndarray:
        return sigmoid(embeddings(self.kind, x).astype(np.float32, copy=False) @ self.weight.T + self.bias)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.predict_proba(x) >= self.thresholds

    def temper(self, temperature: float) -> None:
        """Not used: the thresholds, not a temperature, calibrate the decisions."""

    def torch_module(self) -> Any:
        """This head as a torch module, embeddings → each label's probability (for ONNX export)."""
        from .torch_forms import SigmoidForm

        return SigmoidForm(self.weight, self.bias)
