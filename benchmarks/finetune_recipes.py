"""Fine-tuning recipes against the frozen linear head and the from-scratch TF-IDF baseline.

Per text set, n examples per label (seeded draws from the train pool), every variant of
``fit_finetune`` and, on the same draw, Graft's ``linear`` head (frozen embeddings, C by CV) and
``baseline`` head (TF-IDF + logistic regression, C by CV); accuracy on a seeded test subset
(``--test-per-label``). Results are appended to benchmarks/results/finetune_recipes.json after
every fit, so a cut-off run keeps what it measured.

    .venv/bin/python -m benchmarks.finetune_recipes --sets fortunes,bbc_short --fortunes /tmp/fortunes \\
        --sizes 16,64 --draws 2 --variants default,k2_decay
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from adapters.heads.finetune import FinetuneConfig, fit_finetune, predict_shared  # noqa: E402
from adapters.training import fit_head  # noqa: E402
from benchmarks.textsets import cap_per_label, load  # noqa: E402
from tests.conftest import per_label  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
# The first default (k = 1, LoRA lr 1e-3, classifier lr 1e-2): the other variants are named by how they differ from it.
ORIGINAL = FinetuneConfig(layers=1, lr=1e-3, head_lr=1e-2, c_by_cv=False)
VARIANTS = {
    "default": FinetuneConfig(),  # today's default: three layers, gentle steps, the warm start's C by CV (= cv_c)
    "c10": replace(FinetuneConfig(), c_by_cv=False),  # the default before the warm start's C by CV (= gentle_k3)
    "original": ORIGINAL,
    "decay": replace(ORIGINAL, warmup=0.1, decay=True),
    "k2_decay": replace(ORIGINAL, layers=2, warmup=0.1, decay=True),
    "k2": replace(ORIGINAL, layers=2),
    "r4": replace(ORIGINAL, rank=4),
    "no_refit": replace(ORIGINAL, refit=False),
    "k3": replace(ORIGINAL, layers=3),
    "lr3": replace(ORIGINAL, lr=3e-3),
    "k3_lr3": replace(ORIGINAL, layers=3, lr=3e-3),
    "k6_lr3": replace(ORIGINAL, layers=6, lr=3e-3),
    "r32_lr3": replace(ORIGINAL, rank=32, alpha=64.0, lr=3e-3),
    # gentler steps: Adam moves every classifier weight by ~head_lr per step, away from the warm start's optimum
    "gentle": replace(ORIGINAL, lr=3e-4, head_lr=1e-3),
    "gentle_k3": replace(ORIGINAL, layers=3, lr=3e-4, head_lr=1e-3),
    "gentle_k6": replace(ORIGINAL, layers=6, lr=3e-4, head_lr=1e-3),
    "gentle_k3_e12": replace(ORIGINAL, layers=3, lr=3e-4, head_lr=1e-3, max_epochs=12, patience=3),
    "lora_only": replace(ORIGINAL, head_lr=1e-4),
    "gentle_loss": replace(ORIGINAL, lr=3e-4, head_lr=1e-3, select="loss"),
    "gentle_k3_loss": replace(ORIGINAL, layers=3, lr=3e-4, head_lr=1e-3, select="loss"),
    "lora_only_loss": replace(ORIGINAL, head_lr=1e-4, select="loss"),
    # on top of today's default: the warm start's C by CV, layer-wise decay, full fine-tuning, a contrastive stage
    # (measured against "c10", the default of the time: every variant below but cv_c warm-starts at C = 10)
    "cv_c": replace(FinetuneConfig(), c_by_cv=True),
    "lwd": replace(FinetuneConfig(), c_by_cv=False, layer_decay=0.7),
    "lwd_hi": replace(FinetuneConfig(), c_by_cv=False, lr=1e-3, layer_decay=0.5),
    "full_k3": replace(FinetuneConfig(), c_by_cv=False, full=True, lr=2e-5),
    "contrastive": replace(FinetuneConfig(), c_by_cv=False, contrastive_epochs=1),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", default="fortunes,bbc_short")
    parser.add_argument("--fortunes", help="folder of the unpacked fortunes packages (benchmarks/textsets.py)")
    parser.add_argument("--sizes", default="16,64")
    parser.add_argument("--draws", type=int, default=2)
    parser.add_argument("--variants", default="default,k2_decay")
    parser.add_argument("--test-per-label", type=int, default=50)
    parser.add_argument("--full-labels", action="store_true",
                        help="for large n: add the test rows outside the scored subset to the pool and keep only "
                             "the labels that then hold the largest --sizes examples (every label drawn in full)")
    parser.add_argument("--out", default="finetune_recipes.json", help="file name under benchmarks/results/")
    args = parser.parse_args()
    from service.backbones.registry import BUILTIN
    from service.backbones.text import TorchTextBackbone

    source = TorchTextBackbone("minilm", BUILTIN["minilm"].source())
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / args.out
    rows: list[dict] = []
    for name in args.sets.split(","):
        pool, test_all = load(name, args.fortunes)
        test = cap_per_label(test_all, args.test_per_label, seed=0)
        if args.full_labels:
            scored = {id(r) for r in test}
            pool = pool + [r for r in test_all if id(r) not in scored]
            need = max(int(s) for s in args.sizes.split(","))
            counts = Counter(r["label"] for r in pool)
            kept = {label for label, c in counts.items() if c >= need}
            print(f"{name}: labels with >= {need} pool examples: {sorted(kept)} (dropped {sorted(set(counts) - kept)})")
            pool, test = [r for r in pool if r["label"] in kept], [r for r in test if r["label"] in kept]
        test_x, test_y = [r["input"] for r in test], np.array([r["label"] for r in test])
        test_emb = source.embed(test_x)
        for n in (int(s) for s in args.sizes.split(",")):
            for draw in range(args.draws):
                train = per_label(pool, n, seed=draw)
                x, y = [r["input"] for r in train], [r["label"] for r in train]
                started = time.perf_counter()
                emb = source.embed(x)
                embed_s = time.perf_counter() - started
                base = {"set": name, "n": n, "draw": draw, "test": len(test), "labels": len(set(y))}
                for kind in ("linear", "baseline"):
                    started = time.perf_counter()
                    fit = fit_head(kind, emb, y, raw=x, candidates=[kind], seed=draw)
                    seconds = time.perf_counter() - started + (embed_s if kind == "linear" else 0.0)
                    pred = np.asarray(fit.head.labels)[fit.head.predict_proba(test_emb, raw=test_x).argmax(axis=1)]
                    rows.append(
                        {**base, "method": kind, "accuracy": float(np.mean(pred == test_y)), "seconds": seconds}
                    )
                    print(rows[-1], flush=True)
                for variant in args.variants.split(","):
                    started = time.perf_counter()
                    head, metrics = fit_finetune(source, x, y, VARIANTS[variant], seed=draw)
                    seconds = time.perf_counter() - started
                    pred = np.asarray(head.labels)[predict_shared(source, test_x, [head] * len(test_x)).argmax(axis=1)]
                    rows.append({**base, "method": f"finetune:{variant}", "accuracy": float(np.mean(pred == test_y)),
                                 "seconds": seconds, "best_epoch": metrics["finetune"]["best_epoch"],
                                 "held_out": metrics["heads"], "warnings": len(metrics["warnings"])})
                    print({k: v for k, v in rows[-1].items() if k != "held_out"}, flush=True)
                    out.write_text(json.dumps({"rows": rows, "load_average": os.getloadavg()[0]}, indent=1))
    print("\n| set | n | method | accuracy % (mean ± sd over draws) | per draw | seconds (mean) |")
    print("|---|---|---|---|---|---|")
    keys = sorted({(r["set"], r["n"], r["method"]) for r in rows}, key=lambda k: (k[0], k[1], k[2]))
    for s, n, m in keys:
        acc = [100 * r["accuracy"] for r in rows if (r["set"], r["n"], r["method"]) == (s, n, m)]
        sec = [r["seconds"] for r in rows if (r["set"], r["n"], r["method"]) == (s, n, m)]
        sd = statistics.stdev(acc) if len(acc) > 1 else 0.0
        print(f"| {s} | {n} | {m} | {statistics.mean(acc):.1f} ± {sd:.1f} | {' / '.join(f'{a:.1f}' for a in acc)} | "
              f"{statistics.mean(sec):.0f} |")


if __name__ == "__main__":
    main()
