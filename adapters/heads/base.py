"""The head protocol and its safetensors serialisation.

A head maps frozen backbone embeddings (n, dim) to class probabilities (n, labels). It is
stored as one safetensors blob: arrays as tensors, everything else (kind, labels, params,
provenance) as JSON in the header's ``__metadata__``. Nothing is ever pickled.
"""

from __future__ import annotations

import json
import struct
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save


class HeadFormatError(ValueError):
    """The bytes are not a head this version of Graft can read."""


@runtime_checkable
class Head(Protocol):
    kind: ClassVar[str]
    labels: list[str]

    def fit(self, x: np.ndarray, y: np.ndarray) -> Head:
        """Fit on embeddings ``x`` (n, dim) and integer targets ``y`` indexing ``labels``."""

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Probabilities (n, len(labels)), rows summing to 1."""

    def tensors(self) -> dict[str, np.ndarray]: ...

    def params(self) -> dict[str, Any]: ...


def to_bytes(head: Head, **provenance: Any) -> bytes:
    """Serialise a head; ``provenance`` (backbone, revision, dim, metrics…) goes in the metadata."""
    meta = {"kind": head.kind, "labels": head.labels, "params": head.params(), "provenance": provenance}
    tensors = {k: np.ascontiguousarray(v) for k, v in head.tensors().items()}
    return st_save(tensors, metadata={"graft": json.dumps(meta, ensure_ascii=False)})


def read_metadata(blob: bytes) -> dict[str, Any]:
    if len(blob) < 8:
        raise HeadFormatError("blob too short for safetensors")
    (size,) = struct.unpack("<Q", blob[:8])
    if size > len(blob) - 8:
        raise HeadFormatError("safetensors header length exceeds the blob")
    try:
        header = json.loads(blob[8 : 8 + size])
        return json.loads(header["__metadata__"]["graft"])
    except (ValueError, KeyError, TypeError) as exc:
        raise HeadFormatError(f"no Graft metadata in safetensors header: {exc}") from None


def from_bytes(blob: bytes) -> Head:
    from . import HEADS  # the registry imports the concrete heads

    meta = read_metadata(blob)
    cls = HEADS.get(meta.get("kind", ""))
    if cls is None:
        raise HeadFormatError(f"unknown head kind {meta.get('kind')!r}")
    try:
        tensors = st_load(blob)
    except Exception as exc:  # safetensors raises its own error types for corrupt data
        raise HeadFormatError(f"corrupt safetensors data: {exc}") from None
    return cls.restore(meta["labels"], meta["params"], tensors)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z
