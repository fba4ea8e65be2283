"""Predict routing: task → active version → backbone batch → the version's head."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from adapters import heads

from .batching import Batcher
from .store.models import Task
from .store.repository import NotFound, Store


class NotTrained(Exception):
    """The task exists but has no active version yet."""


@dataclass(frozen=True)
class Prediction:
    label: str
    score: float
    scores: dict[str, float]


@dataclass(frozen=True)
class LoadedHead:
    head: heads.Head
    backbone: str  # the backbone the version was trained on (a task with backbone "auto" may change it)


class HeadCache:
    """Loaded heads keyed by version id (versions are immutable, so entries never go stale)."""

    def __init__(self, store: Store, capacity: int) -> None:
        self.store = store
        self.capacity = capacity
        self._heads: OrderedDict[str, LoadedHead] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, task: Task, number: int) -> LoadedHead:
        key = f"{task.id}:{number}"
        with self._lock:
            head = self._heads.get(key)
            if head is not None:
                self._heads.move_to_end(key)
                return head
        version = self.store.version(task.id, number, with_weights=True)
        head = LoadedHead(heads.from_bytes(version.weights), version.backbone)
        with self._lock:
            self._heads[key] = head
            while len(self._heads) > self.capacity:
                self._heads.popitem(last=False)
        return head


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


class Router:
    def __init__(self, store: Store, batchers: Callable[[str], Batcher], head_cache: HeadCache) -> None:
        self.store = store
        self.batchers = batchers
        self.heads = head_cache

    def resolve(self, tenant_id: str, task_name: str) -> tuple[Task, int]:
        task = self.store.get_task(tenant_id, task_name)
        if task.active_version is None:
            raise NotTrained(f"task {task_name!r} has no trained version yet; poll its job and retry when it succeeds")
        return task, task.active_version

    async def predict(
        self, tenant_id: str, task_name: str, inputs: Sequence[str], top_k: int | None = None
    ) -> tuple[Task, int, list[Prediction]]:
        import anyio.to_thread

        task, number = await anyio.to_thread.run_sync(self.resolve, tenant_id, task_name)
        loaded = await anyio.to_thread.run_sync(self.heads.get, task, number)
        head = loaded.head
        vectors = await self.batchers(loaded.backbone).embed(inputs) if heads.EMBEDDING in head.consumes else None
        return task, number, top_predictions(head.labels, head.predict_proba(vectors, raw=inputs), top_k)


__all__ = ["HeadCache", "NotFound", "NotTrained", "Prediction", "Router", "top_predictions"]
