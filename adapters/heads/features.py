"""From-scratch features of raw inputs (no transfer): what the baseline and hybrid heads learn on.

A featurizer is fitted on the training inputs and stored like a head: arrays as safetensors
tensors, everything else as JSON params (a TF-IDF vocabulary is a JSON list, its idf a tensor).
One featurizer per modality (TF-IDF for text, raw pixels for images, MFCC summaries for audio), found
through ``FOR_MODALITY`` and ``FEATURIZERS``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Protocol

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer


class Featurizer(Protocol):
    name: ClassVar[str]

    def fit(self, raw: Sequence[str]) -> Featurizer: ...

    def transform(self, raw: Sequence[str]) -> Any:
        """(n, features) matrix, dense or scipy-sparse, rows L2-normalised."""

    def params(self) -> dict[str, Any]: ...

    def tensors(self) -> dict[str, np.ndarray]: ...

    @classmethod
    def restore(cls, params: dict[str, Any], tensors: dict[str, np.ndarray]) -> Featurizer: ...


class TfidfFeatures:
    """Word uni- and bigram TF-IDF (sublinear tf, L2-normalised rows): the classic text baseline."""

    name: ClassVar[str] = "tfidf"
    MAX_FEATURES = 50_000

    def __init__(self, vocabulary: list[str] | None = None, idf: np.ndarray | None = None, min_df: int = 1) -> None:
        self.min_df = min_df
        self.vectorizer = self._vectorizer(vocabulary)
        if vocabulary is not None and idf is not None:
            if len(idf) != len(vocabulary):
                raise ValueError("tfidf idf does not match its vocabulary")
            self.vectorizer.idf_ = np.asarray(idf)

    def _vectorizer(self, vocabulary: list[str] | None) -> TfidfVectorizer:
        return TfidfVectorizer(
            lowercase=True, strip_accents="unicode", ngram_range=(1, 2), sublinear_tf=True, min_df=self.min_df,
            max_features=self.MAX_FEATURES, dtype=np.float32, vocabulary=vocabulary,
        )

    def fit(self, raw: Sequence[str]) -> TfidfFeatures:
        self.min_df = 2 if len(raw) >= 100 else 1  # rare n-grams are noise once there is data
        self.vectorizer = self._vectorizer(None)
        try:
            self.vectorizer.fit(raw)
        except ValueError:  # no token in any text (e.g. only punctuation): fall back to characters
            self.vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(1, 1), sublinear_tf=True, dtype=np.float32)
            self.vectorizer.fit(raw)
        return self

    def vocabulary(self) -> list[str]:
        terms = [""] * len(self.vectorizer.vocabulary_)
        for term, column in self.vectorizer.vocabulary_.items():
            terms[column] = term
        return terms

    def transform(self, raw: Sequence[str]) -> Any:
        return self.vectorizer.transform(raw)

    def params(self) -> dict[str, Any]:
        return {"featurizer": self.name, "analyzer": self.vectorizer.analyzer, "vocabulary": self.vocabulary()}

    def tensors(self) -> dict[str, np.ndarray]:
        return {"idf": np.asarray(self.vectorizer.idf_)}

    @classmethod
    def restore(cls, params: dict[str, Any], tensors: dict[str, np.ndarray]) -> TfidfFeatures:
        features = cls(params["vocabulary"], tensors["idf"])
        if params.get("analyzer", "word") == "char":
            features.vectorizer.set_params(analyzer="char", ngram_range=(1, 1), strip_accents=None)
        return features


class PixelFeatures:
    """Raw pixels: each image (base64 PNG/JPEG/WebP) as grayscale, resized to ``size``×``size``,
    flattened, centred on the training mean and L2-normalised. The classic no-transfer image baseline."""

    name: ClassVar[str] = "pixels"

    def __init__(self, size: int = 16, mean: np.ndarray | None = None) -> None:
        self.size = int(size)
        self.mean = np.zeros(self.size * self.size, dtype=np.float32) if mean is None else np.asarray(mean, np.float32)

    def _pixels(self, raw: Sequence[str]) -> np.ndarray:
        from ..raw_inputs import pixels  # the same code an export's consumer runs (shipped in the zip)

        return pixels(raw, self.size)

    def fit(self, raw: Sequence[str]) -> PixelFeatures:
        self.mean = self._pixels(raw).mean(axis=0)
        return self

    def transform(self, raw: Sequence[str]) -> np.ndarray:
        x = self._pixels(raw) - self.mean
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-6)

    def params(self) -> dict[str, Any]:
        return {"featurizer": self.name, "size": self.size}

    def tensors(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean}

    @classmethod
    def restore(cls, params: dict[str, Any], tensors: dict[str, np.ndarray]) -> PixelFeatures:
        return cls(params["size"], tensors["mean"])


class MfccFeatures:
    """MFCC summaries: each clip (stored base64 WAV, mono 16 kHz) as its MFCCs' mean and standard deviation,
    the means of three equal time segments and the deltas' mean and standard deviation
    (``adapters.audio_features.mfcc_summary``), standardised with the training mean and scale, then
    L2-normalised. The classic no-transfer audio baseline."""

    name: ClassVar[str] = "mfcc"

    def __init__(self, mean: np.ndarray | None = None, scale: np.ndarray | None = None) -> None:
        self.mean = None if mean is None else np.asarray(mean, np.float32)
        self.scale = None if scale is None else np.asarray(scale, np.float32)

    @staticmethod
    def _summaries(raw: Sequence[Any]) -> np.ndarray:
        from ..audio_features import stored_mfcc_summary

        return np.stack([stored_mfcc_summary(clip) for clip in raw]) if len(raw) else np.zeros((0, 140), np.float32)

    def fit(self, raw: Sequence[str]) -> MfccFeatures:
        x = self._summaries(raw)
        self.mean = x.mean(axis=0).astype(np.float32)
        self.scale = np.maximum(x.std(axis=0), 1e-3).astype(np.float32)
        return self

    def transform(self, raw: Sequence[str]) -> np.ndarray:
        assert self.mean is not None and self.scale is not None, "fit the featurizer first"
        x = (self._summaries(raw) - self.mean) / self.scale
        return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-6)).astype(np.float32)

    def params(self) -> dict[str, Any]:
        return {"featurizer": self.name}

    def tensors(self) -> dict[str, np.ndarray]:
        assert self.mean is not None and self.scale is not None, "fit the featurizer first"
        return {"mean": self.mean, "scale": self.scale}

    @classmethod
    def restore(cls, params: dict[str, Any], tensors: dict[str, np.ndarray]) -> MfccFeatures:
        return cls(tensors["mean"], tensors["scale"])


FEATURIZERS: dict[str, type[Featurizer]] = {f.name: f for f in (TfidfFeatures, PixelFeatures, MfccFeatures)}
FOR_MODALITY: dict[str, str] = {"text": TfidfFeatures.name, "image": PixelFeatures.name, "audio": MfccFeatures.name}
