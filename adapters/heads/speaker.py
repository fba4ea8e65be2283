"""Speaker identification head: cosine similarity to each enrolled speaker's centroid (the mean of their
clips' L2-normalised embeddings, renormalised), with an open-set threshold: a clip whose best similarity is
under ``threshold`` is by no enrolled speaker ("unknown"). The threshold is tuned by cross-validation to a
stated false-accept rate (``far``) in :mod:`adapters.kinds.speakers`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from .base import EMBEDDING, Array, StoredHead, embeddings, register


def normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def centroids_of(x: np.ndarray, y: np.ndarray, n: int) -> np.ndarray:
    """Per class ``0..n-1``, the renormalised mean of its normalised rows (zeros for a class without rows)."""
    x = normalise(x.astype(np.float64))
    out = np.zeros((n, x.shape[1]))
    for k in range(n):
        if np.any(y == k):
            out[k] = x[y == k].mean(axis=0)
    return normalise(out).astype(np.float32)


@register("speakers")
class SpeakerHead(StoredHead):
    """``predict_proba`` answers each enrolled speaker's cosine similarity (in [-1, 1]; rows do not sum to
    1): the task kind names the best speaker when its similarity reaches ``threshold``, else no one."""

    kind: ClassVar[str] = "speaker"
    consumes: ClassVar[frozenset[str]] = frozenset({EMBEDDING})
    exportable: ClassVar[bool] = True  # with its backbone: adapters/audio_export.py speaker_graph
    settings: ClassVar[tuple[str, ...]] = ("threshold", "far")
    arrays: ClassVar[tuple[Array, ...]] = (Array("centroids", ("labels", "dim")),)

    def __init__(self, labels: list[str], threshold: float = 0.0, far: float = 0.05) -> None:
        self.labels = list(labels)
        self.threshold = float(threshold)
        self.far = float(far)  # the false-accept rate the threshold was tuned to
        self.centroids = np.zeros((len(labels), 0), dtype=np.float32)

    def fit(self, x: np.ndarray | None, y: np.ndarray, raw: Sequence[str] | None = None) -> SpeakerHead:
        self.centroids = centroids_of(embeddings(self.kind, x), np.asarray(y), len(self.labels))
        return self

    def predict_proba(self, x: np.ndarray | None, raw: Sequence[str] | None = None) -> np.ndarray:
        vectors = normalise(embeddings(self.kind, x).astype(np.float32, copy=False))
        return (vectors @ self.centroids.T).astype(np.float32)

    def accepted(self, similarities: np.ndarray) -> np.ndarray:
        """Per row, the index of the speaker named, or -1 for "unknown"."""
        best = similarities.argmax(axis=1)
        return np.where(similarities[np.arange(len(best)), best] >= self.threshold, best, -1)

    def temper(self, temperature: float) -> None:
        """Similarities are not probabilities: nothing to calibrate."""
