"""Issue 20's measurements: OOD flag rates (in-domain vs a foreign domain) and active vs random learning.

    .venv/bin/python benchmarks/ood.py                      # both parts, the defaults docs/monitoring.md quotes
    .venv/bin/python benchmarks/ood.py --part flags --seeds 0 1
    .venv/bin/python benchmarks/ood.py --part active --rounds 3

Everything runs on Graft's own parts: the packaged backbones (MiniLM for text, MobileNetV2 for images, as
the server loads them), ``adapters.ood.fit_ood`` with the pipeline's settings (``GRAFT_OOD_FPR`` 0.05,
class-conditional on the labels, ``CALIBRATION_FOLDS`` = 10 CV folds), the production linear head and
``adapters.active.suggest`` as the suggest route calls it (the pool's unit embeddings, the active head's
probabilities, no labelled set).

Flags: for each data set, a task is trained on ``n`` examples per label drawn from the train pool (seeded);
the flag rate is measured on held-out in-domain examples (should be near 5 %) and on a foreign domain
(should be high). Text: BBC News articles (shared/data) vs Python documentation (the docstrings of
standard-library and NumPy functions: real text, another domain). Images: handwritten digits (shared/data)
vs crops of scikit-image's sample photos (natural photographs).

Active learning: from 2 examples per label, ``--rounds`` rounds each add ``k`` examples (one per label per
round: k = the number of labels) chosen at random, or by ``suggest`` (margin x k-center), or by ``suggest``
that also avoids the examples already labelled (``labelled=``, what the route could add); the linear head
is refitted after each round and scored on the test set. Data sets: BBC News (5 topics) and digits
(10 classes). Several seeds; the table gives the mean over seeds and the JSON every run.

Prints tables and writes benchmarks/results/ood_flags.json and benchmarks/results/ood_active.json.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from adapters.active import suggest  # noqa: E402
from adapters.heads import LinearHead  # noqa: E402
from adapters.ood import CALIBRATION_FOLDS, fit_ood  # noqa: E402
from benchmarks.multitenant import report  # noqa: E402
from service import images  # noqa: E402
from service.backbones.registry import BUILTIN, Registry  # noqa: E402
from tests.conftest import load_jsonl, per_label  # noqa: E402

TEXT_CHARS = 1000  # the article's first characters (MiniLM reads ~256 tokens anyway)
FPR = 0.05


def python_docs(limit: int = 300) -> list[str]:
    """Docstrings (>= 200 characters) of public functions and classes of some stdlib modules and NumPy."""
    import argparse as m_argparse
    import collections
    import functools
    import itertools
    import json
    import os
    import pathlib
    import re
    import sqlite3
    import subprocess
    import zipfile

    docs: list[str] = []
    for module in (
        m_argparse,
        collections,
        functools,
        itertools,
        json,
        os,
        pathlib,
        re,
        sqlite3,
        subprocess,
        zipfile,
        inspect,
        np,
        np.linalg,
        np.random,
    ):
        for name in sorted(dir(module)):
            if name.startswith("_"):
                continue
            doc = inspect.getdoc(getattr(module, name, None)) or ""
            if len(doc) >= 200 and doc not in docs:
                docs.append(doc[:TEXT_CHARS])
    rng = np.random.default_rng(0)
    return [docs[i] for i in sorted(rng.choice(len(docs), min(limit, len(docs)), replace=False))]


def photo_crops(n: int = 200, seed: int = 0) -> list[np.ndarray]:
    """Random square crops (64-256 px) of scikit-image's sample photographs, as RGB arrays."""
    import skimage.data

    names = ("chelsea", "coffee", "astronaut", "rocket", "cat", "immunohistochemistry", "hubble_deep_field", "camera")
    photos = [getattr(skimage.data, name)() for name in names]
    rng = np.random.default_rng(seed)
    crops = []
    for i in range(n):
        photo = photos[i % len(photos)]
        size = int(rng.integers(64, min(256, *photo.shape[:2])))
        y, x = (int(rng.integers(0, photo.shape[d] - size)) for d in (0, 1))
        crop = photo[y : y + size, x : x + size]
        crops.append(np.stack([crop] * 3, axis=-1) if crop.ndim == 2 else crop[..., :3])
    return crops


class DataSet:
    """A labelled pool and test set embedded once, plus a foreign domain's embeddings."""

    def __init__(self, name: str, pool: list[dict], test: list[dict], embed: Callable[[list], np.ndarray]) -> None:
        self.name = name
        self.pool_labels = np.array([r["label"] for r in pool])
        self.test_labels = np.array([r["label"] for r in test])
        self.pool = embed([r["input"] for r in pool])
        self.test = embed([r["input"] for r in test])
        self.labels = sorted(set(self.pool_labels))
        self.foreign = np.zeros((0, self.pool.shape[1]), dtype=np.float32)
        self.foreign_name = ""


def text_set(registry: Registry, test_per_label: int) -> DataSet:
    backbone = registry.load("minilm")

    def embed(texts: list) -> np.ndarray:
        return np.concatenate(
            [backbone.embed([t[:TEXT_CHARS] for t in texts[i : i + 64]]) for i in range(0, len(texts), 64)]
        )

    data = DataSet(
        "bbc_news",
        load_jsonl("bbc_news.train.jsonl"),
        per_label(load_jsonl("bbc_news.test.jsonl"), test_per_label, seed=1),
        embed,
    )
    data.foreign, data.foreign_name = embed(python_docs()), "python docstrings"
    return data


def image_set(registry: Registry, test_per_label: int, pool_per_label: int) -> DataSet:
    backbone = registry.load("mobilenet_v2")
    pre = backbone.preprocessing  # type: ignore[attr-defined]

    def embed(stored: list) -> np.ndarray:
        arrays = images.from_stored(stored, pre)
        return np.concatenate([backbone.embed(arrays[i : i + 32]) for i in range(0, len(arrays), 32)])

    data = DataSet(
        "digits",
        per_label(load_jsonl("digits.train.jsonl"), pool_per_label, seed=0),
        per_label(load_jsonl("digits.test.jsonl"), test_per_label, seed=1),
        embed,
    )
    from PIL import Image

    crops = [images.to_stored(Image.fromarray(c), pre) for c in photo_crops()]
    data.foreign, data.foreign_name = embed(crops), "photo crops"
    return data


def draw(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` pool indices per label (fewer when a label has fewer), seeded."""
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.permutation(np.flatnonzero(labels == label))[:n] for label in sorted(set(labels))])


def flags(data: DataSet, shots: list[int], seeds: list[int]) -> list[dict]:
    rows = []
    for n in shots:
        for seed in seeds:
            chosen = draw(data.pool_labels, n, seed)
            model = fit_ood(
                data.pool[chosen], data.pool_labels[chosen].tolist(), fpr=FPR, folds=CALIBRATION_FOLDS, seed=0
            )
            rows.append(
                {
                    "data": data.name,
                    "per_label": n,
                    "seed": seed,
                    "examples": len(chosen),
                    "in_domain_flag_rate": float(model.flags(data.test).mean()),
                    "foreign": data.foreign_name,
                    "foreign_flag_rate": float(model.flags(data.foreign).mean()),
                    "in_domain_median_score": float(np.median(model.score(data.test))),
                    "foreign_median_score": float(np.median(model.score(data.foreign))),
                }
            )
    return rows


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def accuracy(data: DataSet, chosen: np.ndarray) -> tuple[float, LinearHead]:
    y = np.array([data.labels.index(label) for label in data.pool_labels[chosen]])
    head = LinearHead(list(data.labels)).fit(data.pool[chosen], y)
    predicted = np.array(data.labels)[head.predict_proba(data.test).argmax(axis=1)]
    return float((predicted == data.test_labels).mean()), head


def learning_curves(data: DataSet, rounds: int, seeds: list[int]) -> list[dict]:
    k = len(data.labels)  # one example per label per round, on average
    vectors = unit(data.pool)
    rows = []
    for seed in seeds:
        start = draw(data.pool_labels, 2, seed)
        for strategy in ("random", "suggest", "suggest+labelled"):
            chosen = start.copy()
            rng = np.random.default_rng(1000 + seed)
            for r in range(rounds + 1):
                acc, head = accuracy(data, chosen)
                rows.append(
                    {
                        "data": data.name,
                        "seed": seed,
                        "strategy": strategy,
                        "round": r,
                        "examples": len(chosen),
                        "accuracy": acc,
                    }
                )
                if r == rounds:
                    break
                rest = np.setdiff1d(np.arange(len(data.pool)), chosen)
                if strategy == "random":
                    picked = rng.choice(rest, k, replace=False)
                else:
                    labelled = vectors[chosen] if strategy == "suggest+labelled" else None
                    proba = head.predict_proba(data.pool[rest])
                    indices, _ = suggest(vectors[rest], k, proba=proba, labelled=labelled)
                    picked = rest[indices]
                chosen = np.concatenate([chosen, picked])
    return rows


def mean_curves(rows: list[dict]) -> list[dict]:
    out = []
    keys = sorted({(r["data"], r["round"], r["examples"]) for r in rows})
    for data, rnd, examples in keys:
        line: dict = {"data": data, "round": rnd, "examples": examples}
        for strategy in ("random", "suggest", "suggest+labelled"):
            accs = [r["accuracy"] for r in rows if (r["data"], r["round"], r["strategy"]) == (data, rnd, strategy)]
            line[strategy] = float(np.mean(accs))
            line[f"{strategy} sd"] = float(np.std(accs))
        out.append(line)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["flags", "active", "both"], default="both")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--shots", type=int, nargs="+", default=[8, 16, 64], help="examples per label (flags)")
    parser.add_argument("--rounds", type=int, default=4, help="active-learning rounds of k = labels examples")
    parser.add_argument("--test-per-label", type=int, default=40)
    parser.add_argument("--image-pool-per-label", type=int, default=60, help="digits pool drawn from (time)")
    args = parser.parse_args()
    registry = Registry({name: BUILTIN[name] for name in ("minilm", "mobilenet_v2")}, "cpu")
    sets = [
        text_set(registry, args.test_per_label),
        image_set(registry, args.test_per_label, args.image_pool_per_label),
    ]
    if args.part in ("flags", "both"):
        rows = [row for data in sets for row in flags(data, args.shots, args.seeds)]
        summary = []
        for data in sets:
            for n in args.shots:
                mine = [r for r in rows if r["data"] == data.name and r["per_label"] == n]
                summary.append(
                    {
                        "data": data.name,
                        "per_label": n,
                        "foreign": data.foreign_name,
                        "in_domain": float(np.mean([r["in_domain_flag_rate"] for r in mine])),
                        "in_domain sd": float(np.std([r["in_domain_flag_rate"] for r in mine])),
                        "foreign_rate": float(np.mean([r["foreign_flag_rate"] for r in mine])),
                        "foreign sd": float(np.std([r["foreign_flag_rate"] for r in mine])),
                        "test": len(data.test),
                        "foreign_n": len(data.foreign),
                    }
                )
        print(f"\nOOD flag rate (target fpr {FPR}), mean over seeds {args.seeds}")
        report("ood_flags", list(summary[0]), summary, fpr=FPR, seeds=args.seeds, runs=rows)
    if args.part in ("active", "both"):
        runs = [row for data in sets for row in learning_curves(data, args.rounds, args.seeds)]
        curves = mean_curves(runs)
        print(f"\nTest accuracy from 2 per label, k = labels per round, mean over seeds {args.seeds}")
        report("ood_active", list(curves[0]), curves, seeds=args.seeds, rounds=args.rounds, runs=runs)


if __name__ == "__main__":
    main()
