"""Detection's closed loop, in process (no HTTP): OOD flag rates and suggest vs random labelling.

    PYTHONPATH=. .venv/bin/python -m benchmarks.detection_loop [--seeds 0 1 2] [--out detection_loop.json]

Everything runs on Graft's own parts: the packaged MobileNetV2's feature maps of letterboxed images (as the map
lane computes them), ``Detection.pooled`` (the map averaged over the image's cells), ``adapters.ood.fit_ood`` with
the pipeline's settings (one mean, ``GRAFT_OOD_FPR`` 0.05, ``CALIBRATION_FOLDS`` = 10 CV folds), the production
``detector`` head, ``Detection.suggest_scores`` and ``adapters.active.suggest`` as the suggest route calls them.
Data: benchmarks/detection_data.py scenes (digits 0, 1, 7 composited onto gradients; train split for training,
test split for held-out scenes).

OOD: a version's OOD model is fitted on ``--train`` training scenes (one per seed); the flag rate is measured on
held-out in-domain scenes (should be near 5 %), on scenes of other digits (2, 3, 5: the same kind of image, new
objects; not what an image-level OOD score is for, reported for what it is), and on a foreign domain: crops of
scikit-image's sample photographs (natural photos; benchmarks/ood.py's foreign images).

Suggest vs random: from ``--start`` labelled scenes, ``--k`` more are picked from an unlabelled pool by the
detector trained on the start (``suggest``: the most ambiguous peak x k-center on the pooled maps), or at random;
the detector is refitted on start + k and scored (mAP@0.5, mAP) on held-out scenes. Same seeds for all. Two
alternatives to the served rule are scored beside it: k-center alone (no uncertainty) and ``1 -`` the image's top
peak score as its uncertainty (with the same k-center).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import time
from typing import Any

import numpy as np
from PIL import Image

from adapters.active import suggest
from adapters.boxes import evaluate
from adapters.heads.detection import DetectorHead
from adapters.kinds import KINDS, Placed
from adapters.kinds.detection import EVAL_MIN_SCORE, MAX_OBJECTS, SIZE
from adapters.ood import CALIBRATION_FOLDS, fit_ood
from benchmarks.detection_data import scenes
from benchmarks.ood import photo_crops
from service import images
from service.backbones.image import TorchImageBackbone

KIND: Any = KINDS["detection"]
FPR = 0.05
NAMES = ["0", "1", "7"]


def placed_of(backbone: TorchImageBackbone, raws: list[bytes]) -> tuple[list[Placed], np.ndarray]:
    """Images as the service sees them (normalised, letterboxed) and their feature maps."""
    placed = []
    for raw in raws:
        image = images.decode(raw, images.STORED_LIMITS)
        canvas, placement = images.letterbox(image, backbone.preprocessing, SIZE)
        placed.append(Placed(canvas, placement, placement.width, placement.height))
    parts = [backbone.feature_maps([p.pixels for p in placed[i : i + 32]]) for i in range(0, len(placed), 32)]
    return placed, np.concatenate(parts)


def scene_set(
    backbone: TorchImageBackbone, data: list, encoding: str = "jpeg"
) -> tuple[list[Placed], list[str], np.ndarray]:
    """Scenes encoded as the integration tests send them (JPEG, as ``Scene.example``; or PNG)."""
    raws = [base64.b64decode(getattr(s, f"{encoding}_base64")()) for s in data]
    placed, maps = placed_of(backbone, raws)
    return placed, [KIND.encode_example(r, s.objects) for r, s in zip(raws, data, strict=True)], maps


def png(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


def flags(
    backbone: TorchImageBackbone, seeds: list[int], n_train: int, n_test: int, channels: int | None
) -> list[dict]:
    """Flag rates per seed; ``channels``: the maps' last channels pooled (the service's: the stride-16 ones)."""
    test = scenes(n_test, seed=10_000, split="test")
    domains: dict[str, np.ndarray] = {}
    for name, (placed, _, maps) in {
        "in_domain": scene_set(backbone, test),
        "in_domain_png": scene_set(backbone, test, "png"),
        "other_digits": scene_set(backbone, scenes(n_test, seed=20_000, split="test", labels=("2", "3", "5"))),
    }.items():
        domains[name] = KIND.pooled(maps, placed, channels)
    photos_placed, photos_maps = placed_of(backbone, [png(c) for c in photo_crops(n_test, seed=0)])
    domains["photos"] = KIND.pooled(photos_maps, photos_placed, channels)
    rows = []
    for seed in seeds:
        placed, _, maps = scene_set(backbone, scenes(n_train, seed=100 + seed))
        ood = fit_ood(KIND.pooled(maps, placed, channels), None, fpr=FPR, folds=CALIBRATION_FOLDS, seed=seed)
        row: dict[str, Any] = {"seed": seed, "train_scenes": n_train, "channels": channels or int(maps.shape[1])}
        row.update({name: round(float(ood.flags(x).mean()), 4) for name, x in domains.items()})
        rows.append(row)
        print(row, flush=True)
    return rows


def fitted(maps: np.ndarray, truth: list, steps: int, seed: int) -> DetectorHead:
    return DetectorHead(NAMES, size=SIZE, channels=int(maps.shape[1])).fit(maps, truth, steps=steps, seed=seed)


def scored(head: DetectorHead, maps: np.ndarray, truth: list) -> dict[str, float]:
    found = [KIND.suppressed(f, MAX_OBJECTS) for f in head.detect(maps, EVAL_MIN_SCORE)]
    m = evaluate(truth, found, NAMES)
    return {"map_50": round(m["map_50"], 4), "map": round(m["map"], 4)}


def active(
    backbone: TorchImageBackbone, seeds: list[int], start: int, pool: int, k: int, n_test: int, steps: int
) -> list[dict]:
    t_placed, t_stored, t_maps = scene_set(backbone, scenes(n_test, seed=10_000, split="test"))
    t_truth = KIND.truth(t_placed, t_stored, NAMES)
    rows = []
    for seed in seeds:
        placed, stored, maps = scene_set(backbone, scenes(start + pool, seed=300 + seed))
        truth = KIND.truth(placed, stored, NAMES)
        first = np.arange(start)
        rest = np.arange(start, start + pool)
        head = fitted(maps[first], [truth[i] for i in first], steps, seed)
        pairs = KIND.suggest_scores(head, [placed[i] for i in rest], maps[rest], backbone.coarse_channels)
        vectors, uncertainty = np.stack([v for v, _ in pairs]), np.array([u for _, u in pairs])
        picked, _ = suggest(vectors, k, uncertainty=uncertainty)
        # the alternatives the served rule was chosen over: diversity alone, and 1 - the image's top score
        spread, _ = suggest(vectors, k)
        found = head.detect(maps[rest], EVAL_MIN_SCORE)
        low, _ = suggest(
            vectors, k, uncertainty=np.array([1.0 - (f.scores.max() if len(f.scores) else 0.0) for f in found])
        )
        chosen = {
            "start": first,
            "suggest": np.concatenate([first, rest[picked]]),
            "random": np.concatenate([first, np.random.default_rng(seed).choice(rest, k, replace=False)]),
            "kcenter_only": np.concatenate([first, rest[spread]]),
            "low_top_score": np.concatenate([first, rest[low]]),
        }
        row: dict[str, Any] = {"seed": seed, "start": start, "k": k, "pool": pool}
        for name, idx in chosen.items():
            model = head if name == "start" else fitted(maps[idx], [truth[i] for i in idx], steps, seed)
            row[name] = {**scored(model, t_maps, t_truth), "boxes": int(sum(len(truth[i].labels) for i in idx))}
        rows.append(row)
        print(row, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["flags", "active", "both"], default="both")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--train", type=int, default=40, help="training scenes of the OOD model")
    parser.add_argument("--test", type=int, default=100, help="held-out scenes (and photo crops) per domain")
    parser.add_argument("--start", type=int, default=10, help="labelled scenes before suggest (active)")
    parser.add_argument("--pool", type=int, default=80, help="unlabelled scenes suggest picks from")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--steps", type=int, default=150, help="detector steps per fit (active)")
    parser.add_argument("--out", default="detection_loop.json")
    args = parser.parse_args()
    backbone = TorchImageBackbone("mobilenet_v2", "mobilenet_v2")
    started = time.perf_counter()
    out: dict[str, Any] = {"fpr": FPR, "calibration_folds": CALIBRATION_FOLDS}
    if args.part in ("flags", "both"):
        out["flags"] = []
        for channels in (backbone.coarse_channels, None):  # served: the stride-16 channels; then all of them
            rows = flags(backbone, args.seeds, args.train, args.test, channels)
            out["flags"] += rows
            print(
                f"\nOOD flag rate (expected {FPR:.0%}), {args.train} training scenes, {args.test} per domain, "
                f"{rows[0]['channels']} channels pooled"
            )
            for key in ("in_domain", "in_domain_png", "other_digits", "photos"):
                values = [r[key] for r in rows]
                print(f"{key:>13}: mean {np.mean(values):.3f}  per seed {values}")
    if args.part in ("active", "both"):
        out["active"] = rows = active(backbone, args.seeds, args.start, args.pool, args.k, args.test, args.steps)
        print(f"\nheld-out mAP@0.5 / mAP after adding k={args.k} scenes to {args.start} (pool {args.pool})")
        for name in ("start", "random", "kcenter_only", "low_top_score", "suggest"):
            m50, m = np.mean([r[name]["map_50"] for r in rows]), np.mean([r[name]["map"] for r in rows])
            print(f"{name:>8}: {m50:.3f} / {m:.3f}  per seed {[r[name]['map_50'] for r in rows]}")
    out["seconds"] = round(time.perf_counter() - started, 1)
    with open(args.out, "w") as fh:
        json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
