from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from adapters.heads import LinearHead, PrototypeHead, RidgeHead
from service.batching import Batcher, Overloaded, apply_heads
from tests.conftest import per_label


class Gated:
    """The real backbone behind a gate, so a test can hold the worker inside a pass."""

    def __init__(self, backbone) -> None:
        self.inner = backbone
        self.name, self.dim = backbone.name, backbone.dim
        self.open = threading.Event()
        self.entered = threading.Event()
        self.batches: list[list[str]] = []

    def embed(self, inputs):
        self.batches.append(list(inputs))
        self.entered.set()
        assert self.open.wait(60)
        return self.inner.embed(inputs)


@pytest.fixture(scope="module")
def bbc_heads(minilm, bbc_train):
    """Real heads with different label sets, fitted on real BBC embeddings."""
    rows = per_label(bbc_train, 6, seed=3)
    x = minilm.embed([r["input"][:300] for r in rows])
    labels = np.array([r["label"] for r in rows])
    out = []
    for chosen in (["business", "sports"], ["politics", "tech", "entertainment"], sorted(set(labels))):
        mask = np.isin(labels, chosen)
        y = np.array([chosen.index(label) for label in labels[mask]])
        out.append(LinearHead(list(chosen)).fit(x[mask], y))
        out.append(PrototypeHead(list(chosen)).fit(x[mask], y))
    return out


def test_concurrent_requests_get_their_own_rows_in_order(minilm) -> None:
    batcher = Batcher(minilm, max_batch=8, max_delay_s=0.01)
    requests = [[f"request {i} item {j} " + "word " * (i * j % 7) for j in range(1 + i % 5)] for i in range(24)]
    try:
        with ThreadPoolExecutor(12) as pool:
            results = list(pool.map(batcher.embed_sync, requests))
    finally:
        batcher.close()
    for texts, got in zip(requests, results, strict=True):
        assert np.abs(got - minilm.embed(texts)).max() < 1e-5


def test_requests_larger_than_a_batch_are_split(minilm) -> None:
    batcher = Batcher(minilm, max_batch=4, max_delay_s=0.0)
    texts = [f"text number {i}" for i in range(11)]
    try:
        got = batcher.embed_sync(texts)
    finally:
        batcher.close()
    assert got.shape == (11, minilm.dim)
    assert np.abs(got - minilm.embed(texts)).max() < 1e-5


def test_heads_are_applied_per_request_in_shared_passes(minilm, bbc_heads) -> None:
    """Requests with different heads share passes (and are split across them); each gets exactly
    its own head's probabilities, in input order."""
    batcher = Batcher(minilm, max_batch=8, max_delay_s=0.02)
    texts = [
        f"shares rose as the {w} market reacted to the election result"
        for w in ("bond", "stock", "film", "tech", "music")
    ]
    jobs = [(bbc_heads[i % len(bbc_heads)], texts[: 1 + i % 5] * (1 + i % 3)) for i in range(18)]
    try:
        with ThreadPoolExecutor(9) as pool:
            results = list(pool.map(lambda job: batcher.submit(job[1], head=job[0]).result(), jobs))
    finally:
        batcher.close()
    for (head, inputs), got in zip(jobs, results, strict=True):
        assert got.shape == (len(inputs), len(head.labels))
        assert np.abs(got - head.predict_proba(minilm.embed(inputs))).max() < 1e-5


def test_a_regression_head_answers_its_values_in_shared_passes(minilm, bbc_train, bbc_heads) -> None:
    """A regression head's answer is its values (n,), not probabilities; it shares passes with
    classification heads and a request split across passes gets its values in order."""
    train = bbc_train[:40]
    lengths = np.array([len(r["input"]) / 1000 for r in train])
    ridge = RidgeHead().fit(minilm.embed([r["input"] for r in train]), lengths)
    texts = [f"the {w} market reacted to the election result" for w in ("bond", "stock", "film", "tech", "music")]
    batcher = Batcher(minilm, max_batch=4, max_delay_s=0.02)
    try:
        futures = [batcher.submit(texts, head=ridge), batcher.submit(texts[:2], head=bbc_heads[0])]
        values, proba = (f.result() for f in futures)
        empty = batcher.submit([], head=ridge).result()
    finally:
        batcher.close()
    assert values.shape == (5,) and empty.shape == (0,) and proba.shape == (2, len(bbc_heads[0].labels))
    assert np.abs(values - ridge.predict_values(minilm.embed(texts))).max() < 1e-5


def test_stacked_linear_heads_match_each_heads_own_predict_proba(minilm, bbc_heads) -> None:
    """The stacked product is an optimisation only: softmax_affine must keep predict_proba's meaning."""
    x = minilm.embed([f"sentence {i} about goals, profits, ministers and films" for i in range(12)])
    parts = [(bbc_heads[i % len(bbc_heads)], i, i + 1) for i in range(10)] + [(None, 10, 12)]
    got = apply_heads(x, parts)
    for (head, start, stop), out in zip(parts, got, strict=True):
        expected = x[start:stop] if head is None else head.predict_proba(x[start:stop])
        assert out.shape == expected.shape
        assert np.abs(out - expected).max() < 1e-6
    for head in (h for h in bbc_heads if isinstance(h, LinearHead)):
        w, b = head.softmax_affine()
        z = np.exp(x @ w.T + b)
        assert np.abs(z / z.sum(axis=1, keepdims=True) - head.predict_proba(x)).max() < 1e-6


def test_a_broken_head_fails_only_its_own_request(minilm, bbc_heads) -> None:
    x = minilm.embed(["one", "two", "three"])
    wrong = LinearHead(["a", "b"])
    wrong.weight, wrong.bias = np.zeros((2, 7), np.float32), np.zeros(2, np.float32)  # wrong dimension
    got = apply_heads(x, [(bbc_heads[0], 0, 1), (wrong, 1, 2), (bbc_heads[1], 2, 3)])
    assert isinstance(got[1], Exception)
    assert np.abs(got[0] - bbc_heads[0].predict_proba(x[:1])).max() < 1e-6
    assert np.abs(got[2] - bbc_heads[1].predict_proba(x[2:])).max() < 1e-6


def test_queue_is_bounded_and_recovers(minilm) -> None:
    gated = Gated(minilm)
    batcher = Batcher(gated, max_batch=4, max_delay_s=0.0, max_queue=8)
    try:
        first = batcher.submit(["held in the pass"] * 4)
        assert gated.entered.wait(30)  # the worker is inside a pass; the queue is empty
        queued = batcher.submit(["x"] * 8)
        with pytest.raises(Overloaded) as info:
            batcher.submit(["one more"])
        assert info.value.retry_after_s >= 1
        training = batcher.submit(["training traffic is never refused"] * 2, background=True)
        gated.open.set()
        assert first.result(60).shape == (4, minilm.dim) and queued.result(60).shape == (8, minilm.dim)
        assert training.result(60).shape == (2, minilm.dim)
        assert batcher.embed_sync(["after the backlog"] * 9).shape == (9, minilm.dim)  # an idle queue takes any size
    finally:
        gated.open.set()
        batcher.close()


def test_training_gets_a_share_of_passes_under_predict_load(minilm) -> None:
    gated = Gated(minilm)
    batcher = Batcher(gated, max_batch=8, max_delay_s=0.0, max_queue=1000)
    try:
        batcher.submit(["first"])
        assert gated.entered.wait(30)
        predicts = [batcher.submit([f"predict {i}"] * 8) for i in range(3)]
        training = batcher.submit(["train"] * 4, background=True)
        gated.open.set()
        training.result(60)
        for future in predicts:
            future.result(60)
    finally:
        gated.open.set()
        batcher.close()
    second = gated.batches[1]
    assert second.count("train") == 2 and len(second) == 8  # a quarter of the pass, the rest predict


def test_cancelled_requests_are_skipped(minilm) -> None:
    gated = Gated(minilm)
    batcher = Batcher(gated, max_batch=4, max_delay_s=0.0)
    try:
        batcher.submit(["first"])
        assert gated.entered.wait(30)
        gone = batcher.submit(["abandoned by its caller"] * 3)
        assert gone.cancel()
        kept = batcher.submit(["kept"])
        gated.open.set()
        assert kept.result(60).shape == (1, minilm.dim)
    finally:
        gated.open.set()
        batcher.close()
    assert all("abandoned by its caller" not in batch for batch in gated.batches)
    assert batcher.pending == 0


def test_a_flooding_tenant_delays_itself_not_the_others(minilm) -> None:
    """Tenant A floods the batcher with 96 inputs, C sends 32, then B sends 2. Passes are shared fairly
    (per-tenant sub-queues served round-robin, deficit round robin in inputs): B's inputs go in the very
    next pass instead of after A's backlog (one FIFO: pass 8), A and C split each pass evenly, and A's
    seventh request hits A's own queue bound (503 for A) while B and C are still admitted."""
    gated = Gated(minilm)
    batcher = Batcher(gated, max_batch=16, max_delay_s=0.0, max_queue=10_000, max_tenant_queue=100)
    try:
        batcher.submit(["held"], tenant="a")
        assert gated.entered.wait(30)  # the worker is inside a pass; everything below queues
        flood = [batcher.submit([f"a{i}-{j}" for j in range(16)], tenant="a") for i in range(6)]
        with pytest.raises(Overloaded, match="96 of this tenant's inputs are already queued.*limit is 100 per tenant"):
            batcher.submit([f"a6-{j}" for j in range(16)], tenant="a")
        other = [batcher.submit([f"c{i}-{j}" for j in range(16)], tenant="c") for i in range(2)]
        small = batcher.submit(["b0", "b1"], tenant="b")
        gated.open.set()
        assert small.result(60).shape == (2, minilm.dim)
        for future in flood + other:
            assert future.result(60).shape == (16, minilm.dim)
    finally:
        gated.open.set()
        batcher.close()
    passes = gated.batches[1:]
    assert {"b0", "b1"} <= set(passes[0])  # served in the first pass after the one that was running
    a, c = (sum(text.startswith(who) for text in passes[0]) for who in ("a", "c"))
    assert a + c == 14 and abs(a - c) <= 2  # the rest of the pass split between A and C (quantum 2)
    served_a = [text for batch in passes for text in batch if text.startswith("a")]
    assert served_a == [f"a{i}-{j}" for i in range(6) for j in range(16)]  # a tenant's own requests stay in order
    assert batcher.pending == 0


def test_fair_queue_skips_cancelled_requests_and_keeps_the_training_share(minilm) -> None:
    gated = Gated(minilm)
    batcher = Batcher(gated, max_batch=8, max_delay_s=0.0, max_queue=1000)
    try:
        batcher.submit(["held"], tenant="a")
        assert gated.entered.wait(30)
        gone = batcher.submit(["abandoned"] * 5, tenant="a")
        kept = [batcher.submit([f"{t}{j}" for j in range(8)], tenant=t) for t in ("a", "b")]
        assert gone.cancel()
        training = batcher.submit(["train"] * 4, background=True)
        gated.open.set()
        training.result(60)
        for future in kept:
            future.result(60)
    finally:
        gated.open.set()
        batcher.close()
    second = gated.batches[1]
    assert "abandoned" not in {text for batch in gated.batches for text in batch}
    assert second.count("train") == 2 and len(second) == 8  # training's quarter of the pass
    assert (
        sum(t.startswith("a") for t in second) == sum(t.startswith("b") for t in second) == 3
    )  # tenants share the rest
    assert batcher.pending == 0


class GatedAudio(Gated):
    """A real audio backbone behind the gate (an audio batcher reads ``modality`` and ``sample_rate``)."""

    def __init__(self, backbone) -> None:
        super().__init__(backbone)
        self.modality, self.sample_rate = backbone.modality, backbone.sample_rate


def test_an_audio_pass_is_bounded_in_seconds_and_a_long_clip_runs_alone(minilm) -> None:
    from service.backbones.registry import BUILTIN, Registry

    speech = Registry({"s": BUILTIN["openwakeword-speech-embedding"]}, "cpu").load("s")
    gated = GatedAudio(speech)
    rng = np.random.default_rng(0)
    second = [(0.05 * rng.standard_normal(16_000)).astype(np.float32) for _ in range(8)]  # 1 s clips
    long = (0.05 * rng.standard_normal(16_000 * 5)).astype(np.float32)  # 5 s: over the whole bound
    batcher = Batcher(gated, max_batch=64, max_delay_s=0.0, max_seconds=3.0)
    try:
        first = batcher.submit([second[0]], tenant="a")  # the worker enters its first pass and waits
        assert gated.entered.wait(30)
        later = [batcher.submit(second[1:], tenant="a"), batcher.submit([long], tenant="b")]
        gated.open.set()
        results = [first.result(60), *(f.result(60) for f in later)]
    finally:
        batcher.close()
    sizes = [[len(clip) / 16_000 for clip in batch] for batch in gated.batches]
    assert sizes[0] == [1.0] and all(sum(s) <= 3.0 for s in sizes if len(s) > 1), sizes
    assert [5.0] in sizes and sum(len(s) for s in sizes) == 9  # the long clip alone; every clip once
    assert max(len(s) for s in sizes) == 3  # not one pass of all 8 short clips
    expected = speech.embed([*second, long])
    got = np.vstack(results)
    assert np.abs(got - expected).max() < 1e-5
    text = Batcher(minilm, max_batch=4, max_seconds=3.0)  # the bound is for audio backbones only
    try:
        assert batcher.max_seconds == 3.0 and text.max_seconds is None
    finally:
        text.close()
