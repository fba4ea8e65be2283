"""The no-transfer baseline: logistic regression on from-scratch features of the raw inputs
(TF-IDF for text). It ignores the backbone, and guards against negative transfer: when it wins
in cross-validation, the frozen embeddings did not help this task."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from .base import RAW, Array, HeadFormatError, MissingInputs, StoredHead, register, softmax
from .features import FEATURIZERS, FOR_MODALITY, Featurizer
from .linear import SPARSE_TOL, fit_logistic

PREFIX = "features."  # the featurizer's tensors, in the head's blob


def split_tensors(tensors: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}


def restore_featurizer(params: dict[str, Any], tensors: dict[str, np.ndarray]) -> Featurizer:
    cls = FEATURIZERS.get(params.get("featurizer", ""))
    if cls is None:
        raise HeadFormatError(f"unknown featurizer {params.get('featurizer')!r}")
    return cls.restore(params, split_tensors(tensors, PREFIX))


class FeaturesHead(StoredHead):
    """A head on from-scratch features of the raw inputs: its fitted featurizer is stored with it (params
    merged into the head's, tensors under ``features.``) and rebuilt on restore."""

    labels: list[str]
    modality: str
    features: Featurizer | None  # fitted already when given (CV shares one per fold)

    def _features(self, raw: Sequence[str] | None) -> Any:
        if raw is None:
            raise MissingInputs(f"the {self.kind!r} head needs the raw inputs")
        if self.features is None:
            self.features = FEATURIZERS[FOR_MODALITY[self.modality]]().fit(raw)
        return self.features.transform(raw)

    def extra_params(self) -> dict[str, Any]:
        assert self.features is not None, "fit the head first"
        return self.features.params()

    def extra_tensors(self) -> dict[str, np.ndarray]:
        assert self.features is not None, "fit the head first"
        return {f"{PREFIX}{k}": v for k, v in self.features.tensors().items()}

    @classmethod
    def restored_arguments(cls, params: dict[str, Any], tensors: dict[str, np.ndarray]) -> dict[str, Any]:
        return {"features": restore_featurizer(params, tensors)}


@register(rank=2)
class BaselineHead(FeaturesHead):
    kind: ClassVar[str] = "baseline"
    consumes: ClassVar[frozenset[str]] = frozenset({RAW})
    exportable: ClassVar[bool] = True
    settings: ClassVar[tuple[str, ...]] = ("c", "modality")
    arrays: ClassVar[tuple[Array, ...]] = (Array("weight", ("labels", "features")), Array("bias", ("labels",)))

    def __init__(
        self, labels: list[str], c: float = 10.0, modality: str = "text", features: Featurizer | None = None
    ) -> None:
        self.labels = list(labels)
        self.c = float(c)
        self.modality = modality
        self.features = features
        self.weight = np.zeros((len(labels), 0), dtype=np.float32)
        self.bias = np.zeros(len(labels), dtype=np.float32)

    def fit(self, x: np.ndarray | None, y: np.ndarray, raw: Sequence[str] | None = None) -> BaselineHead:
        self.weight, self.bias = fit_logistic(self._features(raw), y, len(self.labels), self.c, tol=SPARSE_TOL)
        return self

    def predict_proba(self, x: np.ndarray | None, raw: Sequence[str] | None = None) -> np.ndarray:
        logits = np.asarray(self._features(raw) @ self.weight.T) + self.bias
        return softmax(logits.astype(np.float32, copy=False))

    def temper(self, temperature: float) -> None:
        self.weight, self.bias = self.weight / temperature, self.bias / temperature
