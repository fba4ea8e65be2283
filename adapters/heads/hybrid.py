"""Hybrid head: one logistic regression over the frozen embedding *and* from-scratch features of
the raw inputs (TF-IDF for text), side by side. ``weight_embedding`` scales the embedding block
against the (unit-norm) feature block, i.e. how much less it is regularised."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np
from scipy import sparse

from .base import EMBEDDING, RAW, Array, MissingInputs, register, softmax
from .baseline import FeaturesHead
from .features import Featurizer
from .linear import SPARSE_TOL, fit_logistic


@register(rank=3)
class HybridHead(FeaturesHead):
    kind: ClassVar[str] = "hybrid"
    consumes: ClassVar[frozenset[str]] = frozenset({EMBEDDING, RAW})
    exportable: ClassVar[bool] = True
    settings: ClassVar[tuple[str, ...]] = ("c", "weight_embedding", "modality")
    arrays: ClassVar[tuple[Array, ...]] = (
        Array("w_embedding", ("labels", "dim")),
        Array("w_features", ("labels", "features")),
        Array("bias", ("labels",)),
    )

    def __init__(
        self, labels: list[str], c: float = 10.0, weight_embedding: float = 1.0, modality: str = "text",
        features: Featurizer | None = None,
    ) -> None:
        self.labels = list(labels)
        self.c = float(c)
        self.weight_embedding = float(weight_embedding)
        self.modality = modality
        self.features = features
        self.w_embedding = np.zeros((len(labels), 0), dtype=np.float32)  # already multiplied by weight_embedding
        self.w_features = np.zeros((len(labels), 0), dtype=np.float32)
        self.bias = np.zeros(len(labels), dtype=np.float32)

    def fit(self, x: np.ndarray | None, y: np.ndarray, raw: Sequence[str] | None = None) -> HybridHead:
        if x is None:
            raise MissingInputs("the 'hybrid' head needs backbone embeddings")
        feats = self._features(raw)
        embedded = sparse.csr_matrix(self.weight_embedding * x.astype(np.float32))
        joint = sparse.hstack([embedded, feats], format="csr")
        weight, self.bias = fit_logistic(joint, y, len(self.labels), self.c, tol=SPARSE_TOL)
        dim = x.shape[1]
        self.w_embedding, self.w_features = weight[:, :dim] * np.float32(self.weight_embedding), weight[:, dim:]
        return self

    def predict_proba(self, x: np.ndarray | None, raw: Sequence[str] | None = None) -> np.ndarray:
        if x is None:
            raise MissingInputs("the 'hybrid' head needs backbone embeddings")
        logits = x.astype(np.float32, copy=False) @ self.w_embedding.T
        logits = logits + np.asarray(self._features(raw) @ self.w_features.T) + self.bias
        return softmax(logits.astype(np.float32, copy=False))

    def temper(self, temperature: float) -> None:
        self.w_embedding, self.w_features = self.w_embedding / temperature, self.w_features / temperature
        self.bias = self.bias / temperature
