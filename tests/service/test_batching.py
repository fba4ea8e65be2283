from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from service.batching import Batcher, Overloaded


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


def test_queue_is_bounded(minilm) -> None:
    batcher = Batcher(minilm, max_batch=4, max_delay_s=0.0, max_queue=8)
    try:
        with pytest.raises(Overloaded) as info:
            batcher.submit(["x"] * 9)
        assert info.value.retry_after_s >= 1
        assert batcher.embed_sync(["x"] * 8).shape == (8, minilm.dim)
    finally:
        batcher.close()
