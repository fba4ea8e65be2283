"""Active learning: uncertain inputs first, near duplicates not picked twice, labelled regions avoided."""

from __future__ import annotations

import numpy as np
import pytest

from adapters.active import margin_uncertainty, suggest


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def test_margin_uncertainty() -> None:
    u = margin_uncertainty(np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.6, 0.3, 0.1]]))
    assert np.allclose(u, [1.0, 0.0, 0.7])
    with pytest.raises(ValueError):
        margin_uncertainty(np.ones((3, 1)))


def test_near_duplicates_are_not_picked_twice() -> None:
    rng = np.random.default_rng(0)
    base = unit(rng.normal(size=(6, 32)))
    pool = np.concatenate([np.repeat(base[:1], 5, axis=0) + 1e-4, base[1:]])  # 5 copies of one input, then 5 others
    proba = np.tile([[0.5, 0.5]], (len(pool), 1))
    proba[:5] = [0.49, 0.51]  # the copies are the most uncertain
    indices, scores = suggest(unit(pool), 3, proba=proba)
    assert len(set(indices)) == 3 and sum(i < 5 for i in indices) == 1
    assert len(scores) == 3 and all(0.0 <= s <= 1.0 for s in scores)


def test_uncertain_inputs_are_preferred_and_labelled_regions_avoided() -> None:
    rng = np.random.default_rng(1)
    x = unit(rng.normal(size=(40, 16)))
    proba = np.full((40, 2), 0.5)
    proba[:20] = [0.99, 0.01]  # the first half is certain
    indices, _ = suggest(x, 5, proba=proba, pool_factor=1)
    assert all(i >= 20 for i in indices)
    # without probabilities: coverage; an input equal to a labelled example is never first
    first, _ = suggest(x, 1, labelled=x[:39])
    assert first == [39]


def test_edge_cases_and_determinism() -> None:
    x = unit(np.random.default_rng(2).normal(size=(4, 8)))
    assert suggest(x, 0) == ([], [])
    indices, _ = suggest(x, 10)
    assert sorted(indices) == [0, 1, 2, 3]
    assert suggest(x, 3) == suggest(x, 3)
