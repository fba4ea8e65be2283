"""Fine-tuning training speed: what caching the frozen part and bucketing by length buy.

On ``--n`` training texts (default 1,000 short fortunes or headline-sized BBC texts), k = 1:

  frozen pass    the layers below the split, once over every text (``_Cached``)
  uncached epoch one epoch as if nothing were cached: every batch re-runs the frozen layers
                 (inference mode) before the trained top layer's forward/backward
  cached epoch   one epoch on the cached hidden states, plain shuffled batches (padded to the
                 longest of 16 random texts: the code before bucketing)
  bucketed epoch one epoch on the cached hidden states, length-bucketed batches (the default)
  fit            ``fit_finetune`` end to end with the default recipe (frozen pass, early-stopped
                 run with held-out scoring every epoch, refit on all examples)

    .venv/bin/python -m benchmarks.finetune_speed --set fortunes --fortunes /tmp/fortunes --n 1000
    .venv/bin/python -m benchmarks.finetune_speed --set bbc_news --n 320

prints a table and writes benchmarks/results/finetune_speed.json. Wall time: on a shared machine,
compare the rows of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from adapters.heads import finetune as ft  # noqa: E402
from adapters.heads.linear import fit_logistic  # noqa: E402
from adapters.training import encode_labels  # noqa: E402
from benchmarks.textsets import cap_per_label, load  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def padding(cache: ft._Cached, batches: list[list[int]]) -> float:
    """Padded token slots per real token."""
    real = sum(int(cache.lengths[b].sum()) for b in batches)
    slots = sum(len(b) * int(cache.lengths[b].max()) for b in batches)
    return slots / real


def epoch(
    net: torch.nn.Module, optim: torch.optim.Optimizer, batches: list[list[int]], fetch, yt: torch.Tensor
) -> float:
    started = time.perf_counter()
    with torch.enable_grad():
        for rows in batches:
            loss = torch.nn.functional.cross_entropy(net(*fetch(rows)), yt[rows])
            optim.zero_grad()
            loss.backward()
            optim.step()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", default="bbc_short", help="fortunes, bbc_short or bbc_news")
    parser.add_argument("--fortunes", help="folder of the unpacked fortunes packages (benchmarks/textsets.py)")
    parser.add_argument("--n", type=int, default=1000, help="training texts (drawn evenly over the labels)")
    parser.add_argument("--layers", type=int, default=ft.DEFAULT_LAYERS)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--no-fit", action="store_true", help="skip the end-to-end fit_finetune")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from service.backbones.registry import BUILTIN
    from service.backbones.text import TorchTextBackbone

    source = TorchTextBackbone("minilm", BUILTIN["minilm"].source())
    pool, _ = load(args.set, args.fortunes)
    labels = sorted({r["label"] for r in pool})
    rows = cap_per_label(pool, -(-args.n // len(labels)), seed=0)[: args.n]
    texts, names = [r["input"] for r in rows], [r["label"] for r in rows]
    classes, y = encode_labels(names)
    cfg = ft.FinetuneConfig(layers=args.layers)
    split = len(ft.encoder_layers(source.model)) - cfg.layers

    started = time.perf_counter()
    cache = ft._Cached(source, texts, split)
    frozen_s = time.perf_counter() - started
    print(f"frozen pass: {frozen_s:.1f} s over {len(texts)} texts", flush=True)
    pooled = ft._pooled_frozen(source, cache, split)
    weight, bias = fit_logistic(pooled, y, len(classes), cfg.c)
    yt = torch.from_numpy(y)
    train = np.arange(len(y))

    def fresh() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        torch.manual_seed(0)
        net = ft._Trainable(source.model, split, cfg, weight, bias)
        return net, torch.optim.AdamW(net.parameters(), lr=cfg.lr)

    def uncached(batch_rows: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        feeds = source.tokenizer([texts[i] for i in batch_rows], truncation=True, max_length=source.max_length,
                                 padding=True, return_tensors="pt")
        with torch.inference_mode():
            hidden, _ = ft.lower(source.model, feeds["input_ids"], feeds["attention_mask"], split)
        return hidden.float().clone(), feeds["attention_mask"].clone()  # leave inference mode for autograd

    gen = torch.Generator().manual_seed(0)
    plain = cache.epoch_batches(train, cfg.batch_size, gen, bucket=False)
    bucketed = cache.epoch_batches(train, cfg.batch_size, torch.Generator().manual_seed(0), bucket=True)
    results = {}
    for name, batches, fetch in (
        ("uncached", plain, uncached),
        ("cached", plain, cache.batch),
        ("bucketed", bucketed, cache.batch),
    ):
        net, optim = fresh()
        results[name] = epoch(net, optim, batches, fetch, yt)
        print(f"{name:>9} epoch: {results[name]:.1f} s", flush=True)
    fit_s, fit_epochs = None, None
    if not args.no_fit:
        started = time.perf_counter()
        _, metrics = ft.fit_finetune(source, texts, names, cfg, seed=0)
        fit_s = time.perf_counter() - started
        fit_epochs = metrics["finetune"]["best_epoch"]
        print(
            f"fit_finetune: {fit_s:.1f} s (best epoch {fit_epochs}, held-out accuracy {metrics['accuracy']:.3f})",
            flush=True,
        )
    report = {
        "set": args.set, "n": len(texts), "labels": len(classes), "layers": cfg.layers,
        "median_tokens": float(np.median(cache.lengths)), "frozen_pass_s": frozen_s,
        "epoch_s": results, "padding_plain": padding(cache, plain), "padding_bucketed": padding(cache, bucketed),
        "fit_s": fit_s, "fit_best_epoch": fit_epochs, "when": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared)", "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg()[0],
    }
    print("\n| set | n | median tokens | frozen pass s | epoch uncached s | epoch cached s | epoch bucketed s | "
          "padded/real tokens (plain → bucketed) | fit_finetune s |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {args.set} | {len(texts)} | {report['median_tokens']:.0f} | {frozen_s:.1f} | {results['uncached']:.1f} | "
        f"{results['cached']:.1f} | {results['bucketed']:.1f} | {report['padding_plain']:.2f} → "
        f"{report['padding_bucketed']:.2f} | "
        f"{'-' if fit_s is None else f'{fit_s:.0f}'} |"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"finetune_speed.{args.set}.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
