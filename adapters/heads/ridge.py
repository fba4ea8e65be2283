"""Regression head: ridge regression of a number on frozen embeddings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from sklearn.linear_model import Ridge

from .base import EMBEDDING, embeddings, register

VALUE = "value"  # the head's one output column


@register("regression")
class RidgeHead:
    """``fit(x, y)`` takes ``y`` as (n,) finite numbers. ``predict`` returns (n,) values;
    ``predict_proba`` returns them as an (n, 1) column so the batcher can carry them like probabilities
    (they are not probabilities)."""

    kind: ClassVar[str] = "ridge"
    consumes: ClassVar[frozenset[str]] = frozenset({EMBEDDING})
    exportable: ClassVar[bool] = True

    def __init__(self, labels: list[str] | None = None, alpha: float = 1.0) -> None:
        self.labels = [VALUE]
        self.alpha = float(alpha)
        self.weight = np.zeros((1, 0), dtype=np.float32)
        self.bias = np.zeros(1, dtype=np.float32)

    def fit(self, x: np.ndarray | None, y: np.ndarray, raw: Sequence[str] | None = None) -> RidgeHead:
        x = embeddings(self.kind, x)
        y = np.asarray(y, dtype=np.float64)
        if y.shape != (len(x),) or not np.isfinite(y).all():
            raise ValueError("regression targets must be (n,) finite numbers")
        model = Ridge(alpha=self.alpha).fit(x.astype(np.float64), y)
        self.weight = model.coef_.reshape(1, -1).astype(np.float32)
        self.bias = np.array([model.intercept_], dtype=np.float32)
        return self

    def predict_proba(self, x: np.ndarray | None, raw: Sequence[str] | None = None) -> np.ndarray:
        return embeddings(self.kind, x).astype(np.float32, copy=False) @ self.weight.T + self.bias

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.predict_proba(x)[:, 0]

    def temper(self, temperature: float) -> None:
        """Not used: regression has no probabilities to calibrate."""

    def torch_module(self) -> Any:
        """This head as a torch module, embeddings → values (n,) (for ONNX export)."""
        from .torch_forms import ValueForm

        return ValueForm(self.weight, self.bias)

    def tensors(self) -> dict[str, np.ndarray]:
        return {"weight": self.weight, "bias": self.bias}

    def params(self) -> dict[str, Any]:
        return {"alpha": self.alpha}

    @classmethod
    def restore(cls, labels: list[str], params: dict[str, Any], tensors: dict[str, np.ndarray]) -> RidgeHead:
        head = cls(labels, alpha=params["alpha"])
        head.weight, head.bias = tensors["weight"], tensors["bias"]
        if head.weight.ndim != 2 or head.weight.shape[0] != 1 or head.bias.shape != (1,):
            raise ValueError("ridge head tensors have the wrong shapes")
        return head
