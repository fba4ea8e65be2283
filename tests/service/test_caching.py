from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from adapters import heads
from adapters.heads import LinearHead
from service.caching import HeadCache, TTLCache, head_nbytes


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def linear(labels: int, dim: int = 384, seed: int = 0) -> LinearHead:
    rng = np.random.default_rng(seed)
    head = LinearHead([f"label-{i}" for i in range(labels)])
    head.weight = rng.normal(size=(labels, dim)).astype(np.float32)
    head.bias = rng.normal(size=labels).astype(np.float32)
    return head


def test_ttl_cache_expires_and_stays_bounded() -> None:
    clock = Clock()
    cache: TTLCache[str, int] = TTLCache(2.0, max_entries=3, clock=clock)
    cache.put("a", 1)
    clock.now = 1.9
    assert cache.get("a") == 1
    clock.now = 2.0
    assert cache.get("a") is None  # stored at 0, served for at most 2 s
    for i, key in enumerate("bcde"):
        cache.put(key, i)
    assert len(cache) == 3 and cache.get("b") is None  # least recently used dropped
    cache.pop("c")
    assert cache.get("c") is None and cache.get("d") == 2
    off: TTLCache[str, int] = TTLCache(0.0)
    off.put("a", 1)
    assert off.get("a") is None


def test_head_size_counts_labels_times_dim() -> None:
    small, big = head_nbytes(linear(2)), head_nbytes(linear(20))
    assert big - small >= 18 * 384 * 4
    assert 10 * 384 * 4 < head_nbytes(linear(10)) < 64 * 1024


def test_byte_budget_evicts_least_recently_used_and_reloads_silently() -> None:
    blobs = {i: heads.to_bytes(linear(2 + i % 9, seed=i)) for i in range(40)}
    loads: list[int] = []

    def load(key: int) -> heads.Head:
        loads.append(key)
        return heads.from_bytes(blobs[key])

    budget = 3 * head_nbytes(linear(10))
    cache = HeadCache(load, budget)
    x = np.random.default_rng(1).normal(size=(3, 384)).astype(np.float32)
    expected = {i: heads.from_bytes(blobs[i]).predict_proba(x) for i in blobs}
    for _round in range(3):
        for i in blobs:
            assert np.array_equal(cache.get(i).predict_proba(x), expected[i])
            assert cache.bytes <= budget
    assert cache.evictions > 0 and len(loads) == cache.loads == cache.misses > 40
    cache.get(39)
    assert cache.peek(39) is not None and cache.loads == len(loads)  # recently used: a hit
    assert cache.bytes == sum(head_nbytes(cache.peek(k)) for k in list(cache._entries))


def test_a_head_bigger_than_the_budget_is_served_but_not_kept() -> None:
    cache = HeadCache(lambda key: linear(50), budget_bytes=10_000)
    assert len(cache.get("k").labels) == 50
    assert len(cache) == 0 and cache.bytes == 0


def test_concurrent_first_requests_load_a_head_once() -> None:
    calls: list[str] = []
    release = threading.Event()

    def slow_load(key: str) -> heads.Head:
        calls.append(key)
        assert release.wait(30)
        return linear(4)

    cache = HeadCache(slow_load, 10**7)
    with ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(cache.get, "same") for _ in range(16)]
        time.sleep(0.2)
        release.set()
        got = [f.result(30) for f in futures]
    assert calls == ["same"]
    assert all(g is got[0] for g in got)
    assert cache.misses == 16 and cache.loads == 1


def test_a_failed_load_reaches_every_waiter_and_is_retried_next_time() -> None:
    attempts = []
    release = threading.Event()

    def flaky(key: str) -> heads.Head:
        attempts.append(key)
        if len(attempts) == 1:
            assert release.wait(30)
            raise KeyError("store hiccup")
        return linear(3)

    cache = HeadCache(flaky, 10**7)
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(cache.get, "k") for _ in range(4)]
        time.sleep(0.2)
        release.set()
        for f in futures:
            with pytest.raises(KeyError):
                f.result(30)
    assert len(cache.get("k").labels) == 3 and len(attempts) == 2
