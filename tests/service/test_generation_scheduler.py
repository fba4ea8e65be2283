"""The generation scheduler (service/engine/generation.py) on the real packaged SmolLM2: sequences join the
running batch between decode steps (continuous batching) and give what they give alone, a cancelled request
leaves the batch and frees its row and its adapter, and the adapter slots evict the least recently used adapter
nobody uses (a request whose adapter finds every slot in use waits for one)."""

from __future__ import annotations

import threading
import time

import pytest
from prometheus_client import REGISTRY

from adapters.generation import (
    BatchDecoder,
    DecodeLimits,
    GenerationLimitError,
    MultiLora,
    SamplingParams,
    load_causal_lm,
    prompt_ids,
)
from adapters.generation.training import DEFAULT_TARGETS
from service import metrics
from service.batching import Overloaded
from service.engine.generation import (
    AdapterSlots,
    GenerationEngine,
    ModelSpec,
    Piece,
    Request,
    Scheduler,
    slot_bytes,
)
from tests.adapters.test_generation import CACHE, STORY, random_adapter

TIMEOUT = 120.0


class Run:
    """A request's pieces as they arrive, with a shared log of (name, index, finished) across requests."""

    def __init__(self, name: str, log: list[tuple[str, int, bool]]) -> None:
        self.name, self.log = name, log
        self.pieces: list[Piece] = []
        self.done = threading.Event()
        self.request: Request | None = None

    def sink(self, piece: Piece) -> None:
        self.pieces.append(piece)
        self.log.append((self.name, piece.index, piece.completion is not None))
        assert self.request is not None
        if sum(p.completion is not None for p in self.pieces) == len(self.request.prompts):
            self.done.set()

    def wait(self) -> list:
        assert self.done.wait(TIMEOUT), f"{self.name} did not finish"
        return [p.completion for p in sorted(self.pieces, key=lambda p: p.index) if p.completion is not None]


@pytest.fixture(scope="module")
def engine():
    model, tokenizer = load_causal_lm(cache_dir=CACHE)
    adapters = {f"a{i}": random_adapter(model, seed=i) for i in range(3)}
    planned = slot_bytes(model)  # what the engine divides its byte budget by, before wrapping the model
    lora = MultiLora(model, DEFAULT_TARGETS, capacity=2, max_rank=8)
    slots = AdapterSlots(lora)
    scheduler = Scheduler(BatchDecoder(model, tokenizer, lora, limits=DecodeLimits(max_batch=4)), slots, queue_size=4)
    slots.planned = planned  # type: ignore[attr-defined]
    yield scheduler, slots, tokenizer, adapters
    scheduler.close()


def submit(
    engine, name: str, prompts: list[str], log: list, adapter: str | None = None, task: str | None = None, **params
) -> Run:
    scheduler, _, tokenizer, adapters = engine
    run = Run(name, log)
    weights = (lambda: adapters[adapter]) if adapter is not None else None
    ids = [prompt_ids(tokenizer, p) for p in prompts]
    run.request = Request(ids, SamplingParams(**params), run.sink, adapter=adapter, weights=weights, task=task)
    scheduler.submit(run.request)
    return run


def idle(scheduler: Scheduler) -> None:
    deadline = time.monotonic() + TIMEOUT
    while (scheduler.inflight or not scheduler.decoder.idle) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert scheduler.inflight == 0 and scheduler.decoder.idle and not scheduler.decoder.finished


def test_a_slot_is_what_the_adapter_cache_budget_counts(engine) -> None:
    _, slots, _, _ = engine
    assert slots.lora.bytes_per_slot == slots.planned == 3_686_400  # 3.5 MiB, rank 8, fp32


def test_sequences_join_between_steps_and_give_what_they_give_alone(engine) -> None:
    scheduler, *_ = engine
    log: list[tuple[str, int, bool]] = []
    first = submit(engine, "first", [STORY], log, max_tokens=12)
    deadline = time.monotonic() + TIMEOUT
    while len(first.pieces) < 3 and time.monotonic() < deadline:  # the first row is decoding
        time.sleep(0.005)
    joined = submit(engine, "joined", ["Country: France\nCapital:", STORY], log, adapter="a1", max_tokens=6)
    together = first.wait()[0], *joined.wait()
    # the joined rows produced tokens while the first was still running: they joined between its steps
    first_joined = log.index(next(e for e in log if e[0] == "joined"))
    assert first_joined < log.index(("first", 0, True)), log
    assert together[0].finish_reason == "length" and together[0].tokens == 12
    idle(scheduler)
    alone = (
        submit(engine, "alone0", [STORY], [], max_tokens=12).wait()[0],
        submit(engine, "alone1", ["Country: France\nCapital:"], [], adapter="a1", max_tokens=6).wait()[0],
        submit(engine, "alone2", [STORY], [], adapter="a1", max_tokens=6).wait()[0],
    )
    assert [c.token_ids for c in together] == [c.token_ids for c in alone]
    assert together[2].token_ids != together[0].token_ids[:6], "the adapter changed nothing"
    idle(scheduler)


def test_a_cancelled_request_leaves_the_batch_and_frees_its_adapter(engine) -> None:
    scheduler, slots, _, _ = engine
    log: list = []
    run = submit(engine, "long", [STORY, STORY], log, adapter="a0", max_tokens=200)
    deadline = time.monotonic() + TIMEOUT
    while len(run.pieces) < 4 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert slots.users.get("a0") == 1 and len(scheduler.decoder.running) == 2
    scheduler.cancel(run.request)
    completions = run.wait()
    assert [c.finish_reason for c in completions] == ["cancelled", "cancelled"]
    assert all(0 < c.tokens < 200 for c in completions)
    idle(scheduler)
    assert not scheduler.decoder.running and "a0" not in slots.users  # the row and the adapter are free
    assert "a0" in slots.resident  # still loaded (least recently used goes first when a slot is needed)


def test_slots_evict_the_least_recently_used_idle_adapter_and_requests_wait_for_a_slot(engine) -> None:
    scheduler, slots, _, _ = engine
    for name in ("a0", "a1"):
        submit(engine, name, ["Hello"], [], adapter=name, max_tokens=2).wait()
    assert slots.resident == ["a0", "a1"]  # a1 used last
    submit(engine, "a2", ["Hello"], [], adapter="a2", max_tokens=2).wait()
    assert slots.resident == ["a1", "a2"]  # a0 was the least recently used, idle: evicted
    log: list = []
    busy = [submit(engine, name, [STORY], log, adapter=name, max_tokens=16) for name in ("a1", "a2")]
    deadline = time.monotonic() + TIMEOUT
    while not all(b.pieces for b in busy) and time.monotonic() < deadline:
        time.sleep(0.005)
    waiting = submit(engine, "a0", ["Hello"], log, adapter="a0", max_tokens=2)  # both slots are in use
    waiting.wait()
    for b in busy:
        b.wait()
    first_a0 = log.index(next(e for e in log if e[0] == "a0"))
    first_end = min(log.index((b.name, 0, True)) for b in busy)
    assert first_end < first_a0, "the third adapter was decoded before a slot was free"
    assert "a0" in slots.resident and len(slots.resident) == 2
    idle(scheduler)


def test_inputs_beyond_the_batch_and_the_queue_are_refused_with_retry_after(engine) -> None:
    scheduler, *_ = engine
    log: list = []
    with pytest.raises(Overloaded, match="room for 8") as refused:  # max_batch 4 + queue_size 4
        submit(engine, "too-many", ["Hello"] * 9, log, max_tokens=1)
    assert refused.value.retry_after_s > 0 and scheduler.inflight == 0
    submit(engine, "fits", ["Hello"] * 8, log, max_tokens=1).wait()
    idle(scheduler)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_each_adapter_has_its_own_bounded_series_of_tokens_requests_and_latencies(engine) -> None:
    scheduler, *_ = engine
    scheduler.labels = metrics.AdapterLabels(limit=1, admit_after=2)
    named = metrics.opaque("task-x", "a-")
    names = (
        "requests_total",
        "inputs_total",
        "tokens_total",
        "queue_seconds_count",
        "first_token_seconds_count",
        "token_seconds_count",
    )

    def series(label: str) -> dict[str, float]:
        return {n: sample(f"graft_generation_adapter_{n}", adapter=label) for n in names}

    try:
        before = {label: series(label) for label in (named, metrics.OTHER, metrics.BASE)}
        # task-x's first request is `other` (1 input: not busy yet), its second (2 more) gets its own value
        quiet = submit(engine, "x1", ["Hello"], [], adapter="a0", task="task-x", max_tokens=3).wait()
        busy = submit(engine, "x2", [STORY, "Hello"], [], adapter="a0", task="task-x", max_tokens=5).wait()
        # the one name is taken: another adapter stays `other` however busy; no adapter is `base`
        others = submit(engine, "y", ["Hello"] * 4, [], adapter="a1", task="task-y", max_tokens=2).wait()
        base = submit(engine, "base", [STORY], [], max_tokens=4).wait()
        after = {label: series(label) for label in before}
    finally:
        scheduler.labels = metrics.AdapterLabels(0)
        idle(scheduler)
    grew = {label: {n: after[label][n] - before[label][n] for n in names} for label in before}
    assert grew[named]["requests_total"] == 1 and grew[named]["inputs_total"] == 2
    assert grew[named]["tokens_total"] == sum(c.tokens for c in busy) > 0
    assert grew[named]["queue_seconds_count"] == 1 and grew[named]["first_token_seconds_count"] == 2
    assert grew[named]["token_seconds_count"] == sum(c.tokens >= 2 for c in busy)
    assert grew[metrics.OTHER]["requests_total"] == 2 and grew[metrics.OTHER]["inputs_total"] == 5
    assert grew[metrics.OTHER]["tokens_total"] == sum(c.tokens for c in [*quiet, *others])
    assert grew[metrics.BASE]["requests_total"] == 1 and grew[metrics.BASE]["tokens_total"] == base[0].tokens
    assert sample("graft_generation_adapter_tokens_total", adapter=metrics.opaque("task-y", "a-")) == 0
    first = sample("graft_generation_adapter_first_token_seconds_sum", adapter=named)
    assert 0 < first < TIMEOUT


def test_the_engine_sizes_its_slots_from_the_byte_budget_and_checks_prompts_before_queueing() -> None:
    spec = ModelSpec(None, None, CACHE)
    engine = GenerationEngine(
        spec, DecodeLimits(max_prompt_tokens=40, max_new_tokens=8), adapter_cache_bytes=3 * 3_686_400 + 1, queue_size=2
    )
    try:
        assert not engine.loaded and engine.name == "smollm2-135m-instruct"
        ids = engine.prompt_ids(["Hello"], SamplingParams(max_tokens=8))  # loads the model
        assert engine.loaded and engine.slots is not None and engine.slots.lora.capacity == 3
        assert len(ids) == 1 and len(ids[0]) < 40
        with pytest.raises(GenerationLimitError, match=r"inputs\[1\]: the prompt is \d+ tokens: at most 40"):
            engine.prompt_ids(["Hello", "word " * 50], SamplingParams(max_tokens=8))
        with pytest.raises(GenerationLimitError, match="max_tokens must be between 1 and 8"):
            engine.prompt_ids(["Hello"], SamplingParams(max_tokens=9))
    finally:
        engine.close()
