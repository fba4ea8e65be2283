"""Head ``auto`` with its fine-tuning step (docs/finetune.md, "auto and fine-tuning"), end to end.

For each set and seeded draw: a text classification task with head ``auto`` on ``n`` examples per label goes
through the service's real training pipeline (``JobRunner``, in process, MiniLM) with
``GRAFT_AUTO_FINETUNE_MIN_PER_LABEL`` at or below ``n``; the script prints the version's
``metrics.auto_finetune`` (held-out accuracies of fine-tuning and the frozen heads' choice, wins, losses,
which was served), the job's seconds, and the served version's accuracy on a seeded test subset.

    .venv/bin/python -m benchmarks.auto_finetune --sets bbc_short --n 64 --draws 1 --test-per-label 40
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from benchmarks.textsets import cap_per_label, load
from service.backbones.registry import BUILTIN, Registry
from service.batching import Batcher
from service.config import Settings
from service.engine.head_store import store_head_loader
from service.engine.heads_step import apply_trunk, text_trunk
from service.jobs import JobRunner
from service.store.repository import Store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", default="bbc_short", help="comma-separated: bbc_short, bbc_news, fortunes")
    parser.add_argument("--fortunes", default=None, help="folder of the unpacked fortunes files")
    parser.add_argument("--n", type=int, default=64, help="examples per label")
    parser.add_argument("--draws", type=int, default=1)
    parser.add_argument("--test-per-label", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    minilm = Registry({"minilm": BUILTIN["minilm"]}, "cpu").load("minilm")
    batcher = Batcher(minilm)
    print("| set | n/label | draw | frozen choice | held-out finetune / frozen | wins / losses | served | "
          "test accuracy (served) | job s (of which fine-tuning) |")
    print("|---|---|---|---|---|---|---|---|---|")
    try:
        for name in args.sets.split(","):
            train_pool, test_pool = load(name, args.fortunes)
            test = cap_per_label(test_pool, args.test_per_label, seed=1000)
            for d in range(args.draws):
                rows = cap_per_label(train_pool, args.n, seed=d)
                with tempfile.TemporaryDirectory() as tmp:
                    store = Store(f"sqlite:///{tmp}/g.db")
                    store.create_schema()
                    settings = Settings.from_env({}, data_dir=tmp, auto_finetune_min_per_label=min(64, args.n))
                    runner = JobRunner(store, lambda _: batcher, settings, lambda _: ["minilm"])
                    tenant, _ = store.create_tenant("bench")
                    task, _ = store.create_task(
                        tenant.id, "t", modality="text", backbone="minilm", head="auto",
                        examples=[(r["input"], r["label"]) for r in rows],
                    )
                    started = time.perf_counter()
                    runner.run(store.claim_job(runner.worker_id, lease_s=600, max_attempts=3))
                    seconds = time.perf_counter() - started
                    version = store.version(task.id, 1, with_weights=True)
                    head = store_head_loader(store, lambda _: text_trunk(minilm))((task.id, 1))
                    texts = [r["input"] for r in test]
                    if version.head == "finetune":
                        proba = apply_trunk(minilm, texts, [head] * len(texts))
                    else:
                        proba = head.predict_proba(batcher.embed_sync(texts), raw=texts)
                    accuracy = float(np.mean([head.labels[i] == r["label"] for i, r in
                                              zip(proba.argmax(axis=1), test, strict=True)]))
                    a = version.metrics["auto_finetune"]
                    held = (f"{100 * a['finetune']:.1f} / {100 * a['frozen']:.1f} (of {a['held_out']}, "
                            f"epoch {a['best_epoch']})") if a["tried"] else a["why"]
                    wl = f"{a['wins']} / {a['losses']}" if a["tried"] else "–"
                    print(f"| {name} | {args.n} | {d} | {a.get('frozen_head', version.metrics.get('head'))} | {held} | "
                          f"{wl} | {version.head} | {100 * accuracy:.1f} | {seconds:.0f} ({a.get('seconds', 0):.0f}) |",
                          flush=True)
                    store.close()
    finally:
        batcher.close()


if __name__ == "__main__":
    main()
