"""Which selection rule for ``head: "auto"``? Every rule scored on the same draws, offline.

For each data set, n examples per label and seeded draw (the draws of benchmarks/eval_quality.py), the
script cross-validates every head kind and grid entry once (``adapters.training.cross_validate``, the
service's own code and folds), fits every entry on the whole draw and keeps its test probabilities.
A selection rule is then a function of the out-of-fold probabilities only, so rules are compared on
identical fits: the only difference between two rows is the rule. Each run's figure is the rule's test
accuracy minus the better of the two references on that draw (issue 17's floor): logistic regression
``LogisticRegression(max_iter=100)`` on the same frozen embeddings (the MTEB protocol) and the
from-scratch baseline head (TF-IDF or pixels, C by the same CV).

    .venv/bin/python -m benchmarks.selection_rules --datasets debian,fortunes,bbc_short,digits \\
        --fortunes /tmp/fortunes --sizes 8,64 --draws 3

Rules:
- ``current``: what ``fit_head`` does: per kind the grid entry with the best CV accuracy (lower
  out-of-fold log-loss breaks ties), then the kind with the best accuracy, ties within one example to
  the kind listed first in ``AUTO_HEADS``.
- ``ties_to_regularised``: as current, but accuracy ties inside a kind's grid go to the more
  regularised entry (earlier in the grid) instead of the lower log-loss.
- ``prior_2se``: each kind keeps a default grid entry unless another beats it by more than 2 paired
  standard errors of the per-example CV correctness; the linear head is kept unless another kind beats
  it the same way.
- ``linear_c2``: the linear head at C = 2, no selection at all (a reference for how much selection costs).
- ``mean_lph``: the mean of the linear, prototype and hybrid heads' probabilities (each kind's entry as
  in current).
- ``prior_1se``: the same at one standard error.
- ``text_prior_1se``, ``text_prior_2se``: the prior on text tasks, the current rule on images.
- ``adopted``: what ``fit_head`` does since 2026-12-06 (``adapters.training.choose_with_prior`` on text below
  ``PRIOR_BELOW_PER_LABEL`` examples per label: ``prior_2se`` among the transfer heads, the from-scratch baseline
  where it is more than one example ahead; the current rule otherwise).
- ``stack_lpb``: a convex mix of the linear, prototype and baseline heads' probabilities, the weights
  (steps of 0.1) minimising the out-of-fold log-loss.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import StratifiedKFold  # noqa: E402

from adapters.training import (  # noqa: E402
    AUTO_HEADS,
    DEFAULT_PARAMS,
    GRIDS,
    PRIOR_BELOW_PER_LABEL,
    _make,
    choose_with_prior,
    cross_validate,
    encode_labels,
)
from benchmarks.eval_quality import Embeddings, draw, image_backbone, load_datasets, text_backbone  # noqa: E402
from tests.conftest import per_label  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
Entry = tuple[np.ndarray, np.ndarray]  # (out-of-fold probabilities, test probabilities)
Fits = dict[str, dict[int, Entry]]  # head kind → grid index → entry


def accuracy(p: np.ndarray, y: np.ndarray) -> float:
    return float((p.argmax(1) == y).mean())


def log_loss(p: np.ndarray, y: np.ndarray) -> float:
    return float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-12, 1.0)).mean())


def best_entry(fits: Fits, y: np.ndarray, kind: str, ties_to_regularised: bool = False) -> Entry:
    grid = fits[kind]
    if ties_to_regularised:
        return grid[max(grid, key=lambda i: (accuracy(grid[i][0], y), -i))]
    return grid[max(grid, key=lambda i: (accuracy(grid[i][0], y), -log_loss(grid[i][0], y)))]


def by_kind(fits: Fits, y: np.ndarray, heads: dict[str, Entry]) -> Entry:
    best = max(accuracy(e[0], y) for e in heads.values())
    kind = next(k for k in AUTO_HEADS if k in heads and accuracy(heads[k][0], y) >= best - 1.0 / len(y) - 1e-12)
    return heads[kind]


def beats(a: np.ndarray, b: np.ndarray, y: np.ndarray, z: float) -> bool:
    d = (a.argmax(1) == y).astype(float) - (b.argmax(1) == y).astype(float)
    return d.mean() > 0 and d.mean() > z * d.std(ddof=1) / np.sqrt(len(d))


DEFAULT_ENTRY = {kind: GRIDS[kind].index(params) for kind, params in DEFAULT_PARAMS.items()}  # the service's defaults


def rule_current(fits: Fits, y: np.ndarray) -> np.ndarray:
    return by_kind(fits, y, {k: best_entry(fits, y, k) for k in fits})[1]


def rule_ties_to_regularised(fits: Fits, y: np.ndarray) -> np.ndarray:
    return by_kind(fits, y, {k: best_entry(fits, y, k, ties_to_regularised=True) for k in fits})[1]


def prior(fits: Fits, y: np.ndarray, z: float) -> np.ndarray:
    heads = {}
    for kind, grid in fits.items():
        top, default = best_entry(fits, y, kind), grid[DEFAULT_ENTRY[kind]]
        heads[kind] = top if beats(top[0], default[0], y, z) else default
    chosen = "linear"
    for kind in ("hybrid", "baseline", "prototype"):
        if kind in heads and beats(heads[kind][0], heads[chosen][0], y, z):
            chosen = kind
    return heads[chosen][1]


def rule_prior_2se(fits: Fits, y: np.ndarray) -> np.ndarray:
    return prior(fits, y, 2.0)


def rule_prior_1se(fits: Fits, y: np.ndarray) -> np.ndarray:
    return prior(fits, y, 1.0)


def rule_linear_c2(fits: Fits, y: np.ndarray) -> np.ndarray:
    return fits["linear"][1][1]


def rule_mean_lph(fits: Fits, y: np.ndarray) -> np.ndarray:
    return np.mean([best_entry(fits, y, k)[1] for k in ("linear", "prototype", "hybrid") if k in fits], axis=0)


def rule_stack_lpb(fits: Fits, y: np.ndarray) -> np.ndarray:
    parts = [best_entry(fits, y, k) for k in ("linear", "prototype", "baseline") if k in fits]
    steps = np.round(np.arange(0.0, 1.0001, 0.1), 1)
    weights = [w for w in itertools.product(steps, repeat=len(parts)) if abs(sum(w) - 1.0) < 1e-6]
    best = min(weights, key=lambda w: log_loss(sum(wi * p[0] for wi, p in zip(w, parts, strict=True)), y))
    return sum(wi * p[1] for wi, p in zip(best, parts, strict=True))


def rule_adopted(fits: Fits, y: np.ndarray, modality: str, n: int) -> np.ndarray:
    """What ``fit_head`` does since 2026-12-06: on text with fewer than PRIOR_BELOW_PER_LABEL examples per label,
    the service's own ``choose_with_prior`` (prior_2se, the baseline served where more than one example ahead);
    otherwise the current rule."""
    if modality != "text" or n >= PRIOR_BELOW_PER_LABEL:
        return rule_current(fits, y)
    correct = {k: [fits[k][i][0].argmax(1) == y for i in sorted(fits[k])] for k in fits}
    top = {k: max(fits[k], key=lambda i, k=k: (accuracy(fits[k][i][0], y), -log_loss(fits[k][i][0], y))) for k in fits}
    served, entry = choose_with_prior([k for k in AUTO_HEADS if k in fits], correct, top)
    return fits[served][entry[served]][1]


RULES: dict[str, Callable[[Fits, np.ndarray], np.ndarray]] = {
    "current": rule_current,
    "ties_to_regularised": rule_ties_to_regularised,
    "prior_2se": rule_prior_2se,
    "prior_1se": rule_prior_1se,
    "linear_c2": rule_linear_c2,
    "mean_lph": rule_mean_lph,
    "stack_lpb": rule_stack_lpb,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="debian,fortunes,bbc_short,digits")
    parser.add_argument("--fortunes", help="folder of the unpacked fortunes packages (benchmarks/textsets.py)")
    parser.add_argument("--sizes", default="8,64")
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--test-per-label", type=int, default=100)
    parser.add_argument("--out", default="selection_rules.json", help="file name under benchmarks/results/")
    args = parser.parse_args()
    runs: list[dict] = []
    for ds in load_datasets(args.datasets.split(","), args.fortunes):
        ds.test = per_label(ds.test, args.test_per_label, seed=12345)
        backbone = text_backbone() if ds.modality == "text" else image_backbone()
        emb = Embeddings(backbone, ds.train + ds.test)
        x_test, raw_test = emb.of(ds.test), [r["input"] for r in ds.test]
        for n in (int(s) for s in args.sizes.split(",")):
            for seed in range(args.draws):
                train = draw(ds, n, seed)
                x, raw = emb.of(train), [r["input"] for r in train]
                classes, y = encode_labels([r["label"] for r in train])
                y_test = np.array([classes.index(r["label"]) for r in ds.test])
                kinds = list(GRIDS)
                oof = cross_validate(
                    kinds, classes, x, y, raw, StratifiedKFold(n_splits=min(5, n), shuffle=True, random_state=seed),
                    ds.modality,
                )
                fits: Fits = {k: {} for k in kinds}
                for kind in kinds:
                    for i, params in enumerate(GRIDS[kind]):
                        head = _make(kind, classes, params, ds.modality).fit(x, y, raw=raw)
                        fits[kind][i] = (oof[kind][i], head.predict_proba(x_test, raw=raw_test))
                mteb = accuracy(np.eye(len(classes))[LogisticRegression(max_iter=100).fit(x, y).predict(x_test)],
                                y_test)
                scratch = accuracy(best_entry(fits, y, "baseline")[1], y_test)
                reference = max(mteb, scratch)
                run = {"dataset": ds.name, "n": n, "draw": seed, "mteb": 100 * mteb, "scratch": 100 * scratch,
                       "rules": {name: 100 * (accuracy(rule(fits, y), y_test) - reference)
                                 for name, rule in RULES.items()}}
                run["rules"]["adopted"] = 100 * (accuracy(rule_adopted(fits, y, ds.modality, n), y_test) - reference)
                for z in (1, 2):  # a prior towards the linear head on text only (images keep the current rule)
                    rule_name = f"prior_{z}se" if ds.modality == "text" else "current"
                    run["rules"][f"text_prior_{z}se"] = run["rules"][rule_name]
                runs.append(run)
                print(json.dumps(run), flush=True)
                RESULTS.mkdir(parents=True, exist_ok=True)
                (RESULTS / args.out).write_text(json.dumps({"runs": runs}, indent=1))
    print("\nTest accuracy minus max(LR on embeddings, from scratch) on the same draw, pt: mean / worst per row\n")
    names = list(runs[0]["rules"])
    print("| data set | n/label | draws | " + " | ".join(names) + " |")
    print("|---|---|---|" + "---|" * len(names))
    for key in sorted({(r["dataset"], r["n"]) for r in runs}):
        rows = [r for r in runs if (r["dataset"], r["n"]) == key]
        cells = [f"{statistics.fmean(r['rules'][k] for r in rows):+.1f} / {min(r['rules'][k] for r in rows):+.1f}"
                 for k in names]
        print(f"| {key[0]} | {key[1]} | {len(rows)} | " + " | ".join(cells) + " |")
    cells = []
    for k in names:
        values = [r["rules"][k] for r in runs]
        cells.append(f"**{statistics.fmean(values):+.2f}** / {min(values):+.1f} / {sum(v < -0.5 for v in values)}")
    print(f"| all (mean / worst / runs below −0.5) | | {len(runs)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
