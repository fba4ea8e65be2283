"""The head protocol and its safetensors serialisation.

A head maps inputs to class probabilities (n, labels). What it reads is declared by its
``consumes`` set: ``EMBEDDING`` (frozen backbone embeddings, (n, dim)) and/or ``RAW`` (the raw
inputs themselves, e.g. texts, for from-scratch features such as TF-IDF). Callers pass both via
``fit(x, y, raw=...)`` / ``predict_proba(x, raw=...)``; a head that does not consume embeddings
ignores ``x`` (callers may pass ``None`` and skip the backbone). ``exportable`` says whether the
head has an ONNX form that an export fuses behind the backbone (adapters/export.py).

A regression head (:class:`ValueHead`) answers values instead, through ``predict_values(x) -> (n,)``;
:func:`predict` is the one call that gets any head's answer (what the server's batcher carries).

A head is stored as one safetensors blob: arrays as tensors, everything else (kind, labels,
params, provenance) as JSON in the header's ``__metadata__``. Nothing is ever pickled. The heads
here derive from :class:`StoredHead`, which does that plumbing from two declarations per head:
``settings`` (the constructor arguments stored as params) and ``arrays`` (each stored array's
attribute, tensor name, dtype and shape), checked on restore.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, Self, TypeVar, cast, runtime_checkable

import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from ..ood import OodDataError, OodModel


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
        """A head for ``labels``; ``params`` as :meth:`params` returns them (plus ``modality``/``features``
        for RAW heads)."""

    def fit(self, x: np.ndarray | None, y: np.ndarray, raw: Sequence[str] | None = None) -> Head:
        """Fit on embeddings ``x`` (n, dim) and/or ``raw`` inputs and integer targets ``y`` indexing
        ``labels``."""

    def predict_proba(self, x: np.ndarray | None, raw: Sequence[str] | None = None) -> np.ndarray:
        """Probabilities (n, len(labels)): rows summing to 1 (a multilabel head: each label's own).
        A :class:`ValueHead` has none and raises ``TypeError``: it answers through ``predict_values``."""

    def temper(self, temperature: float) -> None:
        """Divide the head's logits by ``temperature`` from now on (temperature scaling)."""

    def tensors(self) -> dict[str, np.ndarray]: ...

    def params(self) -> dict[str, Any]: ...

    @classmethod
    def restore(cls, labels: list[str], params: dict[str, Any], tensors: dict[str, np.ndarray]) -> Head:
        """The head :func:`to_bytes` stored (its labels, ``params()`` and ``tensors()``)."""


@runtime_checkable
class ValueHead(Protocol):
    """A head that answers a number per input (regression) rather than probabilities."""

    def predict_values(self, x: np.ndarray | None, raw: Sequence[str] | None = None) -> np.ndarray:
        """Values (n,)."""


def predict(head: Head, x: np.ndarray | None, raw: Sequence[str] | None = None) -> np.ndarray:
    """A head's answer per input: a :class:`ValueHead`'s values (n,), any other head's probabilities
    (n, labels)."""
    if isinstance(head, ValueHead):
        return head.predict_values(x, raw=raw)
    return head.predict_proba(x, raw=raw)


def embeddings(kind: str, x: np.ndarray | None) -> np.ndarray:
    """``x``; :class:`MissingInputs` when a head of ``kind`` that consumes embeddings got none."""
    if x is None:
        raise MissingInputs(f"the {kind!r} head needs backbone embeddings")
    return x


@dataclass(frozen=True)
class Array:
    """One array a head stores: the attribute holding it, its tensor's name in the blob (``key``, default
    the attribute's name), dtype (the head's; a blob holding another precision of the same kind loads as
    stored) and shape. A shape entry is a size, ``"labels"`` (the head's number of labels) or any other
    name, which every array of the head that names it must agree on (e.g. ``"dim"``)."""

    attr: str
    shape: tuple[int | str, ...]
    key: str = ""
    dtype: type[np.generic] = np.float32

    @property
    def name(self) -> str:
        return self.key or self.attr


class StoredHead:
    """The plumbing every head here shares: ``params()``/``tensors()`` for :func:`to_bytes` and
    ``restore`` for :func:`from_bytes`, from the subclass's declarations:

    - ``settings``: constructor arguments, kept as attributes of the same name, stored as params (in order);
    - ``arrays``: the stored arrays (:class:`Array`); ``restore`` checks their dtypes and shapes against the
      labels and one another (a blob whose arrays do not fit its labels raises :class:`HeadFormatError`).

    A head with more to store (a featurizer, LoRA matrices) adds it through ``extra_params`` /
    ``extra_tensors`` and reads it back in ``restored_arguments`` (further constructor arguments) and
    ``check`` (further checks on the restored head)."""

    kind: ClassVar[str]
    consumes: ClassVar[frozenset[str]]
    exportable: ClassVar[bool]
    settings: ClassVar[tuple[str, ...]] = ()
    arrays: ClassVar[tuple[Array, ...]] = ()
    labels: list[str]

    def params(self) -> dict[str, Any]:
        return {**{name: getattr(self, name) for name in self.settings}, **self.extra_params()}

    def tensors(self) -> dict[str, np.ndarray]:
        return {**{a.name: getattr(self, a.attr) for a in self.arrays}, **self.extra_tensors()}

    def extra_params(self) -> dict[str, Any]:
        return {}

    def extra_tensors(self) -> dict[str, np.ndarray]:
        return {}

    @classmethod
    def restored_arguments(cls, params: dict[str, Any], tensors: dict[str, np.ndarray]) -> dict[str, Any]:
        """Constructor arguments beyond ``settings`` rebuilt from what ``extra_params``/``extra_tensors`` stored."""
        return {}

    def check(self) -> None:
        """Further checks on a restored head; raise :class:`HeadFormatError`."""

    @classmethod
    def restore(cls, labels: list[str], params: dict[str, Any], tensors: dict[str, np.ndarray]) -> Self:
        missing = [name for name in cls.settings if name not in params]
        missing += [a.name for a in cls.arrays if a.name not in tensors]
        if missing:
            raise HeadFormatError(f"{cls.kind} head is missing {', '.join(map(repr, missing))}")
        settings = {name: params[name] for name in cls.settings}
        head = cls(labels, **settings, **cls.restored_arguments(params, tensors))  # type: ignore[call-arg]
        sizes: dict[str, int] = {"labels": len(labels)}
        for a in cls.arrays:
            tensor = tensors[a.name]
            if tensor.dtype.kind != np.dtype(a.dtype).kind:  # another precision loads as stored
                raise HeadFormatError(f"{cls.kind} head tensor {a.name!r} is {tensor.dtype}, not {np.dtype(a.dtype)}")
            want = tuple(sizes.setdefault(d, n) if isinstance(d, str) else d
                         for d, n in zip(a.shape, tensor.shape, strict=False))
            if tensor.ndim != len(a.shape) or tensor.shape != want:
                shape = ", ".join(map(str, a.shape))
                raise HeadFormatError(f"{cls.kind} head tensor {a.name!r} has shape {tensor.shape}, not ({shape}) "
                                      f"for its {len(labels)} labels")
            setattr(head, a.attr, tensor)
        head.check()
        return head


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


OOD_PREFIX = "ood."  # tensors of the version's out-of-distribution model (adapters/ood.py), beside the head's


def to_bytes(head: Head, *, ood: OodModel | None = None, **provenance: Any) -> bytes:
    """Serialise a head; ``provenance`` (backbone, revision, dim, metrics…) goes in the metadata. ``ood``: the
    version's out-of-distribution model, stored as further tensors (``ood.*``) of the same blob."""
    meta = {"kind": head.kind, "labels": head.labels, "params": head.params(), "provenance": provenance}
    tensors = {k: np.ascontiguousarray(v) for k, v in head.tensors().items()}
    if ood is not None:
        tensors.update(ood.to_arrays())
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
    # not Head attributes: what it was trained on, if recorded, and its OOD model, if stored (see ood_of)
    cast(Any, head).backbone = (meta.get("provenance") or {}).get("backbone")
    ood = {name: t for name, t in tensors.items() if name.startswith(OOD_PREFIX)}
    try:
        cast(Any, head).ood = OodModel.from_arrays(ood) if ood else None
    except (KeyError, OodDataError) as exc:
        raise HeadFormatError(f"the stored OOD model does not load: {exc}") from None
    return head


def ood_of(head: Head) -> OodModel | None:
    """The out-of-distribution model stored with a loaded head's version; None for a version trained
    without one (before OOD scores existed, too few examples, a kind or head that has none)."""
    ood = getattr(head, "ood", None)
    return ood if isinstance(ood, OodModel) else None


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z
