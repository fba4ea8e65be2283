"""Out-of-distribution scores: calibrated flag rate on held-out in-distribution inputs, far inputs flagged,
storage round trip, and on real MiniLM embeddings news vs Python documentation."""

from __future__ import annotations

import inspect
import json
import zipfile

import numpy as np
import pytest

from adapters.ood import MIN_EXAMPLES, OodDataError, OodModel, fit_ood
from tests.conftest import load_jsonl, per_label


def clusters(rng: np.random.Generator, n: int, centres: np.ndarray) -> tuple[np.ndarray, list[str]]:
    labels = rng.integers(0, len(centres), n)
    x = centres[labels] + rng.normal(scale=0.3, size=(n, centres.shape[1]))
    return x.astype(np.float32), [f"c{i}" for i in labels]


def test_in_distribution_inputs_are_flagged_near_the_stated_rate_and_far_ones_always() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16))
    x, y = clusters(rng, 400, centres)
    model = fit_ood(x, y, fpr=0.05)
    fresh, _ = clusters(rng, 4000, centres)
    rate = model.flags(fresh).mean()
    assert 0.02 < rate < 0.09, rate  # calibrated on held-out folds, not on the fitted examples
    far = fresh + 3.0  # the same inputs moved away from every class
    assert model.flags(far).mean() > 0.99
    assert (model.score(far) > model.score(fresh)).all()


def test_a_point_between_classes_scores_by_its_nearest_class() -> None:
    rng = np.random.default_rng(1)
    centres = np.zeros((2, 8))
    centres[1, 0] = 10.0
    x, y = clusters(rng, 200, centres)
    model = fit_ood(x, y)
    at_second = np.zeros((1, 8), dtype=np.float32)
    at_second[0, 0] = 10.0
    between = np.zeros((1, 8), dtype=np.float32)
    between[0, 0] = 5.0
    assert not model.flags(at_second)[0] and model.flags(between)[0]


def test_one_mean_without_labels_and_arrays_round_trip() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(50, 6)).astype(np.float32)
    model = fit_ood(x, None, fpr=0.1)
    assert model.means.shape == (1, 6) and model.fpr == 0.1
    arrays = model.to_arrays()
    assert all(a.dtype != object for a in arrays.values())
    again = OodModel.from_arrays(arrays)
    assert np.array_equal(again.score(x), model.score(x))


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(OodDataError, match="at least"):
        fit_ood(np.zeros((MIN_EXAMPLES - 1, 4)))
    with pytest.raises(OodDataError, match="fpr"):
        fit_ood(np.random.default_rng(0).normal(size=(20, 4)), fpr=0.7)
    model = fit_ood(np.random.default_rng(0).normal(size=(20, 4)))
    with pytest.raises(OodDataError, match="shape"):
        model.score(np.zeros((2, 5)))
    arrays = model.to_arrays() | {"ood.whiten": np.zeros((3, 3), dtype=np.float32)}
    with pytest.raises(OodDataError, match="inconsistent"):
        OodModel.from_arrays(arrays)


def test_news_model_flags_python_documentation_on_real_embeddings(minilm) -> None:
    """Measured in development (full articles, 16-64 per label): 1-3 % of BBC test flagged, 100 % of docstrings."""
    news = per_label(load_jsonl("bbc_news.train.jsonl"), 16, seed=0)
    test = [r["input"][:600] for r in load_jsonl("bbc_news.test.jsonl")[:60]]
    docs = [
        inspect.getdoc(obj) or ""
        for obj in (
            json.dumps,
            json.loads,
            zipfile.ZipFile,
            inspect.getdoc,
            inspect.signature,
            np.linalg.eigh,
            pytest.raises,
        )
    ]
    docs = [d[:600] for d in docs if len(d) > 100]
    model = fit_ood(minilm.embed([r["input"][:600] for r in news]), [r["label"] for r in news])
    assert model.flags(minilm.embed(test)).mean() <= 0.15
    assert model.flags(minilm.embed(docs)).mean() >= 0.8
