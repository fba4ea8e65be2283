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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar, cast, runtime_checkable

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

    def __init__(self, labels: list[str], **params: Any) -> None:
        """A head for ``labels``; ``params`` as :meth:`params` returns them (plus ``modality``/``features`` for RAW heads)."""

    def fit(self, x: np.ndarray | None, y: np.ndarray, raw: Sequence[str] | None = None) -> Head:
        """Fit on embeddings ``x`` (n, dim) and/or ``raw`` inputs and integer targets ``y`` indexing ``labels``."""

    def predict_proba(self, x: np.ndarray | None, raw: Sequence[str] | None = None) -> np.ndarray:
        """Probabilities (n, len(labels)), rows summing to 1."""

    def temper(self, temperature: float) -> None:
        """Divide the head's logits by ``temperature`` from now on (temperature scaling)."""

    def tensors(self) -> dict[str, np.ndarray]: ...

    def params(self) -> dict[str, Any]: ...

    @classmethod
    def restore(cls, labels: list[str], params: dict[str, Any], tensors: dict[str, np.ndarray]) -> Head:
        """The head :func:`to_bytes` stored (its labels, ``params()`` and ``tensors()``)."""


def embeddings(kind: str, x: np.ndarray | None) -> np.ndarray:
    """``x``; :class:`MissingInputs` when a head of ``kind`` that consumes embeddings got none."""
    if x is None:
        raise MissingInputs(f"the {kind!r} head needs backbone embeddings")
    return x


@dataclass(frozen=True)
class Registration:
    """One registered head class: the task kind it serves and its place among that kind's heads."""

    cls: type
    task_kind: str
    rank: int  # the order training evaluates and reports a task kind's heads in (lowest first)


# Every head kind (``Head.kind``) → its registration. Filled by :func:`register` as the head modules are
# imported; adapters/heads/__init__.py imports them all, so importing any part of ``adapters.heads``
# fills it before anything can look a kind up.
REGISTRY: dict[str, Registration] = {}

H = TypeVar("H", bound=type)


def register(task_kind: str = "classification", rank: int = 0) -> Callable[[H], H]:
    """Class decorator: make a head class known under its ``kind`` (what :func:`from_bytes` reads back
    and what training may choose), for tasks of ``task_kind``."""

    def add(cls: H) -> H:
        kind = cls.kind  # type: ignore[attr-defined]
        known = REGISTRY.get(kind)
        if known is not None and known.cls is not cls:
            raise ValueError(f"head kind {kind!r} is already registered by {known.cls.__qualname__}")
        REGISTRY[kind] = Registration(cls, task_kind, rank)
        return cls

    return add


def heads_for(task_kind: str) -> dict[str, type[Head]]:
    """The head classes registered for ``task_kind``, by kind, in rank order."""
    found = sorted((r.rank, kind, r.cls) for kind, r in REGISTRY.items() if r.task_kind == task_kind)
    return {kind: cast(type[Head], cls) for _, kind, cls in found}


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
    meta = read_metadata(blob)
    registered = REGISTRY.get(meta.get("kind", ""))
    if registered is None:
        raise HeadFormatError(f"unknown head kind {meta.get('kind')!r}")
    cls: Any = registered.cls
    try:
        tensors = st_load(blob)
    except Exception as exc:  # safetensors raises its own error types for corrupt data
        raise HeadFormatError(f"corrupt safetensors data: {exc}") from None
    head = cls.restore(meta["labels"], meta["params"], tensors)
    cast(Any, head).backbone = (meta.get("provenance") or {}).get("backbone")  # not a Head attribute; what it was trained on, if recorded
    return head


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z
