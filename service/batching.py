"""Cross-tenant batching: one worker thread per backbone turns concurrent requests (from any
tenant or task) into backbone passes of at most ``max_batch`` inputs, then applies each
request's head to its rows.

Policy (tuned with benchmarks/http_load.py and benchmarks/inprocess.py; see README):

- A pass starts as soon as the worker is free and work is queued, except that for up to
  ``max_delay_s`` after a pass it waits for the callers that pass answered: they usually come
  straight back (closed-loop clients, pipelines), and merging them with what is queued into one
  full pass beats alternating half-empty passes. A lone caller never waits; an idle worker
  starts at once.
- Requests larger than a pass are split across passes; results always come back in input order.
- Predict traffic goes before training traffic, but when both wait, training gets a quarter of a
  pass so a steady predict load cannot starve it.
- Tenants share the predict part of each pass fairly (:class:`FairQueue`): each tenant has its own
  FIFO sub-queue, and the sub-queues are served round-robin, a tenant taking up to a quantum of
  ``max_batch // 8`` inputs per turn (deficit round robin in inputs). A tenant that floods the
  batcher therefore delays itself; another tenant's request waits for at most one turn of each busy
  tenant, not for the whole backlog.
- The queue is bounded in inputs, overall (``max_queue``) and per tenant (``max_tenant_queue``): a
  predict request that would overflow either (while that queue holds other work) raises
  :class:`Overloaded` (the API answers 503 with Retry-After). A flooding tenant hits its own bound
  long before the shared one, so the others keep being admitted.
- After the pass, the head step (service/engine/heads_step.py) applies each request's head: all
  linear heads of the pass in one stacked matrix product, any other head once on all of its rows;
  rows of fine-tuned heads (``finetune``) skip the pooled embedding and go through the shared trunk.
  The batcher only schedules: it knows which rows belong to which request, not how a head computes.
- Map lane (:class:`MapBatcher`, one per image backbone with feature maps): the same scheduling for the
  CNN's multi-scale feature maps of letterboxed images (detection); each request brings its own head step.
- Audio passes are also bounded in seconds (``max_seconds``, ``GRAFT_BATCH_MAX_AUDIO_SECONDS``): a pass takes
  clips while their summed duration fits, so 64 clips of 30 s do not hold the worker (and every other
  tenant's requests on that backbone) for 64 × 30 s of audio; a pass always takes at least one clip.
- Token lane (:class:`TokenBatcher`, one per text backbone): the same scheduling for per-token states
  (entities, answers); each request brings its own head step, applied to its rows after the pass.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

from adapters.heads import Head, ValueHead
from adapters.kinds import Placed
from adapters.ood import OodModel
from adapters.spans import Encoded
from adapters.spans.finetune import tag_shared

from . import metrics
from .backbones.base import Backbone
from .engine.heads_step import apply_heads, apply_trunk, on_trunk, text_trunk
from .logs import get as get_logger

log = get_logger("batching")

__all__ = [
    "MAP_LANE", "SERVING", "Apply", "ApplyMaps", "Batcher", "FromLower", "MapBatcher", "OodScores", "Overloaded",
    "OwnLayers", "ServingActivity", "TokenBatcher", "TokenInput", "apply_heads", "feature_source", "on_trunk",
    "text_trunk",
]

TRAINING_SHARE = 4  # when both kinds wait, training gets max_batch // TRAINING_SHARE inputs of a pass


class Overloaded(Exception):
    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass
class _Request:
    inputs: Sequence[Any]  # texts, preprocessed images, or TokenInput (the token lane)
    future: Future
    out: Any  # embeddings (n, dim), the head's probabilities (n, labels); the token lane: a list
    head: Any = None  # the head to apply (a Head; the token lane: an Apply), or None
    tenant: str = ""  # whose request (predict traffic is scheduled fairly per tenant)
    ood: OodScores | None = None  # score the request's embeddings for out-of-distribution inputs
    taken: int = 0  # inputs handed to a pass so far
    done: int = 0  # inputs finished so far
    enqueued_at: float = field(default_factory=time.perf_counter)

    @property
    def left(self) -> int:
        return len(self.inputs) - self.taken


Slice = tuple[_Request, int, int]


@dataclass(frozen=True)
class OodScores:
    """A predict request's OOD scoring: ``model`` applied to each input's pooled embedding in the worker,
    right after the pass that computed it (the backbone runs once), written to ``out`` (n,) before the
    request's future resolves. Rows that never had a pooled embedding (fine-tuned heads) stay NaN."""

    model: OodModel
    out: np.ndarray


class ServingActivity:
    """Predict requests in flight in this process, across every batcher. Training steps that do not go
    through a batcher (fine-tuning) wait on it between steps, so predict passes get the cores first."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._busy = 0

    def begin(self) -> None:
        with self._cond:
            self._busy += 1

    def end(self, _: object = None) -> None:
        with self._cond:
            self._busy -= 1
            if self._busy <= 0:
                self._cond.notify_all()

    @property
    def busy(self) -> int:
        return self._busy

    def wait_idle(self, timeout: float) -> bool:
        """Block until no predict request is in flight, or ``timeout`` passed (False then)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._busy <= 0, timeout)


SERVING = ServingActivity()


class Budget:
    """What is left of one pass's bound in a measure other than inputs (an audio pass's seconds): inputs
    are taken while their summed cost fits; the first input of a pass is always taken, so an input larger
    than the whole bound still runs (alone)."""

    def __init__(self, limit: float, cost: Callable[[Any], float]) -> None:
        self.left, self.cost, self.taken = float(limit), cost, 0

    def fits(self, inputs: Sequence[Any], start: int, n: int) -> int:
        """How many of ``inputs[start:start + n]`` fit in what is left (their cost is then spent)."""
        fit = 0
        for item in inputs[start : start + n]:
            cost = self.cost(item)
            if self.taken and cost > self.left:
                self.left = 0.0
                break
            self.left -= cost
            self.taken += 1
            fit += 1
        return fit

    @property
    def spent(self) -> bool:
        return self.taken > 0 and self.left <= 0


def _fill(queue: deque[_Request], room: int, batch: list[Slice], budget: Budget | None = None) -> tuple[int, int]:
    """Move up to ``room`` inputs from the front of ``queue`` into ``batch`` (and, with ``budget``, as many as
    fit in it). Returns (inputs moved, inputs dropped): a cancelled request (its caller went away) is removed
    with the rest of its inputs."""
    moved = dropped = 0
    while queue and moved < room and not (budget is not None and budget.spent):
        req = queue[0]
        if req.future.cancelled():
            dropped += req.left
            queue.popleft()
            continue
        n = min(room - moved, req.left)
        if budget is not None:
            n = budget.fits(req.inputs, req.taken, n)
            if not n:
                break
        batch.append((req, req.taken, req.taken + n))
        req.taken += n
        moved += n
        if not req.left:
            queue.popleft()
    return moved, dropped


class FairQueue:
    """Predict requests, one FIFO sub-queue per tenant, served by deficit round robin in inputs.

    Tenants with queued work form a ring. The tenant at its head gets ``quantum`` inputs of credit when
    its turn starts and hands inputs to the pass until its credit or its sub-queue runs out, then goes
    to the back of the ring (or leaves it, empty, forgetting its credit). A pass that fills up in the
    middle of a turn leaves the tenant at the head with the rest of its credit, so the next pass
    continues where this one stopped. Within a tenant, requests keep their FIFO order. Not thread-safe:
    the :class:`Batcher` holds its lock around every call.
    """

    def __init__(self, quantum: int) -> None:
        self.quantum = max(1, quantum)
        self._queues: dict[str, deque[_Request]] = {}
        self._ring: deque[str] = deque()  # tenants with queued requests, in serving order
        self._credit: dict[str, int] = {}
        self._queued: dict[str, int] = {}  # inputs queued per tenant, not yet handed to a pass

    def __bool__(self) -> bool:
        return bool(self._ring)

    def queued(self, tenant: str) -> int:
        return self._queued.get(tenant, 0)

    def push(self, request: _Request) -> None:
        tenant = request.tenant
        if tenant not in self._queues:
            self._queues[tenant] = deque()
            self._credit[tenant] = 0
            self._queued[tenant] = 0
            self._ring.append(tenant)
        self._queues[tenant].append(request)
        self._queued[tenant] += request.left

    def fill(self, room: int, batch: list[Slice], budget: Budget | None = None) -> tuple[int, int]:
        """Hand up to ``room`` inputs to ``batch``, tenants in turn (within ``budget`` when given). Returns
        (moved, dropped) like :func:`_fill`."""
        moved = dropped = 0
        while self._ring and moved < room and not (budget is not None and budget.spent):
            tenant = self._ring[0]
            queue = self._queues[tenant]
            if self._credit[tenant] <= 0:  # a new turn
                self._credit[tenant] += self.quantum
            m, d = _fill(queue, min(room - moved, self._credit[tenant]), batch, budget)
            self._credit[tenant] -= m
            self._queued[tenant] -= m + d
            moved, dropped = moved + m, dropped + d
            if not queue:  # nothing left: out of the ring until its next request
                del self._queues[tenant], self._credit[tenant], self._queued[tenant]
                self._ring.popleft()
            elif self._credit[tenant] <= 0:  # turn used up: to the back
                self._ring.rotate(-1)
        return moved, dropped


class Batcher:
    def __init__(
        self,
        backbone: Backbone,
        max_batch: int = 64,
        max_delay_s: float = 0.002,
        max_queue: int = 4096,
        max_tenant_queue: int | None = None,
        max_seconds: float | None = None,
    ) -> None:
        self.backbone = backbone
        self.max_batch = max_batch
        # audio backbones: a pass's clips are bounded in summed seconds too (inputs are samples at ``sample_rate``)
        rate = getattr(backbone, "sample_rate", None) if getattr(backbone, "modality", "") == "audio" else None
        self.max_seconds = max_seconds if rate and max_seconds else None
        self._rate = float(rate or 1)
        self.max_delay_s = max_delay_s
        self.max_queue = max_queue
        self.max_tenant_queue = max_queue if max_tenant_queue is None else max_tenant_queue
        self._high = FairQueue(quantum=max(1, max_batch // 8))  # predict traffic, fair across tenants
        self._low: deque[_Request] = deque()
        self._pending = 0
        self._cond = threading.Condition()
        self._closed = False
        self._seconds_per_input = 0.01  # running estimate, for Retry-After
        self._expect = 1  # inputs worth waiting for: those queued plus the last pass's returning callers
        self._pass_end = 0.0  # when the previous pass delivered its results
        self._labels = {"backbone": backbone.name}
        self._thread = threading.Thread(target=self._run, name=f"batcher-{backbone.name}", daemon=True)
        self._thread.start()

    # -- submitting ------------------------------------------------------------------------

    def submit(
        self,
        inputs: Sequence[str],
        *,
        background: bool = False,
        head: Head | None = None,
        tenant: str = "",
        ood: OodScores | None = None,
    ) -> Future:
        """Queue ``inputs``; the future gets their embeddings, or ``head``'s probabilities when given.
        Predict traffic (not ``background``) is scheduled fairly among ``tenant`` values. ``ood``: also
        score each input's embedding with an OOD model, into ``ood.out``, before the future resolves."""
        width = self.backbone.dim if head is None else len(head.labels)
        shape = (len(inputs),) if isinstance(head, ValueHead) else (len(inputs), width)  # regression: values (n,)
        return self._submit(inputs, np.empty(shape, dtype=np.float32), head, tenant, background, ood)

    def _submit(
        self, inputs: Sequence[Any], out: Any, head: Any, tenant: str, background: bool, ood: OodScores | None = None
    ) -> Future:
        """Queue ``inputs`` whose results the worker writes into ``out`` (rows in input order)."""
        future: Future = Future()
        if not inputs:
            future.set_result(out)
            return future
        with self._cond:
            if self._closed:
                raise Overloaded("the service is shutting down", 1.0)
            if not background and self._pending and self._pending + len(inputs) > self.max_queue:
                metrics.REJECTED.labels(**self._labels).inc(len(inputs))
                wait = max(1.0, self._pending * self._seconds_per_input)
                raise Overloaded(f"{self._pending} inputs are queued for backbone {self.backbone.name!r}", wait)
            mine = 0 if background else self._high.queued(tenant)
            if mine and mine + len(inputs) > self.max_tenant_queue:  # this tenant's own backlog is full
                metrics.REJECTED.labels(**self._labels).inc(len(inputs))
                wait = max(1.0, mine * self._seconds_per_input)
                raise Overloaded(
                    f"{mine} of this tenant's inputs are already queued for backbone {self.backbone.name!r}; the "
                    "limit is "
                    f"{self.max_tenant_queue} per tenant. Wait for your earlier requests or send fewer inputs at once",
                    wait,
                )
            request = _Request(inputs, future, out, head, tenant, ood)
            if background:
                self._low.append(request)
            else:
                self._high.push(request)
                SERVING.begin()
                future.add_done_callback(SERVING.end)
            self._pending += len(inputs)
            metrics.QUEUE_INPUTS.labels(**self._labels).set(self._pending)
            self._cond.notify()
        return future

    async def embed(self, inputs: Sequence[str], tenant: str = "") -> np.ndarray:
        return await asyncio.wrap_future(self.submit(inputs, tenant=tenant))

    async def predict(
        self, inputs: Sequence[str], head: Head, tenant: str = "", ood: OodScores | None = None
    ) -> np.ndarray:
        """``head``'s probabilities for ``inputs``, computed in a shared backbone pass (and their OOD
        scores into ``ood.out``, when given)."""
        return await asyncio.wrap_future(self.submit(inputs, head=head, tenant=tenant, ood=ood))

    def embed_sync(self, inputs: Sequence[str], *, background: bool = False) -> np.ndarray:
        return self.submit(inputs, background=background).result()

    @property
    def pending(self) -> int:
        return self._pending

    def close(self, timeout: float = 30.0) -> None:
        """Finish what is queued, then stop the worker."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)

    # -- the worker ------------------------------------------------------------------------

    def _take(self) -> list[Slice]:
        """Pop up to ``max_batch`` inputs: (request, start, stop) slices. Caller holds the lock.

        Predict first (tenants in turn), keeping a quarter of the pass for training when it waits;
        then training; then predict again into whatever training left unused."""
        batch: list[Slice] = []
        budget = None if self.max_seconds is None else Budget(self.max_seconds, self._seconds_of)
        reserve = max(1, self.max_batch // TRAINING_SHARE) if self._low else 0
        if budget is not None and self._low:  # the training share, in seconds too
            budget.left = self.max_seconds * (1 - 1 / TRAINING_SHARE)  # type: ignore[operator]
        moved, dropped = self._high.fill(self.max_batch - reserve, batch, budget)
        if budget is not None and self._low:
            budget.left += self.max_seconds / TRAINING_SHARE  # type: ignore[operator]
        m, d = _fill(self._low, self.max_batch - moved, batch, budget)
        moved, dropped = moved + m, dropped + d
        m, d = self._high.fill(self.max_batch - moved, batch, budget)
        moved, dropped = moved + m, dropped + d
        self._pending -= moved + dropped
        metrics.QUEUE_INPUTS.labels(**self._labels).set(self._pending)
        return batch

    def _seconds_of(self, item: Any) -> float:
        """An audio input's duration: its samples at the backbone's rate."""
        return len(item) / self._rate

    def _run(self) -> None:
        while True:
            with self._cond:
                while not (self._high or self._low):
                    if self._closed:
                        return
                    self._cond.wait()
                # Until max_delay after the previous pass, wait for the callers it answered to come
                # back: they usually do at once (closed-loop clients, pipelines), and one full pass
                # beats alternating half-empty ones. A lone caller never waits.
                deadline = self._pass_end + self.max_delay_s
                while self._pending < self._expect and not self._closed:
                    remaining = deadline - time.perf_counter()
                    if remaining <= 0 or not self._cond.wait(remaining):
                        break
                batch = self._take()
            if batch:
                try:
                    self._process(batch)
                except Exception as exc:  # never let one batch kill the worker
                    log.exception("batch failed", extra={"backbone": self.backbone.name})
                    self._fail(batch, exc)
            answered = sum(stop - start for _, start, stop in batch)
            self._expect = min(self.max_batch, self._pending + answered)
            self._pass_end = time.perf_counter()

    def _fail(self, batch: list[Slice], exc: BaseException) -> None:
        for req, _, _ in batch:
            if not req.future.done():
                req.future.set_exception(exc)

    def _process(self, batch: list[Slice]) -> None:
        texts = [text for req, start, stop in batch for text in req.inputs[start:stop]]
        started = time.perf_counter()
        for req, start, _ in batch:
            if start == 0:
                metrics.QUEUE_DELAY.labels(**self._labels).observe(started - req.enqueued_at)
        tokens_before = _token_counts(self.backbone)
        # Rows of fine-tuned heads take the shared-trunk path; every other row the pooled embedding.
        tuned = [i for i, (req, _, _) in enumerate(batch) if on_trunk(req.head)]
        plain = [i for i in range(len(batch)) if i not in set(tuned)]
        outputs: list[np.ndarray | Exception | None] = [None] * len(batch)
        if plain:
            plain_texts = [text for i in plain for text in batch[i][0].inputs[batch[i][1] : batch[i][2]]]
            try:
                vectors = self.backbone.embed(plain_texts)
            except Exception as exc:  # deliver the failure to every waiting request
                log.exception("backbone batch failed", extra={"backbone": self.backbone.name, "batch": len(texts)})
                self._fail(batch, exc)
                return
            bounds, row = [], 0
            for i in plain:
                req, start, stop = batch[i]
                bounds.append((req.head, row, row + stop - start))
                row += stop - start
            for i, out in zip(plain, apply_heads(vectors, bounds), strict=True):
                outputs[i] = out
            self._score_ood(batch, plain, vectors)
        if tuned:
            self._apply_trunk(batch, tuned, outputs)
        elapsed = time.perf_counter() - started
        self._seconds_per_input = 0.8 * self._seconds_per_input + 0.2 * elapsed / len(texts)
        self._observe(len(texts), elapsed, tokens_before)
        self._deliver(batch, outputs)

    def _deliver(self, batch: list[Slice], outputs: Sequence[Any]) -> None:
        """Each slice's result into its request (an exception fails the request); complete requests resolve."""
        for (req, start, stop), result in zip(batch, outputs, strict=True):
            if isinstance(result, Exception):
                if not req.future.done():
                    req.future.set_exception(result)
                continue
            req.out[start:stop] = result
            req.done += stop - start
            if req.done == len(req.inputs) and not req.future.done():
                req.future.set_result(req.out)

    @staticmethod
    def _score_ood(batch: list[Slice], plain: list[int], vectors: np.ndarray) -> None:
        """OOD scores of the requests that asked for them, on the rows of this pass's pooled embeddings."""
        row = 0
        for i in plain:
            req, start, stop = batch[i]
            if req.ood is not None:
                try:
                    req.ood.out[start:stop] = req.ood.model.score(vectors[row : row + stop - start])
                except Exception:  # a broken OOD model must not fail the prediction: its rows stay unscored
                    log.exception("OOD scoring failed", extra={"rows": stop - start})
            row += stop - start

    def _apply_trunk(
        self, batch: list[Slice], members: list[int], outputs: list[np.ndarray | Exception | None]
    ) -> None:
        """Fine-tuned rows of all tasks: the frozen lower layers once, then each task's top layers."""
        texts = [text for i in members for text in batch[i][0].inputs[batch[i][1] : batch[i][2]]]
        row_heads = [cast(Head, batch[i][0].head) for i in members for _ in range(batch[i][2] - batch[i][1])]
        try:
            proba = apply_trunk(self.backbone, texts, row_heads)
        except Exception as exc:  # fails the fine-tuned requests only
            log.exception("fine-tuned heads failed", extra={"backbone": self.backbone.name})
            for i in members:
                outputs[i] = exc
            return
        row = 0
        for i in members:
            req, start, stop = batch[i]
            outputs[i] = proba[row : row + stop - start, : len(cast(Head, req.head).labels)]
            row += stop - start

    def _observe(self, size: int, seconds: float, tokens_before: tuple[int, int] | None, counted: Any = None) -> None:
        metrics.BATCH_SIZE.labels(**self._labels).observe(size)
        metrics.INFERENCE_SECONDS.labels(**self._labels).observe(seconds)
        after = _token_counts(counted if counted is not None else self.backbone)
        if tokens_before is not None and after is not None and after[1] > tokens_before[1]:
            real, padded = after[0] - tokens_before[0], after[1] - tokens_before[1]
            metrics.PADDING_RATIO.labels(**self._labels).observe(1.0 - real / padded)


@dataclass(frozen=True)
class TokenInput:
    """One input of the token lane: the text whose tokens are labelled, the question for question-answering
    (None otherwise), and the task kind's decoded input (what its head's answer is built from)."""

    text: str
    question: str | None = None
    value: Any = None


# A token-lane head step: (a request's inputs in this pass, their token states) → one answer per input.
Apply = Callable[[Sequence[TokenInput], list[Encoded]], list[Any]]


@dataclass(frozen=True)
class OwnLayers:
    """A token-lane request whose head runs its own top layers (a fine-tuned entities tagger,
    adapters/spans/finetune.py): its rows take no last-layer states; the lane runs the frozen lower layers
    once for all such rows of a pass, every task's top layers on its rows (``tag_shared``), then ``apply``
    on the request's rows and their :class:`~adapters.spans.finetune.Tagged` results."""

    head: Any
    apply: Callable[[Sequence[TokenInput], list[Any]], list[Any]]


class TokenBatcher(Batcher):
    """The token lane of a text backbone: passes of per-token states (``token_states``) for the token kinds
    (entities, answers), scheduled exactly like the pooled lane (cross-tenant passes, fair per tenant,
    predict before training, bounded queues). A pass runs the windows of all its texts as one
    length-sorted micro-batched pass (texts with questions and texts without in one call each), then each
    request's head step (:data:`Apply`) on its rows; training requests get the states themselves. Requests of
    fine-tuned heads (:class:`OwnLayers`) take no last-layer states: their rows share one pass of the frozen
    lower layers, then each task's own top layers."""

    def __init__(self, backbone: Backbone, *args: Any, overlap: int = 64, **kwargs: Any) -> None:
        source = text_trunk(backbone)
        if source is None or not hasattr(source, "token_states"):
            raise ValueError(f"backbone {backbone.name!r} has no per-token states")
        self.source: Any = source
        self.overlap = overlap
        super().__init__(backbone, *args, **kwargs)
        self._labels = {"backbone": f"{backbone.name}{TOKEN_LANE}"}
        self._thread.name = f"batcher-{backbone.name}{TOKEN_LANE}"

    def submit_tokens(
        self,
        inputs: Sequence[TokenInput],
        *,
        apply: Apply | OwnLayers | None = None,
        background: bool = False,
        tenant: str = "",
    ) -> Future:
        """Queue ``inputs``; the future gets ``apply``'s answers (one per input), or their token states."""
        return self._submit(inputs, [None] * len(inputs), apply, tenant, background)

    async def run(self, inputs: Sequence[TokenInput], apply: Apply | OwnLayers, tenant: str = "") -> list[Any]:
        return await asyncio.wrap_future(self.submit_tokens(inputs, apply=apply, tenant=tenant))

    def states_sync(self, inputs: Sequence[TokenInput], *, background: bool = True) -> list[Encoded]:
        return self.submit_tokens(inputs, background=background).result()

    def _states(self, items: Sequence[TokenInput]) -> list[Encoded]:
        out: list[Encoded | None] = [None] * len(items)
        plain = [i for i, item in enumerate(items) if item.question is None]
        paired = [i for i, item in enumerate(items) if item.question is not None]
        for idx, questions in ((plain, None), (paired, [cast(str, items[i].question) for i in paired])):
            if idx:
                found = self.source.token_states([items[i].text for i in idx], questions, overlap=self.overlap)
                for i, encoded in zip(idx, found, strict=True):
                    out[i] = encoded
        return cast(list[Encoded], out)

    def _tagged(self, batch: list[Slice], own: list[int]) -> list[Any] | Exception:
        """The rows of the pass's fine-tuned requests through their own top layers, the lower layers shared."""
        texts = [item.text for k in own for item in batch[k][0].inputs[batch[k][1] : batch[k][2]]]
        row_heads = [batch[k][0].head.head for k in own for _ in range(batch[k][2] - batch[k][1])]
        try:
            return tag_shared(self.source, texts, row_heads)
        except Exception as exc:  # fails the fine-tuned requests only
            log.exception("fine-tuned token heads failed", extra={"backbone": self.backbone.name})
            return exc

    def _process(self, batch: list[Slice]) -> None:
        own = [k for k, (req, _, _) in enumerate(batch) if isinstance(req.head, OwnLayers)]
        plain = [k for k in range(len(batch)) if k not in set(own)]
        items = [item for k in plain for item in batch[k][0].inputs[batch[k][1] : batch[k][2]]]
        started = time.perf_counter()
        for req, start, _ in batch:
            if start == 0:
                metrics.QUEUE_DELAY.labels(**self._labels).observe(started - req.enqueued_at)
        tokens_before = _token_counts(self.source)
        try:
            encoded = self._states(items)
        except Exception as exc:  # deliver the failure to every waiting request
            log.exception("token-state batch failed", extra={"backbone": self.backbone.name, "batch": len(items)})
            self._fail([batch[k] for k in plain], exc)
            encoded = []
            plain = []
        tagged = self._tagged(batch, own) if own else []
        outputs: list[Any] = [None] * len(batch)
        row = 0
        for k in plain:
            req, start, stop = batch[k]
            mine = encoded[row : row + stop - start]
            row += stop - start
            if req.head is None:
                outputs[k] = mine
                continue
            try:
                outputs[k] = req.head(req.inputs[start:stop], mine)
            except Exception as exc:  # a broken head fails its own request only
                outputs[k] = exc
        row = 0
        for k in own:
            req, start, stop = batch[k]
            if isinstance(tagged, Exception):
                outputs[k] = tagged
                continue
            try:
                outputs[k] = req.head.apply(req.inputs[start:stop], tagged[row : row + stop - start])
            except Exception as exc:
                outputs[k] = exc
            row += stop - start
        done = [k for k in range(len(batch)) if outputs[k] is not None]  # the rest failed with their state pass
        n = sum(stop - start for _, start, stop in batch)
        elapsed = time.perf_counter() - started
        self._seconds_per_input = 0.8 * self._seconds_per_input + 0.2 * elapsed / n
        self._observe(n, elapsed, tokens_before, self.source)
        self._deliver([batch[k] for k in done], [outputs[k] for k in done])


TOKEN_LANE = "/tokens"  # the token lane's batcher label: "<backbone>/tokens"
MAP_LANE = "/maps"  # the map lane's batcher label: "<backbone>/maps"

def feature_source(backbone: Backbone) -> Any | None:
    """The torch CNN that computes a backbone's feature maps (an ONNX-served image backbone keeps its torch
    origin), or None: the backbone has none."""
    source = getattr(backbone, "origin", backbone)
    return source if hasattr(source, "feature_maps") else None


# A map-lane head step: (a request's letterboxed images in this pass, their feature maps) → one answer per image.
ApplyMaps = Callable[[Sequence[Placed], np.ndarray], list[Any]]


@dataclass(frozen=True)
class FromLower:
    """A map-lane head step that reads the frozen states below the CNN's top ``k`` stride-16 blocks
    (``feature_states``) instead of the maps: a fine-tuned detection head, which runs its own copies of those
    blocks. The pass computes the frozen part once for all its images; the maps of the other requests are
    finished from the same states by the frozen top blocks."""

    apply: ApplyMaps
    k: int

    def __call__(self, placed: Sequence[Placed], states: np.ndarray) -> list[Any]:
        return self.apply(placed, states)


class MapBatcher(Batcher):
    """The map lane of an image backbone: passes of multi-scale feature maps (``feature_maps``) of letterboxed
    canvases for the detection kind, scheduled exactly like the pooled lane (cross-tenant passes, fair per
    tenant, predict before training, bounded queues). A pass runs the canvases of all its requests through the
    CNN once, then each request's head step (:data:`ApplyMaps`) on its rows; training requests get the maps."""

    def __init__(self, backbone: Backbone, *args: Any, **kwargs: Any) -> None:
        source = feature_source(backbone)
        if source is None:
            raise ValueError(f"backbone {backbone.name!r} has no feature maps")
        self.source: Any = source
        # the maps' last channels, the stride-16 activations: detection's pooled embedding (None: all channels)
        self.coarse_channels: int | None = getattr(source, "coarse_channels", None)
        super().__init__(backbone, *args, **kwargs)
        self._labels = {"backbone": f"{backbone.name}{MAP_LANE}"}
        self._thread.name = f"batcher-{backbone.name}{MAP_LANE}"

    def submit_maps(
        self, inputs: Sequence[Placed], *, apply: ApplyMaps | None = None, background: bool = False, tenant: str = ""
    ) -> Future:
        """Queue ``inputs``; the future gets ``apply``'s answers (one per input), or their feature maps."""
        return self._submit(inputs, [None] * len(inputs), apply, tenant, background)

    async def run(self, inputs: Sequence[Placed], apply: ApplyMaps, tenant: str = "") -> list[Any]:
        return await asyncio.wrap_future(self.submit_maps(inputs, apply=apply, tenant=tenant))

    def maps_sync(self, inputs: Sequence[Placed], *, background: bool = True) -> np.ndarray:
        maps = self.submit_maps(inputs, background=background).result()
        return np.stack(maps) if len(maps) else np.zeros((0,), dtype=np.float32)

    def states_sync(self, inputs: Sequence[Placed], k: int, *, background: bool = True) -> np.ndarray:
        """The frozen states below the top ``k`` blocks (``feature_states``) of ``inputs``, through the lane."""
        rows = self.submit_maps(inputs, apply=FromLower(lambda _, states: list(states), k), background=background)
        got = rows.result()
        return np.stack(got) if len(got) else np.zeros((0,), dtype=np.float32)

    def _features(
        self, batch: list[Slice], pixels: list[np.ndarray]
    ) -> tuple[np.ndarray | None, dict[int, np.ndarray]]:
        """One pass's maps (None: no request reads them) and the frozen states per split ``k`` requested."""
        wanted = sorted({req.head.k for req, _, _ in batch if isinstance(req.head, FromLower)})
        if not wanted:
            return self.source.feature_maps(pixels), {}
        states = {k: self.source.feature_states(pixels, k) for k in wanted}  # one k in practice (TUNED_BLOCKS)
        plain = any(not isinstance(req.head, FromLower) for req, _, _ in batch)
        return (self.source.maps_from_states(states[wanted[0]], wanted[0]) if plain else None), states

    def _process(self, batch: list[Slice]) -> None:
        items = [item for req, start, stop in batch for item in req.inputs[start:stop]]
        started = time.perf_counter()
        for req, start, _ in batch:
            if start == 0:
                metrics.QUEUE_DELAY.labels(**self._labels).observe(started - req.enqueued_at)
        try:
            maps, states = self._features(batch, [item.pixels for item in items])
        except Exception as exc:  # deliver the failure to every waiting request
            log.exception("feature-map batch failed", extra={"backbone": self.backbone.name, "batch": len(items)})
            self._fail(batch, exc)
            return
        outputs: list[Any] = []
        row = 0
        for req, start, stop in batch:
            source = states[req.head.k] if isinstance(req.head, FromLower) else maps
            mine = cast(np.ndarray, source)[row : row + stop - start]
            row += stop - start
            if req.head is None:
                outputs.append(list(mine))
                continue
            try:
                outputs.append(req.head(req.inputs[start:stop], mine))
            except Exception as exc:  # a broken head fails its own request only
                outputs.append(exc)
        elapsed = time.perf_counter() - started
        self._seconds_per_input = 0.8 * self._seconds_per_input + 0.2 * elapsed / len(items)
        self._observe(len(items), elapsed, None)
        self._deliver(batch, outputs)


def _token_counts(backbone: Backbone) -> tuple[int, int] | None:
    """(real, padded) token positions a backbone has processed so far, if it counts them."""
    real, padded = getattr(backbone, "real_tokens", None), getattr(backbone, "padded_tokens", None)
    return None if real is None or padded is None else (int(real), int(padded))
