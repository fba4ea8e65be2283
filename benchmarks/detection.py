"""Detection: quality at a few training-set sizes, the transfer head (on MobileNetV2's feature maps) vs the
from-scratch baseline, and predict throughput of the map lane's work, in process (no HTTP).

Data: benchmarks/detection_data.py (scenes composited from the real handwritten digits of the shared data: the
train split's digits for training scenes, the test split's for the held-out scenes, so test digits are never
seen). For each size the detection kind's own fit runs (CV over image folds, both heads, the better one refit);
both heads are then scored on the held-out scenes (the one CV did not serve is refit on all training scenes).
Throughput: decoding + letterbox, the CNN's feature maps, the head with NMS, per batch size.

    PYTHONPATH=. .venv/bin/python -m benchmarks.detection [--quick] [--out detection.json]

``--finetune``: instead, head ``finetune`` (the CNN's top two blocks trained with the head) against the frozen
``detector`` on the same training scenes, both scored on the same held-out scenes, with each one's training seconds.
"""

from __future__ import annotations

import argparse
import base64
import json
import time
from typing import Any

import numpy as np
import torch

from adapters.boxes import evaluate
from adapters.heads.detection import DetectorHead, ScratchDetectorHead
from adapters.kinds import KINDS, DetectionTuning, Placed
from adapters.kinds.detection import EVAL_MIN_SCORE, MAX_OBJECTS, SCRATCH_CHANNELS, SIZE
from benchmarks.detection_data import Scene, scenes
from service import images
from service.backbones.image import TorchImageBackbone

KIND: Any = KINDS["detection"]


def prepare(backbone: TorchImageBackbone, data: list[Scene]) -> tuple[list[Placed], list[str], np.ndarray]:
    """Scenes as the service sees them: stored (normalised) images letterboxed, labels encoded, feature maps."""
    placed, stored = [], []
    for scene in data:
        raw = base64.b64decode(scene.jpeg_base64())
        image = images.decode(raw, images.STORED_LIMITS)
        canvas, placement = images.letterbox(image, backbone.preprocessing, SIZE)
        placed.append(Placed(canvas, placement, placement.width, placement.height))
        stored.append(KIND.encode_example(raw, scene.objects))
    return placed, stored, backbone.feature_maps([p.pixels for p in placed])


def held_out(head: Any, inputs: np.ndarray, truth: list, names: list[str]) -> dict[str, float]:
    found = [KIND.suppressed(f, MAX_OBJECTS) for f in head.detect(inputs, EVAL_MIN_SCORE)]
    scores = evaluate(truth, found, names)
    return {"map_50": round(scores["map_50"], 4), "map": round(scores["map"], 4)}


def quality(backbone: TorchImageBackbone, sizes: list[int], n_test: int, steps: int) -> list[dict]:
    test = scenes(n_test, seed=10_000, split="test")
    t_placed, t_stored, t_maps = prepare(backbone, test)
    t_pixels = np.stack([p.pixels for p in t_placed])
    rows = []
    for n in sizes:
        placed, stored, maps = prepare(backbone, scenes(n, seed=n))
        started = time.perf_counter()
        result = KIND.fit_maps(maps, placed, stored, head="auto", folds=3, seed=0, steps=steps)
        fit_s = time.perf_counter() - started
        m = result.metrics
        names = result.head.labels
        truth = KIND.truth(t_placed, t_stored, names)
        pixels = np.stack([p.pixels for p in placed])
        fitted = {m["head"]: result.head}
        other = "scratch-detector" if m["head"] == "detector" else "detector"
        cls, data, channels = (
            (ScratchDetectorHead, pixels, SCRATCH_CHANNELS)
            if other == "scratch-detector"
            else (DetectorHead, maps, maps.shape[1])
        )
        fitted[other] = cls(names, size=SIZE, channels=channels).fit(
            data, KIND.truth(placed, stored, names), steps=steps, seed=0
        )
        row = {
            "train_images": n,
            "boxes": sum(m["examples_per_label"].values()),
            "served": m["head"],
            "cv": {h: {"map_50": round(v["map_50"], 4), "map": round(v["map"], 4)} for h, v in m["heads"].items()},
            "test": {
                "detector": held_out(fitted["detector"], t_maps, truth, names),
                "scratch-detector": held_out(fitted["scratch-detector"], t_pixels, truth, names),
            },
            "train_seconds": round(fit_s, 1),
            "warnings": m["warnings"],
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def throughput(backbone: TorchImageBackbone, head: Any, batches: list[int]) -> list[dict]:
    """Images per second through what one predict pass does per image: decode + letterbox (the request's thread),
    feature maps (the map lane's pass), detect + NMS + mapping back (the head step)."""
    data = scenes(max(batches), seed=20_000, split="test")
    raws = [base64.b64decode(s.jpeg_base64()) for s in data]
    warm = [images.placed(images.decode(r, images.STORED_LIMITS), backbone.preprocessing, SIZE) for r in raws[:2]]
    KIND.predict_maps(head, warm, backbone.feature_maps([p.pixels for p in warm]), {})  # warm-up, not timed
    rows = []
    for batch in batches:
        timings: dict[str, float] = {"decode_letterbox": 0.0, "feature_maps": 0.0, "head_nms": 0.0}
        reps = 3
        for _ in range(reps):
            started = time.perf_counter()
            placed = [
                images.placed(images.decode(r, images.STORED_LIMITS), backbone.preprocessing, SIZE)
                for r in raws[:batch]
            ]
            timings["decode_letterbox"] += time.perf_counter() - started
            started = time.perf_counter()
            maps = backbone.feature_maps([p.pixels for p in placed])
            timings["feature_maps"] += time.perf_counter() - started
            started = time.perf_counter()
            KIND.predict_maps(head, placed, maps, {})
            timings["head_nms"] += time.perf_counter() - started
        total = sum(timings.values())
        row = {
            "batch": batch,
            "images_per_s": round(batch * reps / total, 1),
            **{f"{k}_ms_per_image": round(1000 * v / (batch * reps), 2) for k, v in timings.items()},
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def finetune(backbone: TorchImageBackbone, n: int, n_test: int, steps: int, epochs: int) -> dict:
    """Frozen ``detector`` vs head ``finetune`` on the same ``n`` training scenes, scored on the same held-out
    scenes (test-split digits). Seconds: the frozen head's whole fit (pinned ``detector``: both heads cross-validated
    on 3 folds, then the refit); the fine-tune's whole fit (its frozen
    detector, the baseline and the comparison on its held-out fifth, the epochs, the refit on all scenes); the
    frozen states are computed once before either (their time is reported apart)."""
    test = scenes(n_test, seed=10_000, split="test")
    t_placed, t_stored, _ = prepare(backbone, test)
    placed, stored, _ = prepare(backbone, scenes(n, seed=n))
    started = time.perf_counter()
    lower = backbone.feature_states([p.pixels for p in placed], 2)
    lower_s = time.perf_counter() - started
    t_lower = backbone.feature_states([p.pixels for p in t_placed], 2)
    maps, t_maps = backbone.maps_from_states(lower, 2), backbone.maps_from_states(t_lower, 2)
    started = time.perf_counter()
    frozen = KIND.fit_maps(maps, placed, stored, head="detector", folds=3, seed=0, steps=steps)
    frozen_s = time.perf_counter() - started
    tuning = DetectionTuning(blocks=backbone.top_blocks(2), fine_channels=backbone.fine_channels, max_epochs=epochs)
    started = time.perf_counter()
    tuned = KIND.fit_maps(None, placed, stored, head="finetune", folds=3, seed=0, steps=steps, lower=lower,
                          tuning=tuning)
    tuned_s = time.perf_counter() - started
    names = tuned.head.labels
    truth = KIND.truth(t_placed, t_stored, names)
    row = {
        "train_images": n,
        "test_images": n_test,
        "steps": steps,
        "max_epochs": epochs,
        "lower_states_seconds": round(lower_s, 1),
        "detector": {**held_out(frozen.head, t_maps, truth, names), "train_seconds": round(frozen_s, 1)},
        "finetune": {**held_out(tuned.head, t_lower, truth, names), "train_seconds": round(tuned_s, 1)},
        "finetune_metrics": {k: tuned.metrics[k] for k in ("heads", "finetune", "warnings")},
    }
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="sizes 30 and 60, 120 steps, 30 test scenes")
    parser.add_argument("--steps", type=int, default=None, help="steps per head fit (default 300; quick: 120)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--out", default="detection.json")
    parser.add_argument("--finetune", action="store_true", help="frozen detector vs head finetune (see above)")
    parser.add_argument("--train", type=int, default=30, help="--finetune: training scenes")
    parser.add_argument("--test", type=int, default=30, help="--finetune: held-out scenes")
    parser.add_argument("--epochs", type=int, default=8, help="--finetune: most fine-tuning epochs")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.finetune:
        backbone = TorchImageBackbone("mobilenet_v2", "mobilenet_v2")
        row = finetune(backbone, args.train, args.test, args.steps or 120, args.epochs)
        print(f"\n{args.train} training scenes, {args.test} held-out scenes, mAP@0.5 / mAP@0.5:0.95, train seconds")
        for h in ("detector", "finetune"):
            print(f"{h:>10} {row[h]['map_50']:.3f} / {row[h]['map']:.3f} {row[h]['train_seconds']:>8}")
        with open(args.out, "w") as fh:
            json.dump(row, fh, indent=1)
        return
    sizes, n_test = ([30, 60], 30) if args.quick else ([30, 60, 120], 60)
    steps = args.steps or (120 if args.quick else 300)
    backbone = TorchImageBackbone("mobilenet_v2", "mobilenet_v2")
    rows = quality(backbone, sizes, n_test, steps)
    placed, stored, maps = prepare(backbone, scenes(30, seed=1))
    head = KIND.fit_maps(maps, placed, stored, head="detector", folds=2, seed=0, steps=20).head
    speed = throughput(backbone, head, [1, 8, 32])

    print(f"\nquality (steps {steps}, {n_test} held-out scenes; mAP@0.5 / mAP@0.5:0.95)")
    print(
        f"{'train':>6} {'boxes':>6} {'served':>17} {'CV detector':>14} {'CV scratch':>14} "
        f"{'test detector':>14} {'test scratch':>14} {'train s':>8}"
    )
    for r in rows:
        cv, test = r["cv"], r["test"]
        print(
            f"{r['train_images']:>6} {r['boxes']:>6} {r['served']:>17} "
            f"{cv['detector']['map_50']:.3f}/{cv['detector']['map']:.3f}    "
            f"{cv['scratch-detector']['map_50']:.3f}/{cv['scratch-detector']['map']:.3f}    "
            f"{test['detector']['map_50']:.3f}/{test['detector']['map']:.3f}    "
            f"{test['scratch-detector']['map_50']:.3f}/{test['scratch-detector']['map']:.3f} {r['train_seconds']:>8}"
        )
    print(f"\nthroughput (torch threads {torch.get_num_threads()})")
    print(f"{'batch':>6} {'img/s':>7} {'decode+letterbox ms':>20} {'feature maps ms':>16} {'head+NMS ms':>12}")
    for r in speed:
        print(
            f"{r['batch']:>6} {r['images_per_s']:>7} {r['decode_letterbox_ms_per_image']:>20} "
            f"{r['feature_maps_ms_per_image']:>16} {r['head_nms_ms_per_image']:>12}"
        )
    with open(args.out, "w") as fh:
        json.dump({"steps": steps, "test_scenes": n_test, "quality": rows, "throughput": speed}, fh, indent=1)


if __name__ == "__main__":
    main()
