"""The no-transfer baseline: logistic regression on from-scratch features of the raw inputs
(TF-IDF for text). It ignores the backbone, and guards against negative transfer: when it wins
in cross-validation, the frozen embeddings did not help this task."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from .base import RAW, MissingInputs, register, softmax
from .features import FEATURIZERS, FOR_MODALITY, Featurizer
from .linear import SPARSE_TOL, fit_logistic


def split_tensors(tensors: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}


def restore_featurizer(params: dict[str, Any], tensors: dict[str, np.ndarray]) -> Featurizer:
    cls = FEATURIZERS.get(params.get("featurizer", ""))
    if cls is None:
        raise ValueError(f"unknown featurizer {params.get('featurizer')!r}")
    return cls.restore(params, split_tensors(tensors, "features."))


@register(rank=2)
class BaselineHead:
    kind: ClassVar[str] = "baseline"
    consumes: ClassVar[frozenset[str]] = frozenset({RAW})
    exportable: ClassVar[bool] = True

    def __init__(self, labels: list[str], c: float = 10.0, modality: str = "text", features: Featurizer | None = None) -> None:
        self.labels = list(labels)
        self.c = float(c)
        self.modality = modality
        self.features = features  # fitted already when given (CV shares one per fold)
        self.weight = np.zeros((len(labels), 0), dtype=np.float32)
        self.bias = np.zeros(len(labels), dtype=np.float32)

    def _features(self, raw: Sequence[str] | None) -> Any:
        if raw is None:
            raise MissingInputs("the 'baseline' head needs the raw inputs")
        if self.features is None:
            self.features = FEATURIZERS[FOR_MODALITY[self.modality]]().fit(raw)
        return self.features.transform(raw)

    def fit(self, x: np.ndarray | None, y: np.ndarray, raw: Sequence[str] | None = None) -> BaselineHead:
        self.weight, self.bias = fit_logistic(self._features(raw), y, len(self.labels), self.c, tol=SPARSE_TOL)
        return self

    def predict_proba(self, x: np.ndarray | None, raw: Sequence[str] | None = None) -> np.ndarray:
        logits = np.asarray(self._features(raw) @ self.weight.T) + self.bias
        return softmax(logits.astype(np.float32, copy=False))

    def temper(self, temperature: float) -> None:
        self.weight, self.bias = self.weight / temperature, self.bias / temperature

    def tensors(self) -> dict[str, np.ndarray]:
        assert self.features is not None, "fit the head first"
        return {"weight": self.weight, "bias": self.bias, **{f"features.{k}": v for k, v in self.features.tensors().items()}}

    def params(self) -> dict[str, Any]:
        assert self.features is not None, "fit the head first"
        return {"c": self.c, "modality": self.modality, **self.features.params()}

    @classmethod
    def restore(cls, labels: list[str], params: dict[str, Any], tensors: dict[str, np.ndarray]) -> BaselineHead:
        head = cls(labels, c=params["c"], modality=params["modality"], features=restore_featurizer(params, tensors))
        head.weight, head.bias = tensors["weight"], tensors["bias"]
        if head.weight.shape[0] != len(labels) or head.bias.shape != (len(labels),):
            raise ValueError("baseline head tensors do not match its labels")
        return head
