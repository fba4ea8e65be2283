"""Graft's mAP (adapters/boxes.py) against pycocotools' COCOeval on the same seeded detection problems.

    PYTHONPATH=. .venv/bin/python -m benchmarks.coco_check --coco-python /tmp/cocoenv/bin/python
        [--problems 24] [--seed 0] [--out benchmarks/results/coco_check.json]

pycocotools is not in Graft's locks, so ``--coco-python`` names an interpreter that has it (a throwaway virtual
environment: ``python3 -m venv /tmp/cocoenv && /tmp/cocoenv/bin/pip install pycocotools numpy``); without it,
pycocotools is used when importable here, else the script stops saying why (as ``--spacy-python`` in
benchmarks/spans.py).

Each problem: several images (some with no true box at all), several labels (one with true boxes but no
prediction, one with predictions but no true box), true boxes, and predictions with scores: jittered copies of true
boxes at varied IoUs, near-duplicates, misses, boxes on the right place with the wrong label, and false
positives anywhere. Some problems have integer pixel coordinates (exact IoU ties) or scores rounded to 0.1 (score
ties); the last one is hand-made: IoUs exactly at the thresholds and a detection equally close to two true boxes.
Graft's ``evaluate`` scores it here; the same problem goes to COCO as JSON (ground truth with ``iscrowd: 0`` and
``area`` from the box; boxes as ``[x, y, w, h]``; ids from 1) and COCOeval (``bbox``, area range ``all``) reads it.

Like for like: ``maxDets`` is COCO's cap on detections per image *and label* (default 100); Graft's evaluation has
no cap, so COCO runs with ``maxDets = [1, 100, 10000]`` and both mAPs are read from its ``precision`` array at
10000 (COCO's ``stats[0]`` reads 100 and is recorded too, as the check that reading the array matches COCO's own
summary). Both use the 101 recall points. Prints a table and writes JSON (default benchmarks/results/).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from adapters.boxes import Objects, evaluate

COCO_SCRIPT = r"""
import contextlib, json, sys
from importlib.metadata import version
import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

jobs = json.load(sys.stdin)
out = {"pycocotools": version("pycocotools"), "numpy": np.__version__, "problems": []}
for job in jobs:
    with contextlib.redirect_stdout(sys.stderr):  # COCO prints its progress
        gt = COCO(job["gt"])
        dt = gt.loadRes(job["dt"])
        ev = COCOeval(gt, dt, "bbox")
        ev.params.maxDets = [1, 100, 10000]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    p = ev.params
    assert p.areaRngLbl[0] == "all"
    row = {"stats_map_100": float(ev.stats[0]), "stats_map_50_10000": float(ev.stats[1])}
    for m, dets in ((2, "10000"), (1, "100")):
        prec = ev.eval["precision"][:, :, :, 0, m]  # IoU thresholds x 101 recall points x labels
        per_label = {}
        for k, cat in enumerate(p.catIds):
            v = prec[:, :, k]
            ok = bool((v > -1).all())
            per_label[str(cat)] = {"ap_50": float(v[0].mean()), "ap": float(v.mean())} if ok else None
        scored = [v for v in per_label.values() if v is not None]
        row[dets] = {"map_50": float(np.mean([v["ap_50"] for v in scored])) if scored else -1.0,
                     "map": float(np.mean([v["ap"] for v in scored])) if scored else -1.0,
                     "per_label": per_label}
    out["problems"].append(row)
json.dump(out, sys.stdout)
"""


def _clip(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    out = boxes.copy()
    out[:, 0::2] = out[:, 0::2].clip(0, width)
    out[:, 1::2] = out[:, 1::2].clip(0, height)
    out[:, 2] = np.maximum(out[:, 2], out[:, 0] + 1.0)  # at least a pixel wide and high
    out[:, 3] = np.maximum(out[:, 3], out[:, 1] + 1.0)
    return out


def random_problem(seed: int) -> dict[str, Any]:
    """A seeded detection problem: ``{"name", "labels", "sizes", "truth", "found"}`` (lists of Objects)."""
    rng = np.random.default_rng(seed)
    n_images = int(rng.integers(4, 16))
    n_labels = int(rng.integers(3, 6))
    integer = seed % 4 == 1  # integer pixel coordinates: exact IoU ties happen
    tied = seed % 4 == 2  # scores rounded to 0.1: many score ties
    crowded = seed % 8 == 3  # one image with 150 predictions of one label: past COCO's default maxDets
    missed, ghost = 0, n_labels - 1  # label 0: true boxes, never predicted; the last label: predicted, never true
    truth: list[Objects] = []
    found: list[Objects] = []
    sizes: list[tuple[int, int]] = []
    for image in range(n_images):
        width, height = (int(v) for v in rng.integers(64, 640, 2))
        sizes.append((width, height))
        n_true = 0 if rng.random() < 0.2 else int(rng.integers(1, 9))
        x0 = rng.uniform(0, width * 0.8, n_true)
        y0 = rng.uniform(0, height * 0.8, n_true)
        w = rng.uniform(6, width * 0.5, n_true)
        h = rng.uniform(6, height * 0.5, n_true)
        true_boxes = _clip(np.stack([x0, y0, x0 + w, y0 + h], 1), width, height)
        true_labels = rng.integers(0, n_labels - 1, n_true)  # never the ghost label
        boxes: list[np.ndarray] = []
        labels: list[int] = []
        scores: list[float] = []
        for box, label in zip(true_boxes, true_labels, strict=True):
            size = np.array([box[2] - box[0], box[3] - box[1]] * 2)
            if label != missed and rng.random() > 0.2:  # else a miss
                spread = rng.choice([0.02, 0.08, 0.15, 0.3])  # IoUs from ~0.95 down to ~0.3
                boxes.append(box + rng.normal(0, spread, 4) * size)
                labels.append(int(label))
                scores.append(float(np.clip(0.9 - spread + rng.normal(0, 0.2), 0.01, 1.0)))
                if rng.random() < 0.3:  # a near-duplicate, usually scored lower
                    boxes.append(boxes[-1] + rng.normal(0, 0.03, 4) * size)
                    labels.append(int(label))
                    scores.append(float(np.clip(scores[-1] - rng.uniform(-0.1, 0.4), 0.01, 1.0)))
            if rng.random() < 0.1:  # the right place, the wrong label (never label 0)
                boxes.append(box + rng.normal(0, 0.05, 4) * size)
                labels.append(int(label % (n_labels - 1)) + 1)
                scores.append(float(rng.uniform(0.05, 0.8)))
        for k in range(int(rng.poisson(2.0)) + (image == 0)):  # false positives anywhere, any label but 0
            bx, by = rng.uniform(0, width * 0.8), rng.uniform(0, height * 0.8)
            bw, bh = rng.uniform(6, width * 0.4), rng.uniform(6, height * 0.4)
            boxes.append(np.array([bx, by, bx + bw, by + bh]))
            labels.append(ghost if image == 0 and k == 0 else int(rng.integers(1, n_labels)))
            scores.append(float(rng.uniform(0.01, 0.7)))
        if crowded and image == 0:
            for _ in range(150):
                bx, by = rng.uniform(0, width * 0.8), rng.uniform(0, height * 0.8)
                boxes.append(np.array([bx, by, bx + width * 0.2, by + height * 0.2]))
                labels.append(1)
                scores.append(float(rng.uniform(0.01, 0.3)))
        found_boxes = _clip(np.array(boxes).reshape(-1, 4), width, height)
        found_scores = np.array(scores)
        if integer:
            true_boxes = _clip(true_boxes.round(), width, height)
            found_boxes = _clip(found_boxes.round(), width, height)
        if tied:
            found_scores = np.maximum(found_scores.round(1), 0.1)
        truth.append(Objects.of(true_boxes, true_labels))
        found.append(Objects.of(found_boxes, labels, found_scores))
    kind = "integer boxes" if integer else "score ties" if tied else "float boxes"
    return {"name": f"seed {seed}: {n_images} images, {n_labels} labels, {kind}" + (", crowded" if crowded else ""),
            "labels": [f"label{k}" for k in range(n_labels)], "sizes": sizes, "truth": truth, "found": found}


def edge_problem() -> dict[str, Any]:
    """Hand-made: IoUs exactly 0.5, 0.7 and 0.9 (10x10 true boxes, found boxes 10x5, 10x7, 10x9); and two
    overlapping true boxes (0-10 and 2-12) with a detection equally close to both (1-11, IoU 9/11 each), then a
    lower-scored one exactly on the first (IoU 1 with it, 2/3 with the second)."""
    truth = [Objects.of([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]], [0, 0, 0]),
             Objects.of([[0, 0, 10, 10], [2, 0, 12, 10]], [1, 1])]
    found = [Objects.of([[0, 0, 10, 5], [20, 0, 30, 7], [40, 0, 50, 9]], [0, 0, 0], [0.9, 0.8, 0.7]),
             Objects.of([[1, 0, 11, 10], [0, 0, 10, 10]], [1, 1], [0.9, 0.8])]
    return {"name": "hand-made: IoU at thresholds, IoU ties", "labels": ["a", "b"], "sizes": [(64, 64), (64, 64)],
            "truth": truth, "found": found}


def to_coco(problem: dict[str, Any], folder: Path, index: int) -> dict[str, str]:
    """The problem as COCO ground truth and detections JSON files under ``folder``."""
    images = [{"id": i + 1, "width": w, "height": h, "file_name": f"{i + 1}.jpg"}
              for i, (w, h) in enumerate(problem["sizes"])]
    categories = [{"id": k + 1, "name": name} for k, name in enumerate(problem["labels"])]
    annotations: list[dict[str, Any]] = []
    detections: list[dict[str, Any]] = []
    for i, (t, f) in enumerate(zip(problem["truth"], problem["found"], strict=True)):
        for box, label in zip(t.boxes.tolist(), t.labels.tolist(), strict=True):
            x0, y0, x1, y1 = box
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": label + 1,
                                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
        for box, label, score in zip(f.boxes.tolist(), f.labels.tolist(), f.scores.tolist(), strict=True):
            x0, y0, x1, y1 = box
            detections.append({"image_id": i + 1, "category_id": label + 1, "bbox": [x0, y0, x1 - x0, y1 - y0],
                               "score": score})
    gt, dt = folder / f"gt{index}.json", folder / f"dt{index}.json"
    gt.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    dt.write_text(json.dumps(detections))
    return {"gt": str(gt), "dt": str(dt)}


def coco_reference(jobs: list[dict[str, str]], python: str | None) -> dict[str, Any]:
    command = [python or sys.executable, "-c", COCO_SCRIPT]
    if python is None:
        try:
            import pycocotools  # noqa: F401  # not in Graft's locks: optional
        except ImportError:
            sys.exit("pycocotools is not installed here (not in Graft's locks): pass --coco-python with an "
                     "interpreter that has it, e.g. python3 -m venv /tmp/cocoenv && /tmp/cocoenv/bin/pip install "
                     "pycocotools numpy")
    done = subprocess.run(command, input=json.dumps(jobs), capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(f"COCOeval failed: {done.stderr.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def compare(ours: dict[str, Any], coco: dict[str, Any], labels: list[str]) -> dict[str, Any]:
    """|Δ| of both mAPs and of every label's two APs (None on both sides counts as agreement)."""
    deltas = {"map_50": abs(ours["map_50"] - coco["map_50"]), "map": abs(ours["map"] - coco["map"])}
    worst_label = 0.0
    for k, name in enumerate(labels):
        a, b = ours["per_label"][name], coco["per_label"][str(k + 1)]
        if (a["ap_50"] is None) != (b is None):
            worst_label = float("inf")
        elif b is not None:
            worst_label = max(worst_label, abs(a["ap_50"] - b["ap_50"]), abs(a["ap"] - b["ap"]))
    deltas["per_label"] = worst_label
    return deltas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=24, help="random problems (plus one hand-made)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--coco-python", default=None, help="an interpreter with pycocotools")
    parser.add_argument("--out", default="benchmarks/results/coco_check.json")
    args = parser.parse_args()
    problems = [random_problem(args.seed + i) for i in range(args.problems)] + [edge_problem()]
    tick = time.perf_counter()
    ours = [evaluate(p["truth"], p["found"], p["labels"]) for p in problems]
    ours_seconds = time.perf_counter() - tick
    with tempfile.TemporaryDirectory() as folder:
        jobs = [to_coco(p, Path(folder), i) for i, p in enumerate(problems)]
        tick = time.perf_counter()
        coco = coco_reference(jobs, args.coco_python)
        coco_seconds = time.perf_counter() - tick
    rows: list[dict[str, Any]] = []
    print(f"{'problem':58} {'ours@.5':>8} {'COCO@.5':>8} {'ours':>8} {'COCO':>8} {'max|Δ|':>9} {'COCO@100':>9}")
    for p, mine, ref in zip(problems, ours, coco["problems"], strict=True):
        deltas = compare(mine, ref["10000"], p["labels"])
        row = {"problem": p["name"], "images": len(p["truth"]), "labels": len(p["labels"]),
               "true_boxes": sum(len(t.labels) for t in p["truth"]), "found": sum(len(f.labels) for f in p["found"]),
               "ours": {"map_50": mine["map_50"], "map": mine["map"],
                        "per_label": {k: {"ap_50": v["ap_50"], "ap": v["ap"]} for k, v in mine["per_label"].items()}},
               "coco": ref["10000"], "coco_max_dets_100": ref["100"],
               "coco_stats_map_100": ref["stats_map_100"], "coco_stats_map_50_10000": ref["stats_map_50_10000"],
               "abs_delta": deltas}
        rows.append(row)
        worst = max(deltas.values())
        print(f"{p['name'][:58]:58} {mine['map_50']:8.4f} {ref['10000']['map_50']:8.4f} {mine['map']:8.4f} "
              f"{ref['10000']['map']:8.4f} {worst:9.1e} {ref['100']['map']:9.4f}")
    worst_random = max(max(r["abs_delta"].values()) for r in rows[:-1])
    worst_edge = max(rows[-1]["abs_delta"].values())
    summary_check = max(abs(r["coco_stats_map_100"] - r["coco_max_dets_100"]["map"]) for r in rows)
    print(f"\n{len(rows) - 1} random problems: max |Δ| {worst_random:.1e} (mAP@0.5, mAP@0.5:0.95, per-label AP); "
          f"hand-made: {worst_edge:.1e}. Reading COCO's precision array vs its stats[0] (maxDets 100): "
          f"{summary_check:.1e}. pycocotools {coco['pycocotools']}, numpy {coco['numpy']}; "
          f"ours {ours_seconds:.2f} s, COCO (subprocess) {coco_seconds:.2f} s")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump({"seed": args.seed, "pycocotools": coco["pycocotools"], "numpy": coco["numpy"],
                   "max_abs_delta_random": worst_random, "max_abs_delta_hand_made": worst_edge,
                   "stats_vs_array": summary_check, "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
