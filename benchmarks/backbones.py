"""Backbone runtimes compared: throughput, compute efficiency and accuracy on this machine.

    .venv/bin/python benchmarks/backbones.py                      # full run (BBC splits in full)
    .venv/bin/python benchmarks/backbones.py --train-per-label 40 --test-per-label 60 --reps 3

For every runtime (torch fp32, torch bf16 autocast, ORT fp32, ORT int8, plus the peer,
sentence-transformers' ``encode()`` in fp32) and batch sizes 1, 8, 32 on (a) short texts
(~16 tokens), (b) 128-token texts, (c) real BBC News articles (truncated at 256 tokens, as
served): items/s, ms/batch, and achieved GFLOP/s against a matmul peak measured here. Then
the accuracy of a linear head (trained by Graft's own ``fit_head`` on each runtime's
embeddings) on BBC News, its label agreement with fp32, and the cosine to fp32 embeddings.

Runtimes are timed round-robin inside each cell (best of ``--reps``), so ratios within one
run share the machine's noise. Prints a table and writes JSON to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from adapters.training import fit_head  # noqa: E402
from service.backbones.base import cpu_quota  # noqa: E402
from service.backbones.registry import BUILTIN, Registry  # noqa: E402
from service.backbones.runtimes import RuntimeConfig  # noqa: E402
from service.backbones.text import TorchTextBackbone  # noqa: E402
from tests.conftest import load_jsonl, per_label  # noqa: E402

BATCH_SIZES = (1, 8, 32)


# -- inputs ---------------------------------------------------------------------------------


def cut_to_tokens(backbone: TorchTextBackbone, texts: Sequence[str], tokens: int) -> list[str]:
    """Texts re-decoded from their first ``tokens - 2`` word pieces: ``tokens`` with [CLS]/[SEP]."""
    tok = backbone.tokenizer
    ids = tok(list(texts), add_special_tokens=False, truncation=True, max_length=tokens - 2)["input_ids"]
    return [tok.decode(x) for x in ids]


def datasets(
    backbone: TorchTextBackbone, bbc: list[dict], n_short: int, n_128: int, n_bbc: int
) -> dict[str, list[str]]:
    articles = [r["input"] for r in bbc]
    return {
        "short (~16 tok)": cut_to_tokens(backbone, articles[:n_short], 16),
        "128 tok": cut_to_tokens(backbone, articles[:n_128], 128),
        "BBC News (as is)": articles[:n_bbc],
    }


# -- compute --------------------------------------------------------------------------------


def model_flops(config, batches: Sequence[tuple[int, int]]) -> float:
    """Multiply-adds ×2 of a BERT encoder over padded (batch, length) shapes."""
    h, ffn, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    total = 0.0
    for b, s in batches:
        per_layer = s * (8 * h * h + 4 * h * ffn) + 4 * s * s * h  # projections + FFN + attention scores/values
        total += b * layers * per_layer
    return total


def padded_shapes(
    backbone: TorchTextBackbone, texts: Sequence[str], batch: int, per_call: int
) -> list[tuple[int, int]]:
    shapes = []
    for start in range(0, len(texts), batch):
        for _idx, feeds in backbone.batches(texts[start : start + batch], min(batch, per_call)):
            shapes.append(feeds["input_ids"].shape)
    return shapes


def matmul_peak(dtype: torch.dtype, n: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


# -- runtimes -------------------------------------------------------------------------------


def runtimes(cache: Path, experimental: bool, threads: int) -> dict[str, Callable[[list[str]], np.ndarray]]:
    from sentence_transformers import SentenceTransformer

    spec = {"minilm": BUILTIN["minilm"]}
    torch32 = Registry(spec, "cpu", threads).load("minilm")
    out: dict[str, object] = {"torch": torch32}
    out["torch-bf16"] = TorchTextBackbone("minilm", torch32.source, runtime="torch-bf16")
    for variant in ("onnx", "onnx-int8"):
        out[variant] = RuntimeConfig(variant, cache, threads).wrap(torch32, variant)
    if experimental:
        out.update(experimental_runtimes(torch32, cache, threads))
    st = SentenceTransformer(torch32.source, device="cpu")
    embedders = {name: bb.embed for name, bb in out.items()}  # type: ignore[attr-defined]
    embedders["sentence-transformers"] = lambda texts: st.encode(
        texts, batch_size=len(texts), normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    )
    return embedders, out  # type: ignore[return-value]


def experimental_runtimes(torch32: TorchTextBackbone, cache: Path, threads: int) -> dict[str, object]:
    """Variants tried and not adopted, kept measurable: ORT's offline transformer fusions, and int8
    with activation scales shared across the batch (what per-call int8 gives up)."""
    from onnxruntime.transformers import optimizer

    from service.backbones.onnx_runtime import OrtBackbone

    fp32 = RuntimeConfig("onnx", cache).export_file(torch32, "onnx")
    fused_path = cache / "experimental-onnx-fused.onnx"
    if not fused_path.exists():
        fused = optimizer.optimize_model(str(fp32), opt_level=0, **torch32.export_spec().fusion)
        fused.save_model_to_file(str(fused_path))
    int8 = RuntimeConfig("onnx-int8", cache).export_file(torch32, "onnx-int8")
    batched = OrtBackbone(torch32, int8, "onnx", threads=threads)  # batched like fp32: shared activation scales
    serial = OrtBackbone(torch32, int8, "onnx-int8", threads=threads)  # one input per call, intra-op threads
    serial.session = OrtBackbone(torch32, int8, "onnx", threads=threads).session
    serial._pool = None
    return {"onnx-fused (exp.)": OrtBackbone(torch32, fused_path, "onnx", threads=threads),
            "onnx-int8-batched (exp.)": batched, "onnx-int8-serial (exp.)": serial}


# -- measurements ---------------------------------------------------------------------------


def throughput(embedders, backbones, data, reps: int, peaks) -> list[dict]:
    backbone = backbones["torch"]
    rows = []
    for dataset, texts in data.items():
        for batch in BATCH_SIZES:
            best = dict.fromkeys(embedders, float("inf"))
            for _ in range(reps):
                for name, embed in embedders.items():  # round-robin: shared noise
                    embed(texts[:batch])  # warm the shapes
                    start = time.perf_counter()
                    for i in range(0, len(texts), batch):
                        embed(texts[i : i + batch])
                    best[name] = min(best[name], time.perf_counter() - start)
            for name, seconds in best.items():
                per_call = getattr(backbones.get(name), "per_call", backbone.micro_batch)
                flops = model_flops(backbone.model.config, padded_shapes(backbone, texts, batch, per_call))
                n_batches = -(-len(texts) // batch)
                rows.append({
                    "dataset": dataset, "runtime": name, "batch": batch, "items": len(texts),
                    "items_per_s": len(texts) / seconds, "ms_per_batch": 1000 * seconds / n_batches,
                    "gflop_per_s": flops / seconds / 1e9, "pct_fp32_peak": 100 * flops / seconds / 1e9 / peaks["fp32"],
                })
            print(f"  measured {dataset} batch {batch}", file=sys.stderr, flush=True)
    return rows


def accuracy(embedders, train: list[dict], test: list[dict]) -> list[dict]:
    y_train = [r["label"] for r in train]
    y_test = np.array([r["label"] for r in test])
    vectors, heads = {}, {}
    for name, embed in embedders.items():
        x_train = np.concatenate([embed([r["input"] for r in train[i : i + 32]]) for i in range(0, len(train), 32)])
        x_test = np.concatenate([embed([r["input"] for r in test[i : i + 32]]) for i in range(0, len(test), 32)])
        heads[name] = fit_head("linear", x_train, y_train).head
        vectors[name] = x_test
        print(f"  embedded {name}", file=sys.stderr, flush=True)
    ref_head, ref_x = heads["torch"], vectors["torch"]
    ref_pred = np.array(ref_head.labels)[ref_head.predict_proba(ref_x).argmax(1)]
    rows = []
    for name, x in vectors.items():
        pred = np.array(heads[name].labels)[heads[name].predict_proba(x).argmax(1)]
        cross = np.array(ref_head.labels)[ref_head.predict_proba(x).argmax(1)]  # fp32-trained head, this runtime
        rows.append({
            "runtime": name, "accuracy": float(np.mean(pred == y_test)),
            "accuracy_fp32_head": float(np.mean(cross == y_test)),
            "agreement_with_fp32": float(np.mean(pred == ref_pred)),
            "mean_cosine_to_fp32": float(np.mean(np.sum(x * ref_x, axis=1))),
            "min_cosine_to_fp32": float(np.min(np.sum(x * ref_x, axis=1))),
        })
    return rows


def batch_dependence(backbones: dict, texts: list[str]) -> dict[str, float]:
    """Max |embedding in one batch − embedding alone| per ONNX runtime: what per-call int8 avoids."""
    out = {}
    for name, backbone in backbones.items():
        if name.startswith("onnx"):
            together = backbone.embed(texts)
            alone = np.concatenate([backbone.embed([t]) for t in texts])
            out[name] = float(np.abs(together - alone).max())
    return out


def table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    lines = [" | ".join(h for h, _, _ in columns), " | ".join("---" for _ in columns)]
    for row in rows:
        lines.append(" | ".join(format(row[k], f) for _, k, f in columns))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--short", type=int, default=256, help="short texts timed per cell")
    parser.add_argument("--medium", type=int, default=64, help="128-token texts timed per cell")
    parser.add_argument("--bbc", type=int, default=64, help="BBC articles timed per cell")
    parser.add_argument("--train-per-label", type=int, default=0, help="0: the whole BBC train split")
    parser.add_argument("--test-per-label", type=int, default=0, help="0: the whole BBC test split")
    parser.add_argument("--threads", type=int, default=0, help="0: the container's CPU quota, as Graft does")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument(
        "--skip-accuracy", action="store_true", help="throughput only (accuracy does not depend on threads)"
    )
    parser.add_argument("--experimental", action="store_true", help="also time variants that were not adopted")
    parser.add_argument("--cache", type=Path, default=ROOT / "var" / "onnx-bench", help="ONNX export cache")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "backbones.json")
    args = parser.parse_args()

    threads = args.threads or cpu_quota()
    torch.set_num_threads(threads)
    embedders, backbones = runtimes(args.cache, args.experimental, threads)
    base: TorchTextBackbone = backbones["torch"]  # type: ignore[assignment]
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    bbc_train, bbc_test = load_jsonl("bbc_news.train.jsonl"), load_jsonl("bbc_news.test.jsonl")
    data = datasets(base, bbc_test, args.short, args.medium, args.bbc)
    mean_tokens = {k: float(np.mean(base.token_lengths(v))) for k, v in data.items()}

    speed = [] if args.skip_throughput else throughput(embedders, backbones, data, args.reps, peaks)
    dependence = batch_dependence(backbones, data["BBC News (as is)"]) if args.experimental else {}
    train = per_label(bbc_train, args.train_per_label) if args.train_per_label else bbc_train
    test = per_label(bbc_test, args.test_per_label, seed=1) if args.test_per_label else bbc_test
    quality = (
        [] if args.skip_accuracy else accuracy({k: v for k, v in embedders.items() if "(exp.)" not in k}, train, test)
    )

    st = {(r["dataset"], r["batch"]): r["items_per_s"] for r in speed if r["runtime"] == "sentence-transformers"}
    for row in speed:
        row["x_sentence_transformers"] = row["items_per_s"] / st[(row["dataset"], row["batch"])]
    machine = {"cpu": platform.processor() or platform.machine(), "threads": threads,
               "load_average_at_end": os.getloadavg(), "torch": torch.__version__,
               "matmul_peak_gflop_per_s": peaks}
    print(f"# Backbone runtimes — {machine['threads']} threads, load average {os.getloadavg()[1]:.1f}; matmul peak: "
          f"fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s")
    print("mean tokens per text: " + ", ".join(f"{k}: {v:.0f}" for k, v in mean_tokens.items()) + "\n")
    print(table(speed, [("dataset", "dataset", "s"), ("runtime", "runtime", "s"), ("batch", "batch", "d"),
                        ("items/s", "items_per_s", ".1f"), ("ms/batch", "ms_per_batch", ".1f"),
                        ("GFLOP/s", "gflop_per_s", ".0f"), ("% fp32 peak", "pct_fp32_peak", ".0f"),
                        ("× ST fp32", "x_sentence_transformers", ".2f")]))
    if dependence:
        print(f"\nmax |batched − alone| over {len(data['BBC News (as is)'])} BBC articles: "
              + ", ".join(f"{k} {v:.1e}" for k, v in dependence.items()))
    if quality:
        print(f"\nLinear head on BBC News ({len(train)} train / {len(test)} test articles):\n")
    print(table(quality, [("runtime", "runtime", "s"), ("accuracy", "accuracy", ".4f"),
                          ("acc. with fp32-trained head", "accuracy_fp32_head", ".4f"),
                          ("agreement with fp32", "agreement_with_fp32", ".4f"),
                          ("mean cos", "mean_cosine_to_fp32", ".5f"), ("min cos", "min_cosine_to_fp32", ".5f")]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "machine": machine,
                "mean_tokens": mean_tokens,
                "throughput": speed,
                "accuracy": quality,
                "batch_dependence": dependence,
                "train": len(train),
                "test": len(test),
                "args": {k: str(v) for k, v in vars(args).items()},
            },
            indent=2,
        )
    )
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
