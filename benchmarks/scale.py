"""Scale simulation (issue 5, benchmark 4): 100,000 tasks, Zipf(1.1) traffic, a head cache
budgeted at 1 % of all their head bytes. Reports the hit rate, the latency a cache miss adds
(store read + decode, p50/p99) and the head-side throughput, next to the backbone's.

    .venv/bin/python -m benchmarks.scale [--tasks 100000] [--requests 200000]

Heads have 2–20 labels over 384 dimensions (sizes differ by labels × dim, as in production).
Misses go through the production loader (``store_head_loader``: a SQLAlchemy read of the
version's safetensors blob from a real SQLite store, then ``from_bytes``). To keep the database
small, ``--stored`` distinct blobs are stored and task k reads blob k mod stored (same label
count); the cache still sees 100,000 distinct keys. Rows arrive in passes of 64, as the batcher
forms them; each pass fetches its heads, then runs the batched head step on real embeddings.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from adapters.heads import LinearHead
from service.backbones.registry import BUILTIN, Registry
from service.batching import apply_heads
from service.caching import HeadCache, head_nbytes
from service.router import store_head_loader
from service.store.repository import Store

from .multitenant import install, percentile_ms, report, zipf_indices
from .short_texts import short_texts

DIM = 384
LABELS = range(2, 21)
PASS = 64


def random_head(labels: int, seed: int) -> LinearHead:
    rng = np.random.default_rng(seed)
    head = LinearHead([f"label-{i}" for i in range(labels)])
    head.weight = (rng.normal(size=(labels, DIM)) * 0.1).astype(np.float32)
    head.bias = rng.normal(size=labels).astype(np.float32)
    return head


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200_000, help="measured rows, after as many warm-up rows")
    parser.add_argument("--stored", type=int, default=19 * 100, help="distinct blobs in the store (a multiple of 19)")
    parser.add_argument("--budget-share", type=float, default=0.01)
    parser.add_argument("--zipf", type=float, default=1.1)
    args = parser.parse_args()
    assert args.stored % len(LABELS) == 0

    labels_of = np.array([LABELS[k % len(LABELS)] for k in range(args.tasks)])
    size_of_labels = {n: head_nbytes(random_head(n, 0)) for n in LABELS}
    total_bytes = int(sum(size_of_labels[n] for n in labels_of))
    budget = int(total_bytes * args.budget_share)
    print(f"{args.tasks} tasks, head bytes in all {total_bytes / 2**20:.0f} MiB, cache budget {budget / 2**20:.1f} MiB")

    backbone = Registry({"minilm": BUILTIN["minilm"]}, "cpu").load("minilm")
    texts = short_texts(4 * PASS)
    started = time.perf_counter()
    for i in range(0, len(texts), PASS):
        vectors = backbone.embed(texts[i : i + PASS])
    backbone_rate = len(texts) / (time.perf_counter() - started)

    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{Path(tmp) / 'graft.db'}")
        store.create_schema()
        tenant, _ = store.create_tenant("scale")
        ids = [
            install(store, tenant.id, f"t{j}", random_head(LABELS[j % len(LABELS)], j), backbone)[0]
            for j in range(args.stored)
        ]
        load = store_head_loader(store)
        cache = HeadCache(lambda k: load((ids[k % args.stored], 1)), budget)

        rng = np.random.default_rng(0)
        draws = zipf_indices(args.tasks, 2 * args.requests, args.zipf, rng)
        warm, measured = draws[: args.requests], draws[args.requests :]
        for k in warm:
            cache.get(int(k))
        hits0, loads0 = cache.hits, cache.loads
        miss_seconds: list[float] = []
        head_step = 0.0
        started = time.perf_counter()
        for p in range(0, len(measured), PASS):
            keys = measured[p : p + PASS]
            batch_heads = []
            for k in keys:
                head = cache.peek(int(k))
                if head is None:
                    t0 = time.perf_counter()
                    head = cache.get(int(k))
                    miss_seconds.append(time.perf_counter() - t0)
                batch_heads.append(head)
            t0 = time.perf_counter()
            apply_heads(vectors[: len(keys)], [(h, i, i + 1) for i, h in enumerate(batch_heads)])
            head_step += time.perf_counter() - t0
        elapsed = time.perf_counter() - started
        store.close()

    hits, misses = cache.hits - hits0, cache.loads - loads0
    rate = len(measured) / elapsed
    backbone_seconds = len(measured) / backbone_rate
    row = {
        "tasks": args.tasks,
        "budget_mib": budget / 2**20,
        "cached_heads": len(cache),
        "hit_rate": hits / (hits + misses),
        "miss_p50_ms": percentile_ms(miss_seconds, 50),
        "miss_p99_ms": percentile_ms(miss_seconds, 99),
        "head_side_rows_per_s": rate,
        "backbone_rows_per_s": backbone_rate,
        "miss_time_vs_backbone": sum(miss_seconds) / backbone_seconds,
        "head_step_vs_backbone": head_step / backbone_seconds,
    }
    report(
        "scale",
        [
            "tasks",
            "budget_mib",
            "cached_heads",
            "hit_rate",
            "miss_p50_ms",
            "miss_p99_ms",
            "head_side_rows_per_s",
            "backbone_rows_per_s",
            "miss_time_vs_backbone",
        ],
        [row],
        args=vars(args),
        total_head_bytes=total_bytes,
    )
    print(f"at the backbone's {backbone_rate:.0f} rows/s, cache misses add {100 * row['miss_time_vs_backbone']:.1f} % "
          f"and the head step {100 * row['head_step_vs_backbone']:.2f} % to the work per row")


if __name__ == "__main__":
    main()
