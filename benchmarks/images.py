"""Image backbone runtimes compared: throughput and linear-probe accuracy on this machine.

    .venv/bin/python benchmarks/images.py                  # MobileNetV2: torch fp32/bf16, ORT fp32/int8
    .venv/bin/python benchmarks/images.py --shots 4 8 16 --seeds 0 1 2   # the README's accuracy figures
    .venv/bin/python benchmarks/images.py --architecture efficientnet_lite0

For each runtime and batch size 1, 8, 32: items/s and ms per batch of ``TorchImageBackbone.embed``
on preprocessed real photos (scikit-image's), timed round-robin inside each cell (best of
``--reps``) so ratios within one run share the machine's noise. Also the request-path cost of
decoding + preprocessing one JPEG photo, and the accuracy of Graft's linear head (``fit_head``)
on held-out digits (../shared/data/digits) trained on each runtime's features, and on raw pixels
(the no-backbone baseline), with agreement and cosine of each runtime to fp32. Runtimes are
built by Graft's own registry (``GRAFT_BACKBONE_RUNTIME`` values), ONNX exports in a temporary
cache. Prints a table and writes JSON to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from adapters.training import fit_head  # noqa: E402
from service import images  # noqa: E402
from service.backbones.base import cpu_quota  # noqa: E402
from service.backbones.image import ARCHITECTURES, TorchImageBackbone  # noqa: E402
from service.backbones.registry import BackboneSpec, Registry  # noqa: E402
from service.backbones.runtimes import RuntimeConfig  # noqa: E402
from tests.conftest import load_jsonl, per_label  # noqa: E402

BATCH_SIZES = (1, 8, 32)
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "cat", "immunohistochemistry", "hubble_deep_field", "camera")
RUNTIMES = {"torch fp32": "torch", "torch bf16": "torch-bf16", "ORT fp32": "onnx", "ORT int8": "onnx-int8"}


def load(architecture: str, runtime: str, cache: Path):
    spec = BackboneSpec(architecture, "image", lambda: None, architecture=architecture)
    return Registry({architecture: spec}, "cpu", runtimes=RuntimeConfig(runtime, cache)).load(architecture)


def photos() -> list[np.ndarray]:
    import skimage.data

    return [getattr(skimage.data, name)() for name in PHOTOS]


def jpeg(array: np.ndarray) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(array).convert("RGB").save(out, format="JPEG", quality=90)
    return out.getvalue()


def time_embed(backbone: TorchImageBackbone, inputs: list[np.ndarray], batch: int) -> float:
    started = time.perf_counter()
    for start in range(0, len(inputs), batch):
        backbone.embed(inputs[start : start + batch])
    return time.perf_counter() - started


def throughput(backbones: dict[str, TorchImageBackbone], inputs: list[np.ndarray], reps: int) -> list[dict]:
    rows = []
    for batch in BATCH_SIZES:
        items = inputs[: max(batch, 8 if batch == 1 else 2 * batch)]
        best = {name: float("inf") for name in backbones}
        for backbone in backbones.values():  # warm-up
            backbone.embed(items[:batch])
        for _ in range(reps):
            for name, backbone in backbones.items():
                best[name] = min(best[name], time_embed(backbone, items, batch))
        for name, seconds in best.items():
            calls = -(-len(items) // batch)
            rows.append(
                {
                    "runtime": name,
                    "batch": batch,
                    "items_per_s": len(items) / seconds,
                    "ms_per_batch": 1000 * seconds / calls,
                }
            )
    return rows


def preprocessing_cost(pre: images.Preprocessing, reps: int) -> dict:
    data = jpeg(photos()[0])
    limits = images.Limits(max_bytes=len(data) + 1, max_pixels=10**8)
    best = float("inf")
    for _ in range(reps):
        started = time.perf_counter()
        for _ in range(20):
            pre(images.decode(data, limits))
        best = min(best, (time.perf_counter() - started) / 20)
    return {"what": "decode JPEG 451×300 + resize + crop", "ms_per_image": 1000 * best, "items_per_s": 1 / best}


def pixels(rows: list[dict]) -> np.ndarray:
    """The no-backbone baseline's features: grayscale pixels in [0, 1] (8×8 digits: 64 values)."""
    decoded = (images.decode(images.from_base64(r["input"]), images.STORED_LIMITS).convert("L") for r in rows)
    return np.stack([np.asarray(image, dtype=np.float32).ravel() / 255 for image in decoded])


def held_out_accuracy(head, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    predicted = np.array(head.labels)[head.predict_proba(x).argmax(axis=1)]
    return float((predicted == y).mean()), predicted


def accuracy(
    backbones: dict[str, TorchImageBackbone], shots: list[int], seeds: list[int], test_per_label: int
) -> list[dict]:
    """Linear-probe accuracy on held-out digits per draw (shots per label, seed): each runtime's
    features and raw pixels, all with Graft's own ``fit_head``."""
    pool = load_jsonl("digits.train.jsonl")
    test = per_label(load_jsonl("digits.test.jsonl"), test_per_label, seed=1)
    y_test = np.array([r["label"] for r in test])
    draws = {(n, seed): per_label(pool, n, seed=seed) for n in shots for seed in seeds}
    unique = list({r["input"]: r for rows in draws.values() for r in rows}.values())
    index = {r["input"]: i for i, r in enumerate(unique)}
    pre = next(iter(backbones.values())).preprocessing
    arrays = images.from_stored([r["input"] for r in unique], pre)
    test_arrays = images.from_stored([r["input"] for r in test], pre)
    features = {name: (bb.embed(arrays), bb.embed(test_arrays)) for name, bb in backbones.items()}
    rows = []
    for (n, seed), draw in draws.items():
        labels = [r["label"] for r in draw]
        raw = fit_head("linear", pixels(draw), labels, folds=5, seed=0).head
        rows.append(
            {
                "shots": n,
                "seed": seed,
                "features": "raw pixels",
                "accuracy": held_out_accuracy(raw, pixels(test), y_test)[0],
            }
        )
        reference = None
        for name, (train_vectors, test_vectors) in features.items():
            head = fit_head("linear", train_vectors[[index[r["input"]] for r in draw]], labels, folds=5, seed=0).head
            acc, predicted = held_out_accuracy(head, test_vectors, y_test)
            reference = reference or (test_vectors, predicted)
            rows.append({
                "shots": n, "seed": seed, "features": name, "accuracy": acc,
                "agreement_with_fp32": float((predicted == reference[1]).mean()),
                "min_cosine_to_fp32": float((test_vectors * reference[0]).sum(axis=1).min()),
            })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--architecture", default="mobilenet_v2", choices=sorted(ARCHITECTURES))
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--shots", type=int, nargs="+", default=[16], help="training digits per label")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds of the training draws")
    parser.add_argument("--test-per-label", type=int, default=30)
    parser.add_argument("--no-accuracy", action="store_true", help="throughput only (the linear-probe fits are slow)")
    parser.add_argument("--cache", type=Path, default=ROOT / "var" / "bench-onnx", help="ONNX export cache")
    args = parser.parse_args()

    threads = cpu_quota()
    torch.set_num_threads(threads)
    backbones = {name: load(args.architecture, runtime, args.cache) for name, runtime in RUNTIMES.items()}
    pre = backbones["torch fp32"].preprocessing
    inputs = [pre(images.decode(jpeg(p), images.STORED_LIMITS)) for p in photos()]
    inputs = (inputs * 8)[:64]

    speed = throughput(backbones, inputs, args.reps)
    prep = preprocessing_cost(pre, args.reps)
    quality = [] if args.no_accuracy else accuracy(backbones, args.shots, args.seeds, args.test_per_label)

    base = {r["batch"]: r["items_per_s"] for r in speed if r["runtime"] == "torch fp32"}
    print(
        f"\n{args.architecture} on {platform.processor() or platform.machine()}, torch {torch.__version__}, {threads} "
        "threads"
    )
    print(f"{'runtime':<12} {'batch':>5} {'items/s':>9} {'ms/batch':>9} {'vs fp32':>8}")
    for r in speed:
        print(
            f"{r['runtime']:<12} {r['batch']:>5} {r['items_per_s']:>9.1f} {r['ms_per_batch']:>9.1f} "
            f"{r['items_per_s'] / base[r['batch']]:>7.2f}×"
        )
    print(
        f"\nrequest path: {prep['what']}: {prep['ms_per_image']:.1f} ms/image ({prep['items_per_s']:.0f}/s, one thread)"
    )
    if quality:
        print(f"\ndigits, linear head on each feature ({args.test_per_label}/label held out)")
        print(f"{'shots':>5} {'seed':>4} {'features':<12} {'accuracy':>9} {'agree':>7} {'min cos':>8}")
    for r in quality:
        extra = (
            f"{r['agreement_with_fp32']:>7.3f} {r['min_cosine_to_fp32']:>8.4f}" if "agreement_with_fp32" in r else ""
        )
        print(f"{r['shots']:>5} {r['seed']:>4} {r['features']:<12} {r['accuracy']:>9.3f} {extra}")

    out = ROOT / "benchmarks" / "results" / f"images-{args.architecture}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "architecture": args.architecture,
                "torch": torch.__version__,
                "threads": threads,
                "machine": platform.machine(),
                "args": vars(args),
                "throughput": speed,
                "preprocessing": prep,
                "accuracy": quality,
            },
            indent=2,
        )
    )
    print(f"\nwrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
