"""LogME against the paper's definitions, the authors' reference implementation and real data."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize

from adapters.transfer import capped_sample, logme, logme_per_class


def gaussian_task(n: int, d: int, k: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    centres = rng.normal(size=(k, d))
    return centres[y] + noise * rng.normal(size=(n, d)), y


def evidence(f: np.ndarray, t: np.ndarray, alpha: float, beta: float) -> float:
    """The paper's log evidence per example, computed directly (explicit A, its inverse and log-det)."""
    n, d = f.shape
    a = alpha * np.eye(d) + beta * f.T @ f
    m = beta * np.linalg.solve(a, f.T @ t)
    _, logdet = np.linalg.slogdet(a)
    value = (
        d / 2 * np.log(alpha)
        + n / 2 * np.log(beta)
        - n / 2 * np.log(2 * np.pi)
        - beta / 2 * np.sum((f @ m - t) ** 2)
        - alpha / 2 * m @ m
        - logdet / 2
    )
    return float(value / n)


# Computed with the authors' ICML-2021 implementation (thuml/LogME, LogME._fit_icml) on
# gaussian_task(*case). It stops at a 1 % relative change and adds 1e-5 to two denominators, so
# agreement is to ~1e-3, not to machine precision.
AUTHORS = [
    ((60, 10, 3, 1.0, 0), -0.48723791366125496),  # n > d
    ((40, 64, 4, 0.5, 1), 0.5518672981727055),  # n < d: F'F is rank-deficient
    ((200, 32, 5, 2.0, 2), -0.33292207822084385),
]


@pytest.mark.parametrize(("case", "reference"), AUTHORS)
def test_matches_the_authors_reference_values(case: tuple, reference: float) -> None:
    f, y = gaussian_task(*case)
    assert logme(f, y) == pytest.approx(reference, abs=1e-3)


@pytest.mark.parametrize("shape", [(50, 8), (30, 40)])
def test_fixed_point_reaches_the_maximum_evidence(shape: tuple[int, int]) -> None:
    """The fixed point is a maximum of the evidence over (alpha, beta): the value it reports is the
    evidence at its (alpha, beta), computed directly, and no optimiser finds a higher one."""
    f, y = gaussian_task(*shape, k=3, noise=1.5, seed=3)
    for k, found in enumerate(logme_per_class(f, y)):
        t = (y == k).astype(float)
        assert found.evidence == pytest.approx(evidence(f, t, found.alpha, found.beta), abs=1e-9)
        for start in ((0.0, 0.0), (3.0, -2.0), (-3.0, 3.0)):
            best = minimize(
                lambda p, t=t: -evidence(f, t, np.exp(p[0]), np.exp(p[1])),
                start,
                method="Nelder-Mead",
                options={"xatol": 1e-8, "fatol": 1e-12, "maxiter": 4000},
            )
            assert -best.fun <= found.evidence + 1e-7
        assert found.iterations < 100  # converged, not cut off


def test_more_informative_features_score_higher() -> None:
    """The paper's premise: features that explain the labels better get a higher LogME."""
    scores = [logme(*gaussian_task(300, 32, 5, noise, seed=4)) for noise in (4.0, 2.0, 1.0, 0.5, 0.25)]
    assert scores == sorted(scores) and scores[-1] - scores[0] > 0.5


def test_labels_unrelated_to_the_features_score_lower() -> None:
    f, y = gaussian_task(200, 16, 4, 1.0, seed=5)
    shuffled = np.random.default_rng(0).permutation(y)
    assert logme(f, y) > logme(f, shuffled) + 0.1


def test_real_embeddings_transfer_better_than_random_features(minilm, bbc_train) -> None:
    """On real BBC News articles, frozen MiniLM embeddings get a higher LogME than random features
    of the same shape, and higher than the same embeddings with shuffled labels; and the linear
    probe agrees (the paper's claim: LogME tracks transfer accuracy)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    from tests.conftest import per_label

    rows = per_label(bbc_train, 12, seed=7)
    y = np.array([sorted({r["label"] for r in rows}).index(r["label"]) for r in rows])
    real = minilm.embed([r["input"] for r in rows])
    noise = np.random.default_rng(0).normal(size=real.shape).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    assert logme(real, y) > logme(noise, y) + 0.05
    assert logme(real, y) > logme(real, np.random.default_rng(1).permutation(y)) + 0.05
    probe = [cross_val_score(LogisticRegression(C=10, max_iter=1000), f, y, cv=3).mean() for f in (real, noise)]
    assert probe[0] > probe[1] + 0.3


def test_capped_sample_is_stratified_bounded_and_deterministic() -> None:
    y = np.array([0] * 500 + [1] * 100 + [2] * 3)
    idx = capped_sample(y, 120, seed=1)
    assert len(idx) <= 125 and len(set(idx)) == len(idx)
    counts = np.bincount(y[idx], minlength=3)
    assert counts[0] > counts[1] > 0 and counts[2] >= 2
    assert np.array_equal(idx, capped_sample(y, 120, seed=1))
    assert np.array_equal(capped_sample(y[:50], 120), np.arange(50))


def test_rejects_malformed_input() -> None:
    with pytest.raises(ValueError):
        logme(np.zeros((1, 4)), np.zeros(1, dtype=int))
    with pytest.raises(ValueError):
        logme(np.zeros((5, 4)), np.zeros(4, dtype=int))
