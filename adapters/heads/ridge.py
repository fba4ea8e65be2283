"""Regression head: ridge regression of a number on frozen embeddings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from sklearn.linear_model import Ridge

from .base import EMBEDDING, Array, StoredHead, embeddings, register

VALUE = "value"  # the head's one output column


@register("regression")
class RidgeHead(StoredHead):
    """``fit(x, y)`` takes ``y`` as (n,) finite numbers; ``predict_values`` returns (n,) values (a
    :class:`~.base.ValueHead`: it has no probabilities)."""

    kind: ClassVar[str] = "ridge"
    consumes: ClassVar[frozenset[str]] = frozenset({EMBEDDING})
    exportable: ClassVar[bool] = True
    settings: ClassVar[tuple[str, ...]] = ("alpha",)
    arrays: ClassVar[tuple[Array, ...]] = (Array("weight", (1, "dim")), Array("bias", (1,)))

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

    def predict_values(self, x: np.ndarray | None, raw: Sequence[str] | None = None) -> np.ndarray:
        """Values (n,)."""
        return (embeddings(self.kind, x).astype(np.float32, copy=False) @ self.weight.T + self.bias)[:, 0]

    def predict_proba(self, x: np.ndarray | None, raw: Sequence[str] | None = None) -> np.ndarray:
        raise TypeError("a regression head has no probabilities: its answer is predict_values(x)")

    def temper(self, temperature: float) -> None:
        """Not used: regression has no probabilities to calibrate."""

    def torch_module(self) -> Any:
        """This head as a torch module, embeddings → values (n,) (for ONNX export)."""
        from .torch_forms import ValueForm

        return ValueForm(self.weight, self.bias)
