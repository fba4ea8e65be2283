"""Predict routing: task → active version → head → shared backbone pass → probabilities.

The hot path makes no store round trip while its caches are warm:

- task lookups ``(tenant, name) → (task, active version)`` are cached for ``task_ttl_s``, so a
  version switch made by another process is seen within that bound; changes made by this
  process are applied at once (:meth:`Router.forget`);
- heads are cached by immutable ``(task id, version)`` in a byte-budgeted LRU (:mod:`.caching`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
import numpy as np

from adapters import heads

from . import logs
from .batching import Batcher
from .caching import HeadCache, TTLCache
from .metrics import TenantLabels
from .store.models import Task, Version
from .store.repository import NotFound, Store

log = logs.get("router")


class NotTrained(Exception):
    """The task exists but has no active version yet."""


class VersionFailed(Exception):
    """The active version's weights cannot be loaded (corrupt blob): it is marked failed and this
    task answers 503 until it is rolled back, promoted past or retrained; other tasks serve on."""


# (task, backbone name, whether the head reads raw inputs) → (backbone inputs, raw inputs)
Prepare = Callable[["TaskRef", str, bool], Awaitable[tuple[Sequence[Any], Sequence[Any] | None]]]


@dataclass(frozen=True)
class TaskRef:
    """What predict needs to know about a task (a small immutable copy of its row)."""

    id: str
    tenant_id: str
    name: str
    modality: str
    backbone: str
    head: str
    active_version: int | None
    kind: str = "classification"

    @classmethod
    def of(cls, task: Task) -> TaskRef:
        return cls(task.id, task.tenant_id, task.name, task.modality, task.backbone, task.head, task.active_version, task.kind)


@dataclass(frozen=True)
class Prediction:
    label: str
    score: float
    scores: dict[str, float]


@dataclass(frozen=True)
class LabelScore:
    label: str
    probability: float
    threshold: float
    chosen: bool


@dataclass(frozen=True)
class MultiLabelPrediction:
    labels: list[str]  # chosen (probability >= threshold), most probable first
    scores: list[LabelScore]  # top_k by probability


@dataclass(frozen=True)
class RegressionPrediction:
    value: float


AnyPrediction = Prediction | MultiLabelPrediction | RegressionPrediction


def multilabel_predictions(head: heads.Head, proba: np.ndarray, top_k: int | None) -> list[MultiLabelPrediction]:
    labels, thresholds = head.labels, head.thresholds  # type: ignore[attr-defined]
    k = len(labels) if top_k is None else min(top_k, len(labels))
    out = []
    for p in proba:
        order = np.argsort(-p, kind="stable")
        # thresholds are float32 grid points (0.05, 0.075, ...): shown rounded, which compares the same
        scores = [LabelScore(labels[j], float(p[j]), round(float(thresholds[j]), 4), bool(p[j] >= thresholds[j])) for j in order]
        out.append(MultiLabelPrediction(labels=[sc.label for sc in scores if sc.chosen], scores=scores[:k]))
    return out


def kind_predictions(kind: str, head: heads.Head, proba: np.ndarray, top_k: int | None) -> list[AnyPrediction]:
    """The head's output as the task's kind answers it (``proba``: a regression head's values (n,))."""
    if kind == "multilabel":
        return multilabel_predictions(head, proba, top_k)  # type: ignore[return-value]
    if kind == "regression":
        return [RegressionPrediction(float(v)) for v in proba]
    return top_predictions(head.labels, proba, top_k)  # type: ignore[return-value]


def top_predictions(labels: Sequence[str], proba: np.ndarray, top_k: int | None) -> list[Prediction]:
    k = len(labels) if top_k is None else min(top_k, len(labels))
    order = np.argsort(-proba, axis=1, kind="stable")[:, :k]
    return [
        Prediction(
            label=labels[row[0]],
            score=float(p[row[0]]),
            scores={labels[j]: float(p[j]) for j in row},
        )
        for row, p in zip(order, proba, strict=True)
    ]


def store_head_loader(store: Store, trunk_of: Callable[[str], Any] | None = None) -> Callable[[tuple[str, int]], heads.Head]:
    """Heads from their safetensors blobs (never unpickled). A blob that does not load marks its
    version failed (logged with ids only) and raises :class:`VersionFailed`. Fine-tuned heads are bound
    to their backbone's torch text model (``trunk_of(backbone name)``), which merges their LoRA updates
    into copies of its top layers."""

    def load(key: tuple[str, int]) -> heads.Head:
        task_id, number = key
        version = store.version(task_id, number, with_weights=True)
        head = head_of(store, version)
        if heads.TRUNK in head.consumes:
            source = trunk_of(version.backbone) if trunk_of is not None else None
            if source is None:
                raise RuntimeError(f"backbone {version.backbone!r} cannot serve fine-tuned heads here")
            head.bind(source)  # type: ignore[attr-defined]
        return head

    return load


def head_of(store: Store, version: Version) -> heads.Head:
    """The head of a version loaded with its weights; a corrupt one is marked failed (see above)."""
    advice = "roll back, promote another version or retrain"
    if version.error:
        raise VersionFailed(f"version {version.number} failed to load earlier (its stored weights are corrupt); {advice}")
    try:
        return heads.from_bytes(version.weights)
    except Exception as exc:  # any corruption: HeadFormatError, bad metadata, wrong shapes
        error = f"{type(exc).__name__}: {exc}"[:500]
        log.error("a head failed to load; its version is marked failed",
                  extra={"task_id": version.task_id, "version": version.number, "error": error})
        store.mark_version_failed(version.task_id, version.number, error)
        raise VersionFailed(f"version {version.number} failed to load (its stored weights are corrupt); {advice}") from None


class Router:
    def __init__(
        self,
        store: Store,
        batchers: Callable[[str], Batcher],
        head_cache: HeadCache,
        task_ttl_s: float = 1.0,
        tenant_labels: TenantLabels | None = None,
    ) -> None:
        self.store = store
        self.batchers = batchers
        self.heads = head_cache
        self.tasks: TTLCache[tuple[str, str], TaskRef] = TTLCache(task_ttl_s)
        self.tenant_labels = tenant_labels or TenantLabels(20)

    def lookup(self, tenant_id: str, task_name: str) -> TaskRef:
        """The task as the store has it now (one query), remembered for the freshness bound."""
        asked = self.tasks.now()  # the entry's age counts from before the query, so staleness <= ttl
        ref = TaskRef.of(self.store.get_task(tenant_id, task_name))
        self.tasks.put((tenant_id, task_name), ref, at=asked)
        return ref

    def forget(self, tenant_id: str, task_name: str) -> None:
        """This process changed the task (new version, deletion): drop what is cached about it."""
        self.tasks.pop((tenant_id, task_name))

    def resolve(self, tenant_id: str, task_name: str) -> tuple[TaskRef, int]:
        ref = self.tasks.get((tenant_id, task_name)) or self.lookup(tenant_id, task_name)
        return ref, _active(ref)

    async def predict(
        self,
        tenant_id: str,
        task_name: str,
        inputs: Sequence[Any],
        top_k: int | None = None,
        prepare: Prepare | None = None,
    ) -> tuple[TaskRef, int, list[AnyPrediction]]:
        """Predict with the task's active version. ``prepare(ref, backbone, want_raw)`` turns the
        request's inputs into what the backbone takes and, for heads that read raw inputs
        (baseline, hybrid), their raw form; without it inputs pass through as they are (text)."""
        ref = self.tasks.get((tenant_id, task_name))
        if ref is None:  # store round trip, off the event loop
            ref = await anyio.to_thread.run_sync(self.lookup, tenant_id, task_name)
        number = _active(ref)
        key = (ref.id, number)
        head = self.heads.peek(key)
        if head is None:
            try:
                head = await anyio.to_thread.run_sync(self.heads.get, key)
            except NotFound:  # deleted meanwhile (by another process): the cached task is stale
                self.forget(tenant_id, task_name)
                raise NotFound(f"no task named {task_name!r}") from None
        backbone = getattr(head, "backbone", None) or ref.backbone  # the version's: a task may say "auto"
        wants_raw = heads.RAW in head.consumes
        model_inputs, raw = await prepare(ref, backbone, wants_raw) if prepare else (inputs, inputs)
        if wants_raw:  # from-scratch features of the raw inputs (baseline, hybrid)
            vectors = await self.batchers(backbone).embed(model_inputs, tenant_id) if heads.EMBEDDING in head.consumes else None
            proba = await anyio.to_thread.run_sync(lambda: head.predict_proba(vectors, raw=raw))
        else:
            proba = await self.batchers(backbone).predict(model_inputs, head, tenant_id)
        self.tenant_labels.count(tenant_id, len(inputs))
        return ref, number, kind_predictions(ref.kind, head, proba, top_k)


def _active(ref: TaskRef) -> int:
    if ref.active_version is None:
        raise NotTrained(f"task {ref.name!r} has no trained version yet; poll its job and retry when it succeeds")
    return ref.active_version


__all__ = ["AnyPrediction", "HeadCache", "MultiLabelPrediction", "NotFound", "NotTrained", "Prediction", "RegressionPrediction", "Router", "TaskRef", "VersionFailed", "store_head_loader", "top_predictions"]
