"""Cosine nearest-class-centroid head: useful with 1–3 examples per label."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from .base import EMBEDDING, Array, StoredHead, embeddings, register, softmax


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


@register(rank=1)
class PrototypeHead(StoredHead):
    kind: ClassVar[str] = "prototype"
    consumes: ClassVar[frozenset[str]] = frozenset({EMBEDDING})
    exportable: ClassVar[bool] = True
    settings: ClassVar[tuple[str, ...]] = ("scale",)
    arrays: ClassVar[tuple[Array, ...]] = (Array("centroids", ("labels", "dim")),)

    def __init__(self, labels: list[str], scale: float = 20.0) -> None:
        self.labels = list(labels)
        self.scale = float(scale)  # softmax temperature over cosine similarities
        self.centroids = np.zeros((len(labels), 0), dtype=np.float32)

    def fit(self, x: np.ndarray | None, y: np.ndarray, raw: Sequence[str] | None = None) -> PrototypeHead:
        x = _normalise(embeddings(self.kind, x).astype(np.float64))
        centroids = np.zeros((len(self.labels), x.shape[1]))
        for k in range(len(self.labels)):
            if np.any(y == k):
                centroids[k] = x[y == k].mean(axis=0)
        self.centroids = _normalise(centroids).astype(np.float32)
        return self

    def predict_proba(self, x: np.ndarray | None, raw: Sequence[str] | None = None) -> np.ndarray:
        sims = _normalise(embeddings(self.kind, x).astype(np.float32, copy=False)) @ self.centroids.T
        return softmax(self.scale * sims)

    def temper(self, temperature: float) -> None:
        self.scale /= temperature

    def torch_module(self) -> Any:
        """This head as a torch module, embeddings → probabilities (for ONNX export)."""
        from .torch_forms import PrototypeForm

        return PrototypeForm(self.centroids, self.scale)
