"""Head ``auto`` on small text tasks: the prior towards default settings and the linear head
(adapters/training.py ``choose_with_prior``; docs/quality.md, "The floor per run")."""

from __future__ import annotations

import numpy as np

from adapters.training import (
    DEFAULT_PARAMS,
    GRIDS,
    PRIOR_BELOW_PER_LABEL,
    choose_with_prior,
    clearly_better,
    fit_head,
)
from tests.conftest import per_label


def correct(n: int, right: set[int]) -> np.ndarray:
    return np.array([i in right for i in range(n)])


def test_clearly_better_needs_more_than_two_standard_errors() -> None:
    n = 40
    base = correct(n, set(range(20)))
    assert not clearly_better(correct(n, set(range(21))), base)  # one example more: noise
    assert not clearly_better(base, base)
    assert clearly_better(correct(n, set(range(30))), base)  # ten more, none fewer
    swapped = correct(n, set(range(5, 28)))  # 8 more right, 5 fewer: 3 net of 13 decided differently
    assert not clearly_better(swapped, base)
    assert not clearly_better(correct(1, {0}), correct(1, set()))  # one example says nothing


def test_defaults_and_the_linear_head_unless_clearly_beaten() -> None:
    n = 40
    default = {kd: GRIDS[kd].index(DEFAULT_PARAMS[kd]) for kd in GRIDS}
    grid = {kd: [correct(n, set(range(20))) for _ in GRIDS[kd]] for kd in GRIDS}
    grid["baseline"] = [correct(n, set(range(10))) for _ in GRIDS["baseline"]]
    top = {kd: 0 for kd in GRIDS}  # CV's best entry: the first, a hair ahead
    grid["linear"][0] = correct(n, set(range(21)))
    grid["hybrid"][0] = correct(n, set(range(22)))
    served, entry = choose_with_prior(list(GRIDS), grid, top)
    assert served == "linear" and entry == default  # a hair is not enough to leave a default

    grid["hybrid"][0] = correct(n, set(range(34)))  # 14 more right, none fewer: clearly better
    served, entry = choose_with_prior(list(GRIDS), grid, top)
    assert served == "hybrid" and entry["hybrid"] == 0 and entry["linear"] == default["linear"]


def test_the_negative_transfer_guard_is_not_held_to_the_prior() -> None:
    n = 9
    grid = {kd: [correct(n, {0}) for _ in GRIDS[kd]] for kd in GRIDS}
    grid["baseline"] = [correct(n, {1, 2, 3, 4, 5}) for _ in GRIDS["baseline"]]  # 5 vs 1: not 2 SE on 9 examples
    served, _ = choose_with_prior(list(GRIDS), grid, {kd: 0 for kd in GRIDS})
    assert served == "baseline"
    grid["baseline"] = [correct(n, {1, 2}) for _ in GRIDS["baseline"]]  # one example more: transfer kept
    served, _ = choose_with_prior(list(GRIDS), grid, {kd: 0 for kd in GRIDS})
    assert served == "linear"


def test_auto_uses_the_prior_on_small_text_tasks_only(minilm, bbc_train) -> None:
    small = per_label(bbc_train, 8, seed=3)
    x = minilm.embed([r["input"] for r in small])
    m = fit_head("auto", x, [r["label"] for r in small], raw=[r["input"] for r in small]).metrics
    assert m["selection_rule"].startswith("prior")
    if m["head"] in ("linear", "hybrid", "prototype"):  # its settings are the default unless clearly better by CV
        grid = [r["accuracy"] for r in m["candidates"] if r["head"] == m["head"]]
        assert m["selected"] == DEFAULT_PARAMS[m["head"]] or m["accuracy"] == max(grid)
    pinned = fit_head("linear", x, [r["label"] for r in small], raw=[r["input"] for r in small]).metrics
    assert pinned["selection_rule"] == "pinned"

    large = per_label(bbc_train, PRIOR_BELOW_PER_LABEL, seed=3)
    x = minilm.embed([r["input"] for r in large])
    m = fit_head("auto", x, [r["label"] for r in large], raw=[r["input"] for r in large]).metrics
    assert m["selection_rule"] == "best cross-validated accuracy"
    best = max(h["accuracy"] for h in m["heads"].values())
    assert m["heads"][m["head"]]["accuracy"] >= best - 1 / len(large)

    images = fit_head("auto", np.random.default_rng(0).normal(size=(24, 8)), ["a", "b", "c"] * 8,
                      modality="image").metrics
    assert images["selection_rule"] == "best cross-validated accuracy"  # images keep the plain rule
