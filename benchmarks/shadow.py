"""Issue 20's shadow versions: what serving a candidate in shadow costs the predict path.

    .venv/bin/python benchmarks/shadow.py                     # the defaults docs/monitoring.md quotes
    .venv/bin/python benchmarks/shadow.py --requests 50 --repeats 1

A task with an active version (the production linear head on 12 BBC News articles per label, with its OOD
model) and a candidate (a linear head on 3 per label) is served through Graft's own router, batcher and
shadow log, on the packaged MiniLM backbone, from a temporary SQLite store. For each shadow share (0: no
shadow, the in-worker head step; 0.2; 1.0: every request also answered by the candidate, its answers written
to the store every 2 s), ``--clients`` concurrent clients send ``--requests`` predict requests of
``--inputs`` BBC News test articles each. Reported: inputs/s, median and p95 request latency, and backbone
embeddings per input (1.0: the shadow reuses the active version's pass). Best of ``--repeats`` runs per share.

Prints a table and writes benchmarks/results/shadow.json.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from adapters import heads, kinds  # noqa: E402
from adapters.heads import LinearHead  # noqa: E402
from adapters.ood import fit_ood  # noqa: E402
from benchmarks.multitenant import install, report  # noqa: E402
from service import metrics  # noqa: E402
from service.backbones.registry import BUILTIN, Registry  # noqa: E402
from service.batching import Batcher  # noqa: E402
from service.caching import HeadCache  # noqa: E402
from service.engine.shadow import ShadowLog  # noqa: E402
from service.router import Router, store_head_loader  # noqa: E402
from service.store.repository import NewVersion, Store  # noqa: E402
from tests.conftest import load_jsonl, per_label  # noqa: E402

TEXT_CHARS = 400


class Counting:
    """The backbone, counting the inputs it embeds."""

    def __init__(self, inner) -> None:  # noqa: ANN001
        self.inner, self.embedded = inner, 0
        self.name, self.dim, self.modality = inner.name, inner.dim, inner.modality
        self.revision, self.runtime = inner.revision, inner.runtime

    def embed(self, texts):  # noqa: ANN001, ANN201
        self.embedded += len(texts)
        return self.inner.embed(texts)


def linear(backbone, rows: list[dict], labels: list[str]) -> tuple[LinearHead, np.ndarray]:  # noqa: ANN001
    x = backbone.embed([r["input"][:TEXT_CHARS] for r in rows])
    return LinearHead(labels).fit(x, np.array([labels.index(r["label"]) for r in rows])), x


def setup(store: Store, backbone) -> str:  # noqa: ANN001
    train = load_jsonl("bbc_news.train.jsonl")
    labels = sorted({r["label"] for r in train})
    rows = per_label(train, 12, seed=1)
    active, x = linear(backbone, rows, labels)
    ood = fit_ood(x, kinds.kind_of("classification").ood_groups([r["label"] for r in rows]), fpr=0.05)
    candidate, _ = linear(backbone, per_label(train, 3, seed=2), labels)
    tenant, _ = store.create_tenant("bench")
    install(store, tenant.id, "news", active, backbone, ood=ood)
    store.add_examples(tenant.id, "news", [("more", labels[0])])
    job = store.claim_job("bench", lease_s=600, max_attempts=3)
    assert job is not None
    meta = dict(backbone=backbone.name, backbone_revision=backbone.revision, runtime=backbone.runtime)
    blob = heads.to_bytes(candidate, dim=backbone.dim, **meta)
    new = NewVersion(head="linear", labels=labels, metrics={}, n_examples=15, weights=blob, **meta)
    assert store.complete_job(job.id, "bench", new, promote=False) == 2
    return tenant.id


async def load(router: Router, tenant: str, texts: list[str], clients: int, requests: int, n: int) -> list[float]:
    latencies: list[float] = []
    rng = random.Random(0)
    queue = [rng.sample(texts, n) for _ in range(requests)]

    async def client() -> None:
        while queue:
            batch = queue.pop()
            start = time.perf_counter()
            await router.predict(tenant, "news", batch)
            latencies.append(time.perf_counter() - start)

    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shares", type=float, nargs="+", default=[0.0, 0.2, 1.0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--inputs", type=int, default=4, help="inputs per request")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    registry = Registry({"minilm": BUILTIN["minilm"]}, "cpu")
    registry.load_all()
    backbone = Counting(registry.get("minilm"))
    texts = [r["input"][:TEXT_CHARS] for r in load_jsonl("bbc_news.test.jsonl")[:400]]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{tmp}/graft.db")
        store.create_schema()
        tenant = setup(store, backbone)
        batcher = Batcher(backbone, max_batch=32, max_delay_s=0.002)
        log = ShadowLog(store, retention_days=30, max_rows_per_task=1_000_000)
        router = Router(store, lambda _: batcher, HeadCache(store_head_loader(store), 10**8), shadow_log=log)
        asyncio.run(load(router, tenant, texts, args.clients, 20, args.inputs))  # warm up
        for share in args.shares:
            if share > 0:
                store.set_shadow(tenant, "news", 2, share)
            else:
                store.clear_shadow(tenant, "news")
            router.forget(tenant, "news")
            best = None
            for _ in range(args.repeats):
                embedded, shadowed = backbone.embedded, metrics.SHADOW_PREDICTIONS.labels("classification")
                shadowed_before = shadowed._value.get()
                start = time.perf_counter()
                latencies = asyncio.run(load(router, tenant, texts, args.clients, args.requests, args.inputs))
                wall = time.perf_counter() - start
                n = args.requests * args.inputs
                run = {
                    "share": share,
                    "inputs/s": n / wall,
                    "p50 ms": 1000 * statistics.median(latencies),
                    "p95 ms": 1000 * float(np.quantile(latencies, 0.95)),
                    "embeddings/input": (backbone.embedded - embedded) / n,
                    "shadowed": int(shadowed._value.get() - shadowed_before),
                    "inputs": n,
                }
                if best is None or run["inputs/s"] > best["inputs/s"]:
                    best = run
            assert best is not None
            rows.append(best)
        log.close()
        batcher.close()
        store.close()
    print(
        f"\nShadow cost: {args.clients} clients, {args.requests} requests of {args.inputs} inputs, MiniLM on CPU, "
        f"best of {args.repeats}"
    )
    report("shadow", list(rows[0]), rows, clients=args.clients, requests=args.requests, per_request=args.inputs)


if __name__ == "__main__":
    main()
