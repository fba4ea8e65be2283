"""Calibration: expected calibration error and temperature scaling of predicted probabilities."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar

BINS = 15


def expected_calibration_error(proba: np.ndarray, y: np.ndarray, bins: int = BINS) -> float:
    """ECE (Guo et al., 2017): |accuracy - confidence| of the top label, averaged over ``bins``
    equal-width confidence bins weighted by how many predictions fall in each."""
    confidence = proba.max(axis=1)
    correct = proba.argmax(axis=1) == y
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.sum() * abs(correct[mask].mean() - confidence[mask].mean())
    return float(total / len(y))


def apply_temperature(proba: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T): the same as dividing the logits that produced ``p`` by ``T``."""
    z = np.log(np.clip(proba, 1e-12, 1.0)) / temperature
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    return z / z.sum(axis=1, keepdims=True)


def nll(proba: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-likelihood of the true labels."""
    return float(-np.mean(np.log(np.clip(proba[np.arange(len(y)), y], 1e-12, 1.0))))


def fit_temperature(proba: np.ndarray, y: np.ndarray) -> float:
    """The temperature in [0.05, 20] minimising the NLL of held-out probabilities."""
    result = minimize_scalar(
        lambda log_t: nll(apply_temperature(proba, float(np.exp(log_t))), y),
        bounds=(np.log(0.05), np.log(20.0)), method="bounded", options={"xatol": 1e-4},
    )
    return float(np.exp(result.x))


@dataclass(frozen=True)
class Calibration:
    ece: float  # of the uncalibrated held-out probabilities
    log_loss: float
    temperature: float  # 1.0 when scaling did not help
    ece_calibrated: float
    log_loss_calibrated: float

    @property
    def applied(self) -> bool:
        return self.temperature != 1.0

    def as_dict(self) -> dict[str, float | bool]:
        return {
            "ece": self.ece, "log_loss": self.log_loss, "temperature": self.temperature, "applied": self.applied,
            "ece_calibrated": self.ece_calibrated, "log_loss_calibrated": self.log_loss_calibrated,
        }


def calibrate(proba: np.ndarray, y: np.ndarray) -> Calibration:
    """Fit temperature scaling on held-out (cross-validated) probabilities; keep it only when it
    lowers both the ECE and the NLL, else the temperature stays 1."""
    ece, loss = expected_calibration_error(proba, y), nll(proba, y)
    t = fit_temperature(proba, y)
    scaled = apply_temperature(proba, t)
    ece_t, loss_t = expected_calibration_error(scaled, y), nll(scaled, y)
    if ece_t < ece and loss_t <= loss:
        return Calibration(ece, loss, t, ece_t, loss_t)
    return Calibration(ece, loss, 1.0, ece, loss)
