"""Training-time overhead of the dashboard's figures (confusion matrix, per-label scores,
reliability bins, learning curve) in ``fit_head``, on real BBC News texts and MiniLM embeddings.

    .venv/bin/python -m benchmarks.dashboard_overhead [--sizes 8 32 64] [--repeats 2]

Prints a table and writes benchmarks/results/dashboard_overhead.json. The embedding time (the
largest part of a real training job) is left out, so the share shown is an upper bound.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from adapters import training

from .short_texts import rows

RESULTS = Path(__file__).resolve().parent / "results"


def sample(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    by_label: dict[str, list[dict]] = defaultdict(list)
    for row in rows("train"):
        by_label[row["label"]].append(row)
    rng = random.Random(seed)
    chosen = [r for label in sorted(by_label) for r in rng.sample(by_label[label], min(n, len(by_label[label])))]
    return [r["input"] for r in chosen], [r["label"] for r in chosen]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 32, 64], help="examples per label")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    from service.backbones.registry import BUILTIN, Registry

    backbone = Registry({"minilm": BUILTIN["minilm"]}, "cpu").load("minilm")
    spent: list[float] = []
    original = training.plots

    def timed_plots(*a, **kw):
        started = time.perf_counter()
        try:
            return original(*a, **kw)
        finally:
            spent.append(time.perf_counter() - started)

    training.plots = timed_plots
    results = []
    print(f"{'per label':>9} {'n':>5} {'fit_head s':>10} {'figures s':>9} {'share':>6} {'curve sizes'}")
    for size in args.sizes:
        texts, labels = sample(size)
        x = np.asarray(backbone.embed(texts))
        totals, figures, curve = [], [], []
        for _ in range(args.repeats):
            spent.clear()
            started = time.perf_counter()
            result = training.fit_head("auto", x, labels, raw=texts)
            totals.append(time.perf_counter() - started)
            figures.append(sum(spent))
            curve = [p["examples_per_label"] for p in result.metrics["learning_curve"]["points"]]
        total, fig = min(totals), min(figures)
        row = {"per_label": size, "n": len(labels), "fit_head_s": total, "figures_s": fig,
               "overhead_share": fig / (total - fig), "curve_sizes": curve, "head": result.metrics["head"]}
        results.append(row)
        print(f"{size:>9} {len(labels):>5} {total:>10.2f} {fig:>9.2f} {row['overhead_share']:>6.1%} {curve}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "dashboard_overhead.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
