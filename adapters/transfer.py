"""Transferability of a task to a frozen backbone: LogME (You et al., ICML 2021).

LogME scores how well frozen features ``F`` (n, d) explain the labels without training anything:
for each class ``k`` a Bayesian linear regression of the one-hot target ``y_k`` on ``F`` with prior
``w ~ N(0, 1/alpha I)`` and noise ``N(0, 1/beta)``; the *evidence* (marginal likelihood)
``p(y_k | F, alpha, beta)`` is maximised over ``alpha, beta`` by MacKay's fixed-point iteration,
and LogME is the maximised log evidence per example, averaged over the classes:

    L(a, b) = d/2 log a + n/2 log b - n/2 log 2pi - b/2 |F m - y|^2 - a/2 |m|^2 - 1/2 log|A|
    A = a I + b F'F,   m = b A^-1 F' y

One SVD of ``F`` diagonalises every class's problem: with ``F = U S V'`` and ``z = U'y`` all the
terms are sums over the singular values, so each fixed-point step is O(min(n, d)). Higher is better;
scores are comparable between backbones on the *same* examples, not across tasks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MAX_ITER = 100  # the paper notes convergence "within a few iterations"; this is a safety bound
TOL = 1e-5  # relative change of lambda = alpha / beta that ends the iteration


@dataclass(frozen=True)
class ClassEvidence:
    evidence: float  # maximised log evidence / n
    alpha: float
    beta: float
    iterations: int


def _class_evidence(sigma: np.ndarray, z: np.ndarray, y_sq: float, n: int, d: int) -> ClassEvidence:
    """Fixed-point maximisation for one target, given the squared singular values ``sigma`` (k,)
    of F and the target's projection ``z = U'y`` (k,) on F's left singular vectors."""
    outside = max(y_sq - float(z @ z), 0.0)  # |y|^2 outside F's column space: never fitted
    z2 = z * z
    eps = 1e-12
    alpha, beta = 1.0, 1.0
    iterations = 0
    for iterations in range(1, MAX_ITER + 1):  # noqa: B007 (kept for the report)
        lam = alpha / beta
        shrink = sigma / (sigma + lam)
        gamma = float(shrink.sum())  # effective number of parameters
        m_sq = float((sigma * z2 / (sigma + lam) ** 2).sum())  # |m|^2
        res_sq = float(((lam / (sigma + lam)) ** 2 * z2).sum()) + outside  # |F m - y|^2
        alpha = gamma / max(m_sq, eps)
        beta = max(n - gamma, eps) / max(res_sq, eps)
        if abs(alpha / beta - lam) <= TOL * lam:
            break
    lam = alpha / beta
    m_sq = float((sigma * z2 / (sigma + lam) ** 2).sum())
    res_sq = float(((lam / (sigma + lam)) ** 2 * z2).sum()) + outside
    # log|A| over all d eigenvalues of F'F: the k from the SVD plus d - k zeros (each log alpha)
    log_det = float(np.log(alpha + beta * sigma).sum()) + (d - len(sigma)) * math.log(alpha)
    evidence = (
        d / 2 * math.log(alpha) + n / 2 * math.log(beta) - n / 2 * math.log(2 * math.pi)
        - beta / 2 * res_sq - alpha / 2 * m_sq - log_det / 2
    )
    return ClassEvidence(evidence / n, alpha, beta, iterations)


def logme_per_class(features: np.ndarray, y: np.ndarray) -> list[ClassEvidence]:
    """Per-class maximised evidence for integer targets ``y`` (n,) in ``0..K-1``."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) != len(y) or len(f) < 2:
        raise ValueError("LogME needs a (n, d) feature matrix with n >= 2 and one label per row")
    n, d = f.shape
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    sigma = s * s
    out = []
    for k in np.unique(y):
        target = (y == k).astype(np.float64)
        out.append(_class_evidence(sigma, u.T @ target, float(target @ target), n, d))
    return out


def logme(features: np.ndarray, y: np.ndarray) -> float:
    """LogME: mean over classes of the maximised log evidence per example (higher transfers better)."""
    return float(np.mean([c.evidence for c in logme_per_class(features, y)]))


def capped_sample(y: np.ndarray, cap: int, seed: int = 0) -> np.ndarray:
    """Indices of at most ``cap`` examples, stratified by label (every label keeps at least 2 where it
    has them), so transferability on large tasks costs a bounded number of backbone passes."""
    n = len(y)
    if n <= cap:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    chosen = []
    labels, counts = np.unique(y, return_counts=True)
    for label, count in zip(labels, counts, strict=True):
        idx = np.flatnonzero(y == label)
        take = min(count, max(2, round(cap * count / n)))
        chosen.append(rng.choice(idx, size=take, replace=False))
    return np.sort(np.concatenate(chosen))
