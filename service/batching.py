"""Cross-tenant batching: one worker thread per backbone turns concurrent embed requests
(from any tenant or task) into backbone batches of at most ``max_batch`` inputs.

A batch is started as soon as the worker is free; it waits at most ``max_delay_s`` for more
requests to fill up. Requests larger than a batch are split across batches; results come
back in input order. Predict traffic goes before training traffic. The queue is bounded in
inputs: beyond it :class:`Overloaded` is raised (the API answers 503 with Retry-After).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from .backbones.base import Backbone
from .logs import get as get_logger

log = get_logger("batching")


class Overloaded(Exception):
    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass
class _Request:
    inputs: Sequence[str]
    future: Future
    out: np.ndarray
    taken: int = 0  # inputs handed to a batch so far
    done: int = 0  # inputs embedded so far
    enqueued_at: float = field(default_factory=time.perf_counter)


class Batcher:
    def __init__(self, backbone: Backbone, max_batch: int = 64, max_delay_s: float = 0.005, max_queue: int = 4096) -> None:
        self.backbone = backbone
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        self.max_queue = max_queue
        self._high: deque[_Request] = deque()
        self._low: deque[_Request] = deque()
        self._pending = 0
        self._cond = threading.Condition()
        self._closed = False
        self._seconds_per_input = 0.01  # running estimate, for Retry-After
        self._thread = threading.Thread(target=self._run, name=f"batcher-{backbone.name}", daemon=True)
        self._thread.start()

    # -- submitting ------------------------------------------------------------------------

    def submit(self, inputs: Sequence[str], *, background: bool = False) -> Future:
        future: Future = Future()
        if not inputs:
            future.set_result(np.zeros((0, self.backbone.dim), dtype=np.float32))
            return future
        with self._cond:
            if self._closed:
                raise Overloaded("the service is shutting down", 1.0)
            if not background and self._pending + len(inputs) > self.max_queue:
                wait = max(1.0, self._pending * self._seconds_per_input)
                raise Overloaded(f"{self._pending} inputs are queued for backbone {self.backbone.name!r}", wait)
            request = _Request(inputs, future, np.empty((len(inputs), self.backbone.dim), dtype=np.float32))
            (self._low if background else self._high).append(request)
            self._pending += len(inputs)
            self._cond.notify()
        return future

    async def embed(self, inputs: Sequence[str]) -> np.ndarray:
        return await asyncio.wrap_future(self.submit(inputs))

    def embed_sync(self, inputs: Sequence[str], *, background: bool = False) -> np.ndarray:
        return self.submit(inputs, background=background).result()

    def close(self, timeout: float = 30.0) -> None:
        """Finish what is queued, then stop the worker."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)

    # -- the worker ------------------------------------------------------------------------

    def _take(self) -> list[tuple[_Request, int, int]]:
        """Pop up to ``max_batch`` inputs: (request, start, stop) slices. Caller holds the lock."""
        batch: list[tuple[_Request, int, int]] = []
        room = self.max_batch
        for queue in (self._high, self._low):
            while queue and room:
                req = queue[0]
                n = min(room, len(req.inputs) - req.taken)
                batch.append((req, req.taken, req.taken + n))
                req.taken += n
                room -= n
                if req.taken == len(req.inputs):
                    queue.popleft()
        self._pending -= self.max_batch - room
        return batch

    def _run(self) -> None:
        while True:
            with self._cond:
                while not (self._high or self._low):
                    if self._closed:
                        return
                    self._cond.wait()
                deadline = time.perf_counter() + self.max_delay_s
                while self._pending < self.max_batch and not self._closed:
                    remaining = deadline - time.perf_counter()
                    if remaining <= 0 or not self._cond.wait(remaining):
                        break
                batch = self._take()
            self._process(batch)

    def _process(self, batch: list[tuple[_Request, int, int]]) -> None:
        texts = [text for req, start, stop in batch for text in req.inputs[start:stop]]
        started = time.perf_counter()
        try:
            vectors = self.backbone.embed(texts)
        except Exception as exc:  # deliver the failure to every waiting request
            log.exception("backbone batch failed", extra={"backbone": self.backbone.name, "batch": len(texts)})
            for req, _, _ in batch:
                if not req.future.done():
                    req.future.set_exception(exc)
            return
        elapsed = time.perf_counter() - started
        self._seconds_per_input = 0.8 * self._seconds_per_input + 0.2 * elapsed / len(texts)
        row = 0
        for req, start, stop in batch:
            req.out[start:stop] = vectors[row : row + stop - start]
            row += stop - start
            req.done += stop - start
            if req.done == len(req.inputs) and not req.future.done():
                req.future.set_result(req.out)
