"""Out-of-distribution scores for a version: how far an input's embedding lies from its training examples.

The model is class-conditional Mahalanobis distance with one shared covariance, shrunk towards a scaled
identity (Ledoit-Wolf), in the frozen backbone's space (Lee et al. 2018, "A simple unified framework for
detecting out-of-distribution samples"). A score is the squared distance to the nearest class mean; a task
kind without classes (regression) uses one mean. Few examples per label (8) and 384 dimensions make the
plain covariance singular; the shrinkage is what makes the distance usable there.

The threshold is calibrated on cross-validation folds: each fold's held-out examples are scored by a model
fitted on the other folds, and the threshold is the ``1 - fpr`` quantile of those held-out scores. So an
input from the training distribution is flagged with probability close to ``fpr`` (the default 5 %),
measured on examples the model did not see, not on the examples it was fitted on (which score lower).

Stored with the version as plain arrays (``to_arrays`` / ``from_arrays``; never pickled). Scoring costs one
``(n, d) @ (d, d)`` product and a distance to each class mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.covariance import ledoit_wolf
from sklearn.model_selection import KFold, StratifiedKFold

DEFAULT_FPR = 0.05
MIN_EXAMPLES = 8  # fewer cannot calibrate a threshold: no OOD model, inputs are never flagged
# Folds the serving pipeline calibrates on. With fewer examples than dimensions a fold's model, fitted on
# (folds - 1) / folds of them, measures held-out inputs as farther than the final model measures new ones,
# so the threshold comes out conservative; more folds shrink that gap (benchmarks/ood.py, docs/monitoring.md).
CALIBRATION_FOLDS = 10


class OodDataError(ValueError):
    """The examples cannot give an OOD model (too few, or arrays of the wrong shape)."""


@dataclass(frozen=True)
class OodModel:
    """``means`` (k, d) float32; ``whiten`` (d, d) float32 with ``whiten @ whiten.T`` the precision;
    ``threshold`` the calibrated squared distance above which an input is flagged, at rate ``fpr``
    on held-out in-distribution examples."""

    means: np.ndarray
    whiten: np.ndarray
    threshold: float
    fpr: float

    def distances(self, x: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distance of each row of ``x`` (n, d) to its nearest class mean: (n,)."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.means.shape[1]:
            raise OodDataError(f"expected embeddings of shape (n, {self.means.shape[1]}), got {x.shape}")
        z = x @ self.whiten
        m = self.means @ self.whiten
        # ||z - m||² = ||z||² - 2 z·m + ||m||², nearest mean per row
        d2 = (z * z).sum(1, keepdims=True) - 2.0 * z @ m.T + (m * m).sum(1)[None, :]
        return np.maximum(d2.min(axis=1), 0.0)

    def score(self, x: np.ndarray) -> np.ndarray:
        """Distance as a multiple of the threshold: above 1.0 is out of distribution. (n,) float32."""
        return (self.distances(x) / self.threshold).astype(np.float32)

    def flags(self, x: np.ndarray) -> np.ndarray:
        return self.score(x) > 1.0

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "ood.means": np.ascontiguousarray(self.means, dtype=np.float32),
            "ood.whiten": np.ascontiguousarray(self.whiten, dtype=np.float32),
            "ood.threshold": np.asarray([self.threshold, self.fpr], dtype=np.float64),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> OodModel:
        means, whiten, calib = arrays["ood.means"], arrays["ood.whiten"], arrays["ood.threshold"]
        if means.ndim != 2 or whiten.shape != (means.shape[1], means.shape[1]) or calib.shape != (2,):
            raise OodDataError("stored OOD arrays have inconsistent shapes")
        return cls(means.astype(np.float32), whiten.astype(np.float32), float(calib[0]), float(calib[1]))


def _fit_geometry(x: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class means and a whitening matrix of the shared, shrunk within-class covariance."""
    classes = np.unique(groups)
    means = np.stack([x[groups == c].mean(axis=0) for c in classes]).astype(np.float64)
    centred = x - means[np.searchsorted(classes, groups)]
    cov, _ = ledoit_wolf(centred, assume_centered=True)
    # precision = W W^T with W = V diag(1/sqrt(eigenvalues)); the shrinkage keeps every eigenvalue > 0
    values, vectors = np.linalg.eigh(cov)
    values = np.maximum(values, 1e-12 * max(float(values.max()), 1e-30))
    whiten = vectors / np.sqrt(values)[None, :]
    return means.astype(np.float32), whiten.astype(np.float32)


def fit_ood(
    x: np.ndarray,
    labels: Sequence[str] | None = None,
    *,
    fpr: float = DEFAULT_FPR,
    folds: int = 5,
    seed: int = 0,
) -> OodModel:
    """Fit on a version's training embeddings ``x`` (n, d); ``labels`` per row for class-conditional
    means (None: one mean). The threshold comes from held-out scores on ``folds`` CV folds."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) < MIN_EXAMPLES:
        raise OodDataError(f"an OOD model needs at least {MIN_EXAMPLES} examples, got {len(x)}")
    if not 0.0 < fpr < 0.5:
        raise OodDataError(f"fpr must be in (0, 0.5), got {fpr}")
    if labels is None:
        groups = np.zeros(len(x), dtype=np.int64)
    else:
        groups = np.unique(np.asarray(labels), return_inverse=True)[1]
    counts = np.bincount(groups)
    if counts.min() >= 2 and len(counts) > 1:
        stratified = StratifiedKFold(min(folds, int(counts.min())), shuffle=True, random_state=seed)
        splits = list(stratified.split(x, groups))
    else:
        splits = list(KFold(min(folds, len(x)), shuffle=True, random_state=seed).split(x))
    held_out = np.empty(len(x))
    for train, test in splits:
        # a class absent from the training part: its held-out rows are measured against the others' means,
        # which is what an unseen class is at predict time too
        means, whiten = _fit_geometry(x[train], groups[train])
        fold = OodModel(means, whiten, 1.0, fpr)
        held_out[test] = fold.distances(x[test].astype(np.float32))
    threshold = float(np.quantile(held_out, 1.0 - fpr, method="higher"))
    means, whiten = _fit_geometry(x, groups)
    return OodModel(means, whiten, max(threshold, 1e-12), fpr)
