"""In-process predict throughput across many tasks (issue 5, benchmark 1), plus the batching
choices behind it: the batched head step, length-aware micro-batches, batch size and delay.

    .venv/bin/python -m benchmarks.inprocess            # full: 1, 10, 100, 1000 tasks
    .venv/bin/python -m benchmarks.inprocess --quick    # smaller, for a smoke run

Traffic is one short real text per request (benchmarks/short_texts.py), ``--concurrency``
requests in flight through the real Router → Batcher → MiniLM → head path, over a real SQLite
store. Every task has its own head, trained on real embeddings. Heads are cached before timing
(steady state; benchmarks/scale.py measures misses). Configurations are interleaved in chunks
so background load on a shared machine hits them alike; ratios are of totals over one run.
CPU time per text (this process) is reported too: on a busy machine it is the steadier figure.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from service.backbones.registry import BUILTIN, Registry
from service.batching import Batcher, apply_heads
from service.caching import HeadCache
from service.router import Router, store_head_loader
from service.store.repository import Store

from .multitenant import install, report, train_heads, zipf_indices
from .short_texts import short_texts


async def drive(router: Router, tenant: str, names: list[str], texts: list[str], concurrency: int) -> float:
    """Send ``texts[i]`` to task ``names[i]`` with ``concurrency`` requests in flight; texts/s."""
    cursor = iter(range(len(texts)))

    async def client() -> None:
        for i in cursor:
            await router.predict(tenant, names[i], [texts[i]])

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return len(texts) / (time.perf_counter() - started)


def traffic(n_tasks: int, pattern: str, size: int, rng: np.random.Generator) -> list[str]:
    if pattern == "round-robin":
        return [f"task-{i % n_tasks}" for i in range(size)]
    return [f"task-{i}" for i in zipf_indices(n_tasks, size, 1.1, rng)]


def tasks_table(backbone, args) -> list[dict]:
    n_max = max(args.tasks)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{Path(tmp) / 'graft.db'}")
        store.create_schema()
        tenant, _ = store.create_tenant("bench")
        t0 = time.perf_counter()
        for i, head in enumerate(train_heads(backbone, n_max, seed=0)):
            install(store, tenant.id, f"task-{i}", head, backbone)
        print(f"seeded {n_max} tasks with trained heads in {time.perf_counter() - t0:.0f}s")
        batcher = Batcher(backbone, args.max_batch, args.max_delay_ms / 1000)
        router = Router(store, lambda _: batcher, HeadCache(store_head_loader(store), 256 * 2**20), task_ttl_s=3600)
        configs = [(1, "single")] + [(n, p) for n in args.tasks if n > 1 for p in ("round-robin", "zipf")]
        rng = np.random.default_rng(0)
        texts = short_texts(args.requests)
        plans = {c: traffic(c[0], c[1], len(texts), rng) for c in configs}
        asyncio.run(drive(router, tenant.id, [f"task-{i}" for i in range(n_max)], short_texts(n_max), args.concurrency))
        misses_before = router.heads.misses
        wall = dict.fromkeys(configs, 0.0)
        cpu = dict.fromkeys(configs, 0.0)
        # Interleave configurations in chunks, so the machine's background load hits all alike.
        for rep, start in enumerate(range(0, len(texts), args.chunk)):
            stop = min(len(texts), start + args.chunk)
            for config in configs if rep % 2 == 0 else configs[::-1]:
                w0, c0 = time.perf_counter(), time.process_time()
                asyncio.run(drive(router, tenant.id, plans[config][start:stop], texts[start:stop], args.concurrency))
                wall[config] += time.perf_counter() - w0
                cpu[config] += time.process_time() - c0
            print(
                f"  chunk {rep}: " + ", ".join(f"{n}/{p}: {(stop) / wall[(n, p)]:.1f}/s" for n, p in configs),
                flush=True,
            )
        assert router.heads.misses == misses_before, "heads were evicted during the timed runs"
        batcher.close()
        store.close()
    single = (1, "single")
    return [
        {
            "tasks": n,
            "traffic": p,
            "texts_per_s": len(texts) / wall[(n, p)],
            "vs_single_task": wall[single] / wall[(n, p)],
            "cpu_ms_per_text": cpu[(n, p)] / len(texts) * 1000,
            "cpu_vs_single_task": cpu[single] / cpu[(n, p)],
        }
        for n, p in configs
    ]


def head_step_table(backbone, reps: int = 200) -> list[dict]:
    """Cost of the head step for one 64-row pass: stacked (what the batcher does) vs one call per row."""
    heads = train_heads(backbone, 64, seed=1)
    x = backbone.embed(short_texts(64))
    rows = []
    for distinct in (1, 8, 64):
        parts = [(heads[i % distinct], i, i + 1) for i in range(64)]
        timings = {}
        for name, fn in (
            ("stacked", lambda p=parts: apply_heads(x, p)),
            ("per_row_calls", lambda p=parts: [h.predict_proba(x[a:b]) for h, a, b in p]),
        ):
            fn()
            started = time.perf_counter()
            for _ in range(reps):
                fn()
            timings[name] = (time.perf_counter() - started) / reps * 1e6
        rows.append(
            {
                "distinct_heads": distinct,
                "stacked_us": timings["stacked"],
                "per_row_us": timings["per_row_calls"],
                "speedup": timings["per_row_calls"] / timings["stacked"],
            }
        )
    return rows


def fixed_micro_batches(backbone, texts: list[str], order: np.ndarray) -> np.ndarray:
    """Embed ``texts`` in micro-batches of ``backbone.micro_batch`` taken in ``order``."""
    out = np.empty((len(texts), backbone.dim), dtype=np.float32)
    for i in range(0, len(order), backbone.micro_batch):
        idx = order[i : i + backbone.micro_batch]
        out[idx] = backbone._embed_batch(backbone.feeds(backbone._tokenize([texts[j] for j in idx]))).numpy()
    return out


def padding_table(backbone, n_texts: int, pass_size: int, reps: int) -> list[dict]:
    """Length-aware batching: the same passes of ``pass_size`` texts, embedded in micro-batches of
    32 in arrival order, sorted by characters (Graft before this change), sorted by tokens, and
    sorted by tokens in micro-batches whose lengths stay within 2x (TorchTextBackbone.embed now)."""
    texts = short_texts(n_texts)
    rng = np.random.default_rng(0)
    texts = [texts[i] for i in rng.permutation(len(texts))]
    variants = {
        "arrival order, 32 per micro-batch": lambda b: fixed_micro_batches(backbone, b, np.arange(len(b))),
        "sorted by characters, 32 per micro-batch": lambda b: fixed_micro_batches(
            backbone, b, np.argsort([len(t) for t in b], kind="stable")),
        "sorted by tokens, 32 per micro-batch": lambda b: fixed_micro_batches(
            backbone, b, np.argsort(backbone.token_lengths(b), kind="stable")),
        "sorted by tokens, lengths within 2x (Graft)": backbone.embed,
    }
    speed: dict[str, list[float]] = {k: [] for k in variants}
    padding: dict[str, float] = {}
    for rep in range(reps):
        for name, fn in (variants.items() if rep % 2 == 0 else reversed(variants.items())):
            real0, padded0 = backbone.real_tokens, backbone.padded_tokens
            started = time.perf_counter()
            for i in range(0, len(texts), pass_size):
                fn(texts[i : i + pass_size])
            speed[name].append(len(texts) / (time.perf_counter() - started))
            padding[name] = 1 - (backbone.real_tokens - real0) / (backbone.padded_tokens - padded0)
            print(f"  rep {rep} {name}: {speed[name][-1]:.1f} texts/s", flush=True)
    base = statistics.median(speed["arrival order, 32 per micro-batch"])
    return [{"variant": k, "texts_per_s": statistics.median(v), "vs_arrival_order": statistics.median(v) / base,
             "padding_share": padding[k]} for k, v in speed.items()]


def settings_table(backbone, args) -> list[dict]:
    """Closed-loop throughput and latency on one task for a few (max batch, max delay) settings."""
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{Path(tmp) / 'graft.db'}")
        store.create_schema()
        tenant, _ = store.create_tenant("bench")
        install(store, tenant.id, "task-0", train_heads(backbone, 1)[0], backbone)
        texts = short_texts(args.requests // 2)
        rows = []
        for max_batch, delay_ms in ((16, 2.0), (32, 2.0), (64, 0.0), (64, 2.0), (64, 5.0), (128, 2.0)):
            batcher = Batcher(backbone, max_batch, delay_ms / 1000)
            router = Router(store, lambda _, b=batcher: b, HeadCache(store_head_loader(store), 2**24), task_ttl_s=3600)
            rate = asyncio.run(drive(router, tenant.id, ["task-0"] * len(texts), texts, args.concurrency))
            batcher.close()
            rows.append({"max_batch": max_batch, "max_delay_ms": delay_ms, "texts_per_s": rate})
            print(f"  batch {max_batch} delay {delay_ms}: {rate:.1f} texts/s", flush=True)
        store.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="1,10,100,1000")
    parser.add_argument("--requests", type=int, default=512, help="texts per timed run")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=64, help="texts per interleaved slice of a configuration")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--max-delay-ms", type=float, default=10.0)
    parser.add_argument("--skip", default="", help="comma-separated tables to skip: tasks,heads,padding,settings")
    parser.add_argument("--quick", action="store_true", help="10/100 tasks, 128 texts, 1 rep")
    args = parser.parse_args()
    if args.quick:
        args.tasks, args.requests, args.reps = "1,10,100", 128, 1
    args.tasks = [int(n) for n in args.tasks.split(",")]
    skip = set(filter(None, args.skip.split(",")))
    backbone = Registry({"minilm": BUILTIN["minilm"]}, "cpu").load("minilm")
    meta = {"args": vars(args), "torch_threads": __import__("torch").get_num_threads()}
    if "tasks" not in skip:
        print("== predict throughput by number of tasks")
        report(
            "inprocess_tasks",
            ["tasks", "traffic", "texts_per_s", "vs_single_task", "cpu_ms_per_text", "cpu_vs_single_task"],
            tasks_table(backbone, args),
            **meta,
        )
    if "heads" not in skip:
        print("== head step for one 64-row pass")
        report(
            "inprocess_head_step",
            ["distinct_heads", "stacked_us", "per_row_us", "speedup"],
            head_step_table(backbone),
            **meta,
        )
    if "padding" not in skip:
        print("== length-aware micro-batches (passes of 64 texts)")
        report("inprocess_padding", ["variant", "texts_per_s", "vs_arrival_order", "padding_share"],
               padding_table(backbone, args.requests, 64, args.reps), **meta)
    if "settings" not in skip:
        print("== batcher settings (one task, closed loop)")
        report(
            "inprocess_settings", ["max_batch", "max_delay_ms", "texts_per_s"], settings_table(backbone, args), **meta
        )


if __name__ == "__main__":
    main()
