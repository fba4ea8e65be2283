"""The head protocol and its safetensors serialisation.

A head maps inputs to class probabilities (n, labels). What it reads is declared by its
``consumes`` set: ``EMBEDDING`` (frozen backbone embeddings, (n, dim)) and/or ``RAW`` (the raw
inputs themselves, e.g. texts, for from-scratch features such as TF-IDF). Callers pass both via
``fit(x, y, raw=...)`` / ``predict_proba(x, raw=...)``; a head that does not consume embeddings
ignores ``x`` (callers may pass ``None`` and skip the backbone). ``exportable`` says whether the
head has an ONNX form that an export fuses behind the backbone (adapters/export.py).

A head is stored as one safetensors blob: arrays as tensors, everything else (kind, labels,
params, provenance) as JSON in the header's ``__metadata__``. Nothing is ever pickled.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save


class HeadFormatError(ValueError):
    """The bytes are not a head this version of Graft can read."""


EMBEDDING = "embedding"  # frozen backbone embeddings
RAW = "raw"  # the raw inputs (texts), for from-scratch features
TRUNK = "trunk"  # the text backbone's hidden states at a split layer (fine-tuned top layers)


class MissingInputs(ValueError):
    """A head was called without the inputs it consumes."""


@runtime_checkable
class Head(Protocol):
    kind: ClassVar[str]
    consumes: ClassVar[frozenset[str]]  # subset of {EMBEDDING, RAW}
    exportable: ClassVar[bool]  # has an ONNX form (adapters/export.py fuses it behind the backbone)
    labels: list[str]

    def fit(self, x: np.ndarray | None, y: np.ndarray, raw: Sequence[str] | None = None) -> Head:
        """Fit on embeddings ``x`` (n, dim) and/or ``raw`` inputs and integer targets ``y`` indexing ``labels``."""

    def predict_proba(self, x: np.ndarray | None, raw: Sequence[str] | None = None) -> np.ndarray:
        """Probabilities (n, len(labels)), rows summing to 1."""

    def temper(self, temperature: float) -> None:
        """Divide the head's logits by ``temperature`` from now on (temperature scaling)."""

    def tensors(self) -> dict[str, np.ndarray]: ...

    def params(self) -> dict[str, Any]: ...


def require(head: Head, x: np.ndarray | None, raw: Sequence[str] | None) -> None:
    """Raise :class:`MissingInputs` unless the inputs ``head.consumes`` are present."""
    if EMBEDDING in head.consumes and x is None:
        raise MissingInputs(f"the {head.kind!r} head needs backbone embeddings")
    if (RAW in head.consumes or TRUNK in head.consumes) and raw is None:
        raise MissingInputs(f"the {head.kind!r} head needs the raw inputs")


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
    from . import HEADS, KIND_HEADS  # the registries import the concrete heads

    meta = read_metadata(blob)
    known = {**HEADS, **{cls.kind: cls for cls in KIND_HEADS.values()}}
    cls = known.get(meta.get("kind", ""))
    if cls is None:
        raise HeadFormatError(f"unknown head kind {meta.get('kind')!r}")
    try:
        tensors = st_load(blob)
    except Exception as exc:  # safetensors raises its own error types for corrupt data
        raise HeadFormatError(f"corrupt safetensors data: {exc}") from None
    head = cls.restore(meta["labels"], meta["params"], tensors)
    head.backbone = (meta.get("provenance") or {}).get("backbone")  # what it was trained on, if recorded
    return head


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z
