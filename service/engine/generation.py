"""Generation serving: one causal LM per process, many tenants' LoRA adapters, one decoding batch.

- The base model is loaded once, lazily (the first generate request or generation job), from
  ``GRAFT_GENERATION_MODEL`` (default: the packaged SmolLM2), a GGUF model through its dequantised copy in
  ``GRAFT_GENERATION_MODEL_CACHE_DIR``. Its attention projections are wrapped by :class:`MultiLora` slots
  (adapters/generation/multi.py): every row of a batch decodes with its own adapter, or none.
- :class:`AdapterSlots`: which adapter (a version, keyed ``task id:version``) holds which slot. The number of
  slots is the byte budget (``GRAFT_GENERATION_ADAPTER_CACHE_MB``) over one slot's bytes; an adapter no queued
  or running row uses is evicted least recently used first when another needs its slot. A request whose adapter
  finds no slot (every one in use) waits in the backlog until a row finishes.
- :class:`Scheduler`: one thread that owns the :class:`BatchDecoder` (nothing else touches it) and drives
  ``step()``: between steps it takes new requests (continuous batching: their rows join the running batch at
  the next step), cancellations (a client that went away: its rows leave the batch at the next step and free
  their adapter) and hands each step's events to the requests' sinks.
- Training (service/pipeline.py) gets a fresh copy of the base model for each job (:meth:`GenerationEngine.
  training_model`): the serving model is wrapped in place and never trained.
"""

from __future__ import annotations

import copy
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adapters.generation import (
    BatchDecoder,
    Completion,
    DecodeLimits,
    LoraWeights,
    MultiLora,
    SamplingParams,
    load_causal_lm,
    prompt_ids,
)
from adapters.generation.decoding import CANCELLED
from adapters.generation.training import DEFAULT_TARGETS

from .. import logs, metrics
from ..batching import Overloaded

log = logs.get("generation")

MAX_RANK = 8  # the adapters Graft trains are rank 8 (LoraTrainConfig); slots are padded to this rank
MAX_SLOTS = 1024
PACKAGED = "smollm2-135m-instruct"


@dataclass(frozen=True)
class ModelSpec:
    """Which causal LM to load, and where a GGUF model's dequantised copy is kept."""

    name_or_path: str | None  # None: the packaged SmolLM2
    gguf_file: str | None
    cache_dir: Path | None
    dtype: torch.dtype = torch.float32

    @property
    def name(self) -> str:
        """The model's name as versions record it (their ``backbone``)."""
        return PACKAGED if self.name_or_path is None else str(self.name_or_path)

    def load(self) -> tuple[Any, Any]:
        return load_causal_lm(self.name_or_path, gguf_file=self.gguf_file, dtype=self.dtype, cache_dir=self.cache_dir)


def slot_bytes(model: nn.Module, targets: Sequence[str] = DEFAULT_TARGETS, max_rank: int = MAX_RANK) -> int:
    """Bytes one adapter slot takes on ``model``: A (rank x in) and B (out x rank) per targeted linear."""
    return sum(
        (m.in_features + m.out_features) * max_rank * m.weight.element_size()
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear) and name.split(".")[-1] in targets
    )


class AdapterSlots:
    """The adapters in a :class:`MultiLora`'s slots: use counts, and least-recently-used order among them."""

    def __init__(self, lora: MultiLora) -> None:
        self.lora = lora
        self.users: dict[str, int] = {}
        self.order: OrderedDict[str, None] = OrderedDict()  # resident adapters, least recently used first

    @property
    def resident(self) -> list[str]:
        return list(self.order)

    def acquire(self, key: str, weights: Callable[[], LoraWeights]) -> bool:
        """Hold ``key``'s slot for one more request, loading it (``weights()``) into a free slot or the least
        recently used one nobody uses; False when every slot is in use (the request waits)."""
        if key in self.order:
            self.order.move_to_end(key)
            self.users[key] = self.users.get(key, 0) + 1
            metrics.GENERATION_ADAPTER_HITS.inc()
            return True
        if len(self.order) >= self.lora.capacity:
            idle = next((k for k in self.order if not self.users.get(k)), None)
            if idle is None:
                return False
            self._evict(idle)
        self.lora.load(key, weights())
        self.order[key] = None
        self.users[key] = 1
        metrics.GENERATION_ADAPTER_LOADS.inc()
        metrics.GENERATION_ADAPTER_SLOTS.set(len(self.order))
        return True

    def release(self, key: str) -> None:
        left = self.users.get(key, 0) - 1
        if left > 0:
            self.users[key] = left
        else:
            self.users.pop(key, None)

    def _evict(self, key: str) -> None:
        self.order.pop(key, None)
        self.users.pop(key, None)
        self.lora.unload(key)
        metrics.GENERATION_ADAPTER_EVICTIONS.inc()
        metrics.GENERATION_ADAPTER_SLOTS.set(len(self.order))


@dataclass
class Piece:
    """What the scheduler reports for one input of a request: a text delta (and its token), and when the
    input is done, its ``completion``."""

    index: int
    delta: str
    token: int | None  # None: no new token (the end of the turn, or a cancellation)
    completion: Completion | None = None


@dataclass
class Request:
    """One generate request's inputs, decoded with one adapter (``adapter`` None: the base model)."""

    prompts: list[list[int]]
    params: SamplingParams
    sink: Callable[[Piece], None]  # called from the scheduler thread
    adapter: str | None = None
    weights: Callable[[], LoraWeights] | None = None
    task: str | None = None  # the adapter's task id: its per-adapter metrics' key (every version is one adapter)
    label: str = metrics.BASE  # its `adapter` label value, given when its rows go to the decoder
    seqs: list[int] = field(default_factory=list)
    left: int = 0  # inputs not finished yet
    cancelled: bool = False
    queued_at: float = field(default_factory=time.perf_counter)


class Scheduler:
    """Drives a :class:`BatchDecoder` from one thread (see the module's docstring)."""

    def __init__(
        self,
        decoder: BatchDecoder,
        slots: AdapterSlots | None,
        queue_size: int,
        labels: metrics.AdapterLabels | None = None,
    ) -> None:
        self.decoder = decoder
        self.slots = slots
        self.queue_size = queue_size
        self.labels = labels if labels is not None else metrics.AdapterLabels(0)
        self._timing: dict[int, list[float]] = {}  # decoder sequence -> [first token at, last token at, tokens]
        self._cond = threading.Condition()
        self._inbox: list[Request] = []
        self._cancels: list[Request] = []
        self._backlog: deque[Request] = deque()
        self._rows: dict[int, tuple[Request, int]] = {}  # decoder sequence -> (request, input index)
        self._inflight = 0  # inputs submitted and not finished (backlog, queued in the decoder, running)
        self._stop = False
        self.steps = 0
        self._thread = threading.Thread(target=self._run, name="generation-scheduler", daemon=True)
        self._thread.start()

    # -- from request threads ---------------------------------------------------------------------------

    def submit(self, request: Request) -> None:
        """Queue ``request`` (its rows join the batch between two steps); :class:`Overloaded` when the
        process already holds ``max_batch + queue_size`` inputs."""
        n = len(request.prompts)
        with self._cond:
            if self._stop:
                raise Overloaded("generation is stopping", 1.0)
            room = self.decoder.limits.max_batch + self.queue_size - self._inflight
            if n > room:
                metrics.GENERATION_REJECTED.inc()
                raise Overloaded(f"{self._inflight} generation inputs in flight, room for {max(room, 0)}", 1.0)
            self._inflight += n
            request.left = n
            self._inbox.append(request)
            self._cond.notify()

    def cancel(self, request: Request) -> None:
        """The client went away: ``request``'s rows leave the batch at the next step (idempotent)."""
        with self._cond:
            if request.cancelled or request.left == 0:
                return
            request.cancelled = True
            self._cancels.append(request)
            self._cond.notify()

    def close(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(timeout)

    @property
    def inflight(self) -> int:
        return self._inflight

    # -- the scheduler thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not (self._stop or self._inbox or self._cancels or not self.decoder.idle):
                    self._cond.wait()
                if self._stop:
                    break
                inbox, self._inbox = self._inbox, []
                cancels, self._cancels = self._cancels, []
            self._backlog.extend(inbox)
            for request in cancels:
                self._cancel(request)
            self._admit()
            metrics.GENERATION_WAITING.set(len(self._backlog) + len(self.decoder.pending))
            if self.decoder.idle:
                continue
            try:
                events = self.decoder.step()
            except Exception as exc:  # never let one bad batch kill the thread: fail what was in it
                logs.exception(log, "a generation step failed", exc)
                self._fail_all()
                continue
            self.steps += 1
            metrics.GENERATION_ROWS.set(len(self.decoder.running))
            now = time.perf_counter()
            for event in events:
                found = self._rows.get(event.seq)
                if found is None:
                    continue
                request, index = found
                token = None if event.token in self.decoder.eos else event.token  # the end of turn is no text
                if token is not None:
                    timing = self._timing.setdefault(event.seq, [now, now, 0.0])
                    timing[1], timing[2] = now, timing[2] + 1
                completion = None
                if event.finish_reason is not None:
                    completion = self._finish(event.seq, request)
                request.sink(Piece(index, event.delta, token, completion))
        self._fail_all()

    def _admit(self) -> None:
        """Backlog requests whose adapter has (or gets) a slot go to the decoder, oldest first; one whose
        adapter finds no free slot waits, without holding back those behind it."""
        waiting: deque[Request] = deque()
        while self._backlog:
            request = self._backlog.popleft()
            if request.adapter is not None:
                if self.slots is None or request.weights is None:
                    raise RuntimeError("an adapter request needs the scheduler's slots and the adapter's weights")
                if not self.slots.acquire(request.adapter, request.weights):
                    waiting.append(request)
                    continue
            request.label = self.labels.of(request.task, len(request.prompts))
            metrics.generation_admitted(request.label, len(request.prompts), time.perf_counter() - request.queued_at)
            for index, prompt in enumerate(request.prompts):
                seq = self.decoder.submit(prompt, request.adapter, request.params)
                request.seqs.append(seq)
                self._rows[seq] = (request, index)
        self._backlog = waiting

    def _cancel(self, request: Request) -> None:
        if request in self._backlog:  # never reached the decoder
            self._backlog.remove(request)
            for index in range(len(request.prompts)):
                request.sink(Piece(index, "", None, Completion("", 0, CANCELLED)))
            self._done(request, len(request.prompts))
            return
        for seq in request.seqs:
            self.decoder.cancel(seq)

    def _finish(self, seq: int, request: Request) -> Completion:
        completion = self.decoder.result(seq)
        self.decoder.finished.pop(seq, None)
        self._rows.pop(seq, None)
        first_token_s = per_token_s = None
        timing = self._timing.pop(seq, None)
        if timing is not None:
            first, last, tokens = timing
            first_token_s = first - request.queued_at
            per_token_s = (last - first) / (tokens - 1) if tokens >= 2 else None
        source = "base" if request.adapter is None else "adapter"
        metrics.generation_finished(
            request.label, source, completion.tokens, completion.finish_reason, first_token_s, per_token_s
        )
        self._done(request, 1)
        return completion

    def _done(self, request: Request, inputs: int) -> None:
        with self._cond:
            self._inflight -= inputs
            request.left -= inputs
            finished = request.left == 0
        if finished and request.adapter is not None and request.seqs and self.slots is not None:
            self.slots.release(request.adapter)

    def _fail_all(self) -> None:
        """A step failed (or the scheduler stops): every request in the decoder or the backlog ends, cancelled,
        and a fresh decoder takes over (same model, tokenizer and slots)."""
        unfinished: dict[int, tuple[Request, list[int]]] = {}
        for request, index in self._rows.values():
            unfinished.setdefault(id(request), (request, []))[1].append(index)
        with self._cond:
            waiting = [*self._backlog, *self._inbox]
            self._inbox.clear()
        for request in waiting:
            unfinished[id(request)] = (request, list(range(len(request.prompts))))
        for request, indices in unfinished.values():
            for index in indices:
                request.sink(Piece(index, "", None, Completion("", 0, CANCELLED)))
            self._done(request, len(indices))
        self._rows.clear()
        self._timing.clear()
        self._backlog.clear()
        old = self.decoder
        self.decoder = BatchDecoder(old.model, old.tokenizer, old.lora, limits=old.limits, mode=old.mode)


class GenerationEngine:
    """The process's generation model, slots and scheduler, built on first use (see the module's docstring)."""

    def __init__(
        self,
        spec: ModelSpec,
        limits: DecodeLimits,
        *,
        adapter_cache_bytes: int,
        queue_size: int,
        adapter_labels: int = 0,
    ) -> None:
        self.spec = spec
        self.labels = metrics.AdapterLabels(adapter_labels)
        self.limits = limits
        self.adapter_cache_bytes = adapter_cache_bytes
        self.queue_size = queue_size
        self._lock = threading.Lock()
        self._tokenise_lock = threading.Lock()
        self.scheduler: Scheduler | None = None
        self.slots: AdapterSlots | None = None
        self._tokenizer: Any = None  # request threads' own copy (the scheduler's decodes with the decoder's)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def loaded(self) -> bool:
        return self.scheduler is not None

    def start(self) -> Scheduler:
        """The scheduler, loading the model on first use (seconds from its cached copy)."""
        if self.scheduler is not None:
            return self.scheduler
        with self._lock:
            if self.scheduler is None:
                began = time.perf_counter()
                model, tokenizer = self.spec.load()
                capacity = max(1, min(MAX_SLOTS, self.adapter_cache_bytes // max(1, slot_bytes(model))))
                lora = MultiLora(model, DEFAULT_TARGETS, capacity=capacity, max_rank=MAX_RANK)
                self.slots = AdapterSlots(lora)
                self._tokenizer = copy.deepcopy(tokenizer)
                decoder = BatchDecoder(model, tokenizer, lora, limits=self.limits)
                metrics.GENERATION_ADAPTER_CAPACITY.set(capacity)
                self.scheduler = Scheduler(decoder, self.slots, self.queue_size, self.labels)
                log.info(
                    "generation model loaded",
                    extra={
                        "model": self.name,
                        "slots": capacity,
                        "slot_bytes": lora.bytes_per_slot,
                        "seconds": round(time.perf_counter() - began, 3),
                    },
                )
        return self.scheduler

    def prompt_ids(self, prompts: Sequence[str], params: SamplingParams) -> list[list[int]]:
        """Each prompt's token ids, checked against the decoding limits (:class:`GenerationLimitError`
        saying which input); loads the model on first use."""
        scheduler = self.start()
        out = []
        for i, prompt in enumerate(prompts):
            with self._tokenise_lock:
                ids = prompt_ids(self._tokenizer, prompt)
            try:
                scheduler.decoder.check(len(ids), params)
            except ValueError as exc:
                raise type(exc)(f"inputs[{i}]: {exc}") from None
            out.append(ids)
        return out

    def resident(self, key: str) -> bool:
        return self.slots is not None and key in self.slots.order

    def training_model(self) -> tuple[Any, Any]:
        """A fresh (model, tokenizer) for one training job: the serving model is never trained."""
        return self.spec.load()

    def close(self) -> None:
        if self.scheduler is not None:
            self.scheduler.close()
