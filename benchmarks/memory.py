"""Memory per cached head (issue 5, benchmark 2): RSS growth while the real HeadCache fills with
10,000 linear heads (384-d, 10 labels), against one fine-tuned backbone copy per tenant.

    .venv/bin/python -m benchmarks.memory [--heads 10000] [--labels 10]

Each head goes through the production path: serialised to its safetensors blob (as a training
job stores it), decoded by ``adapters.heads.from_bytes`` in the cache's loader, then kept by the
cache. Blobs are made on demand and dropped, so only cached heads stay in memory. The head cache's
own byte estimate (what its budget counts) is printed next to the measured RSS.
"""

from __future__ import annotations

import argparse
import gc

import numpy as np
import psutil

from adapters import heads
from adapters.heads import LinearHead
from service.caching import HeadCache, head_nbytes

from .multitenant import report

TARGET_BYTES = 64 * 1024


def make_blob(i: int, labels: int, dim: int) -> bytes:
    rng = np.random.default_rng(abs(i))
    head = LinearHead([f"label-{j}" for j in range(labels)])
    head.weight = rng.normal(size=(labels, dim)).astype(np.float32)
    head.bias = rng.normal(size=labels).astype(np.float32)
    return heads.to_bytes(head, backbone="minilm", backbone_revision="sha256:bench", runtime="torch", dim=dim)


def backbone_bytes() -> tuple[int, int]:
    """Parameters and their bytes of the packaged MiniLM (what one fine-tuned copy per tenant holds)."""
    from service.backbones.registry import BUILTIN, Registry

    model = Registry({"minilm": BUILTIN["minilm"]}, "cpu").load("minilm").model
    params = sum(p.numel() for p in model.parameters())
    return params, sum(p.numel() * p.element_size() for p in model.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--heads", type=int, default=10_000)
    parser.add_argument("--labels", type=int, default=10)
    parser.add_argument("--dim", type=int, default=384)
    args = parser.parse_args()

    params, model_bytes = backbone_bytes()  # loaded first, so its memory is in the baseline
    process = psutil.Process()
    cache = HeadCache(lambda i: heads.from_bytes(make_blob(i, args.labels, args.dim)), budget_bytes=2**40)
    for i in range(100):  # warm allocator pools and code paths before the baseline
        cache.get(-1 - i)
    gc.collect()
    base = process.memory_info().rss
    rows = []
    checkpoints = sorted({args.heads // 10, args.heads // 2, args.heads})
    for i in range(args.heads):
        cache.get(i)
        if i + 1 in checkpoints:
            gc.collect()
            grown = process.memory_info().rss - base
            rows.append({"heads": i + 1, "rss_growth_mb": grown / 2**20, "bytes_per_head": grown / (i + 1)})
    per_head = rows[-1]["bytes_per_head"]
    estimate = head_nbytes(cache.peek(0))
    tensors = args.labels * args.dim * 4 + args.labels * 4
    print(f"head: {args.labels} labels x {args.dim}-d; tensors {tensors} B; cache estimate {estimate} B; "
          f"measured {per_head:.0f} B per head (target <= {TARGET_BYTES})")
    tenants = args.heads
    comparison = {
        "heads_total_mb": per_head * tenants / 2**20,
        "fine_tuned_copy_mb": model_bytes / 2**20,
        "fine_tuned_copies_total_gb": model_bytes * tenants / 2**30,
        "ratio": model_bytes / per_head,
    }
    print(f"{tenants} tenants: heads {comparison['heads_total_mb']:.0f} MB in one process vs one fine-tuned MiniLM "
          f"({params / 1e6:.1f} M parameters, {comparison['fine_tuned_copy_mb']:.0f} MB) per tenant = "
          f"{comparison['fine_tuned_copies_total_gb']:.0f} GB; a head is {comparison['ratio']:.0f}x smaller")
    report("memory", ["heads", "rss_growth_mb", "bytes_per_head"], rows, args=vars(args), tensor_bytes=tensors,
           cache_estimate_bytes=estimate, target_bytes=TARGET_BYTES, backbone_params=params, comparison=comparison)


if __name__ == "__main__":
    main()
