from __future__ import annotations

import numpy as np
import pytest

from adapters.calibration import apply_temperature, calibrate, expected_calibration_error, fit_temperature


def sampled(n: int, k: int, sharpness: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and labels drawn *from* those probabilities: calibrated by construction."""
    rng = np.random.default_rng(seed)
    logits = sharpness * rng.normal(size=(n, k))
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    y = np.array([rng.choice(k, p=row) for row in p])
    return p, y


def test_calibrated_probabilities_have_small_ece() -> None:
    p, y = sampled(4000, 4, 2.0, seed=0)
    assert expected_calibration_error(p, y) < 0.03


def test_overconfidence_is_measured_and_fixed_by_temperature() -> None:
    p, y = sampled(3000, 4, 2.0, seed=1)
    sharp = apply_temperature(p, 0.4)  # same argmax, overconfident
    assert np.array_equal(sharp.argmax(axis=1), p.argmax(axis=1))
    assert expected_calibration_error(sharp, y) > 0.1
    t = fit_temperature(sharp, y)
    assert t == pytest.approx(1 / 0.4, rel=0.1)
    result = calibrate(sharp, y)
    assert result.applied and result.ece_calibrated < 0.03 and result.log_loss_calibrated < result.log_loss


def test_temperature_is_kept_at_one_when_it_does_not_help() -> None:
    p, y = sampled(3000, 3, 1.5, seed=2)
    result = calibrate(p, y)
    assert result.ece_calibrated <= result.ece
    if not result.applied:
        assert result.temperature == 1.0 and result.ece_calibrated == result.ece


def test_temperature_one_is_the_identity() -> None:
    p, _ = sampled(50, 5, 1.0, seed=3)
    assert np.allclose(apply_temperature(p, 1.0), p, atol=1e-9)
