"""The in-process caches of the predict path.

- :class:`TTLCache`: a bounded map whose entries expire after a fixed time. It keeps small store
  lookups (task → active version, API key → tenant) off the hot path while bounding how stale a
  process can be about changes another process made.
- :class:`HeadCache`: loaded heads in an LRU budgeted in bytes. Keys are immutable versions, so
  entries never go stale; eviction is silent (the next request reloads from the store), and
  concurrent first requests for one head share a single load.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from typing import Generic, TypeVar

from adapters.heads import Head, ood_of

from . import metrics

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# Per-head bookkeeping beyond its tensors: the Python objects (head, label list, numpy headers,
# cache entry). Calibrated with benchmarks/memory.py (RSS growth per cached 384x10 linear head).
HEAD_OVERHEAD_BYTES = 2048
LABEL_OVERHEAD_BYTES = 64


def head_nbytes(head: Head) -> int:
    """What a loaded head costs in memory: its tensors, its OOD model's, its labels and a fixed overhead."""
    resident = getattr(head, "resident_nbytes", None)  # heads holding more than their tensors (fine-tuned layers)
    tensors = int(resident()) if resident is not None else sum(int(t.nbytes) for t in head.tensors().values())
    labels = sum(LABEL_OVERHEAD_BYTES + len(label.encode("utf-8")) for label in head.labels)
    ood = ood_of(head)  # the version's OOD model: a (dim, dim) whitening matrix dwarfs a linear head
    stats = 0 if ood is None else sum(int(a.nbytes) for a in ood.to_arrays().values())
    return tensors + labels + stats + HEAD_OVERHEAD_BYTES


class TTLCache(Generic[K, V]):
    """At most ``max_entries`` values (least recently used dropped first), each served for at
    most ``ttl_s`` after it was stored. Thread-safe; ``ttl_s <= 0`` disables caching."""

    def __init__(self, ttl_s: float, max_entries: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if self._clock() - entry[0] >= self.ttl_s:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return entry[1]

    def now(self) -> float:
        return self._clock()

    def put(self, key: K, value: V, at: float | None = None) -> None:
        """Store ``value``, read from its source at time ``at`` (default now): it expires ``ttl_s`` after that."""
        if self.ttl_s <= 0:
            return
        with self._lock:
            self._entries[key] = (self._clock() if at is None else at, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def pop(self, key: K) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class HeadCache(Generic[K]):
    """Heads by immutable key (task id, version number), within ``budget_bytes``.

    ``load(key)`` reads and decodes a head (a store round trip); :meth:`get` calls it at most
    once at a time per key. A head larger than the whole budget is served but not kept.
    """

    def __init__(
        self, load: Callable[[K], Head], budget_bytes: int, size_of: Callable[[Head], int] = head_nbytes
    ) -> None:
        self._load = load
        self.budget_bytes = budget_bytes
        self._size_of = size_of
        self._entries: OrderedDict[K, tuple[Head, int]] = OrderedDict()
        self._loading: dict[K, Future] = {}
        self._lock = threading.Lock()
        self.bytes = 0
        self.hits = self.misses = self.evictions = self.loads = 0
        metrics.HEAD_CACHE_BUDGET.set(budget_bytes)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: K) -> bool:
        return key in self._entries

    def peek(self, key: K) -> Head | None:
        """The cached head (counted as a hit), or None; never loads. Cheap enough for the event loop."""
        with self._lock:
            return self._hit(key)

    def get(self, key: K) -> Head:
        """The head for ``key``: from memory, else loaded once however many threads ask."""
        with self._lock:
            head = self._hit(key)
            if head is not None:
                return head
            self.misses += 1
            pending = self._loading.get(key)
            owner = pending is None
            if owner:
                pending = self._loading[key] = Future()
        metrics.HEAD_CACHE_MISSES.inc()
        assert pending is not None  # another loader's, or the one just created
        if not owner:
            return pending.result()
        started = time.perf_counter()
        try:
            head = self._load(key)
        except BaseException as exc:
            with self._lock:
                del self._loading[key]
            pending.set_exception(exc)
            raise
        metrics.HEAD_LOAD_SECONDS.observe(time.perf_counter() - started)
        with self._lock:
            del self._loading[key]
            self.loads += 1
            self._insert(key, head)
        pending.set_result(head)
        return head

    def _hit(self, key: K) -> Head | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        metrics.HEAD_CACHE_HITS.inc()
        return entry[0]

    def _insert(self, key: K, head: Head) -> None:
        size = self._size_of(head)
        if size > self.budget_bytes:
            return
        if key in self._entries:
            self.bytes -= self._entries.pop(key)[1]
        self._entries[key] = (head, size)
        self.bytes += size
        evicted = 0
        while self.bytes > self.budget_bytes:
            _, (_, old_size) = self._entries.popitem(last=False)
            self.bytes -= old_size
            evicted += 1
        self.evictions += evicted
        if evicted:
            metrics.HEAD_CACHE_EVICTIONS.inc(evicted)
        metrics.HEAD_CACHE_BYTES.set(self.bytes)
        metrics.HEAD_CACHE_HEADS.set(len(self._entries))
