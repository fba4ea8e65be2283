"""Active learning: which unlabelled inputs are worth labelling next.

Uncertainty with diversity. Uncertainty is one minus the margin between the two most probable labels (1.0:
a coin toss between two labels, 0.0: certain). Taking the k most uncertain inputs alone picks near
duplicates (the same confusing kind of input k times), so the choice is made among the most uncertain
``pool_factor * k`` candidates by greedy k-center selection in the backbone's embedding space: each step
takes the candidate with the largest uncertainty-weighted distance to everything already chosen or already
labelled (Sener & Savarese 2018, weighted by the margin as in BADGE-style hybrids). Without probabilities
(a kind with no label distribution) it is plain k-center: coverage of the input space. A kind whose uncertainty
is not a label distribution's margin (detection: the most ambiguous heatmap peak of an image,
adapters/kinds/detection.py) passes its own scores in [0, 1] as ``uncertainty`` instead.
"""

from __future__ import annotations

import numpy as np

POOL_FACTOR = 4


def margin_uncertainty(proba: np.ndarray) -> np.ndarray:
    """1 - (p_top1 - p_top2) per row of ``proba`` (n, k): (n,) in [0, 1]."""
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim != 2 or proba.shape[1] < 2:
        raise ValueError(f"expected probabilities of shape (n, k >= 2), got {proba.shape}")
    top2 = np.sort(proba, axis=1)[:, -2:]
    return 1.0 - (top2[:, 1] - top2[:, 0])


def suggest(
    embeddings: np.ndarray,
    k: int,
    *,
    proba: np.ndarray | None = None,
    labelled: np.ndarray | None = None,
    pool_factor: int = POOL_FACTOR,
    uncertainty: np.ndarray | None = None,
) -> tuple[list[int], list[float]]:
    """Indices of the ``k`` inputs to label next, best first, and each one's uncertainty (1.0 without
    ``proba`` or ``uncertainty``). ``embeddings`` (n, d) L2-normalised; ``labelled`` (m, d): embeddings of the
    examples the task already has, so the choice covers what they do not. ``uncertainty`` (n,) in [0, 1]: a
    kind's own per-input uncertainty, instead of ``proba``'s margin. Deterministic for the same inputs."""
    x = np.asarray(embeddings, dtype=np.float32)
    n = len(x)
    if x.ndim != 2:
        raise ValueError(f"expected embeddings of shape (n, d), got {x.shape}")
    k = min(int(k), n)
    if k <= 0:
        return [], []
    if proba is not None and uncertainty is not None:
        raise ValueError("give proba or uncertainty, not both")
    scored = proba is not None or uncertainty is not None
    if uncertainty is not None:
        uncertainty = np.clip(np.asarray(uncertainty, dtype=np.float64).reshape(-1), 0.0, 1.0)
    else:
        uncertainty = np.ones(n) if proba is None else margin_uncertainty(proba)
    if scored and len(uncertainty) != n:
        raise ValueError("uncertainties and embeddings differ in rows")
    # the candidates: the most uncertain pool_factor * k (ties by index, for determinism)
    order = np.lexsort((np.arange(n), -uncertainty))
    candidates = order[: min(n, max(pool_factor * k, k))] if scored else order  # no scores: all compete
    cx = x[candidates]
    # distance to the nearest chosen-or-labelled point (cosine distance on normalised vectors)
    nearest = np.full(len(candidates), 2.0)
    if labelled is not None and len(labelled):
        nearest = np.minimum(nearest, (1.0 - cx @ np.asarray(labelled, dtype=np.float32).T).min(axis=1))
    weight = uncertainty[candidates]
    chosen: list[int] = []
    taken = np.zeros(len(candidates), dtype=bool)
    for _ in range(k):
        gain = np.where(taken, -np.inf, weight * np.maximum(nearest, 0.0))
        if not np.isfinite(gain).any():
            break
        best = int(np.argmax(gain))
        if gain[best] <= 0.0:  # every candidate left duplicates a chosen one: take them by uncertainty
            best = int(np.flatnonzero(~taken)[0])
        taken[best] = True
        chosen.append(best)
        nearest = np.minimum(nearest, 1.0 - cx @ cx[best])
    indices = [int(candidates[i]) for i in chosen]
    return indices, [float(uncertainty[i]) for i in indices]
