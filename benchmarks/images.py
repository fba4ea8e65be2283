"""Image backbone runtimes compared: throughput and linear-probe accuracy on this machine.

    .venv/bin/python benchmarks/images.py                  # MobileNetV2, torch fp32 and bf16
    .venv/bin/python benchmarks/images.py --architecture efficientnet_lite0 --reps 5

For each runtime and batch size 1, 8, 32: items/s and ms per batch of ``TorchImageBackbone.embed``
on preprocessed real photos (scikit-image's), timed round-robin inside each cell (best of
``--reps``) so ratios within one run share the machine's noise. Also the request-path cost of
decoding + preprocessing one JPEG photo, and per runtime the accuracy of Graft's linear head
(``fit_head``) trained on 16 digits per label (../shared/data/digits) with the cosine of its
embeddings to fp32. ONNX Runtime rows come with the ONNX runtime. Prints a table and writes JSON
to benchmarks/results/.
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
from tests.conftest import load_jsonl, per_label  # noqa: E402

BATCH_SIZES = (1, 8, 32)
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "cat", "immunohistochemistry", "hubble_deep_field", "camera")
RUNTIMES = {"torch fp32": torch.float32, "torch bf16": torch.bfloat16}


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
        for name, backbone in backbones.items():  # warm-up
            backbone.embed(items[:batch])
        for _ in range(reps):
            for name, backbone in backbones.items():
                best[name] = min(best[name], time_embed(backbone, items, batch))
        for name, seconds in best.items():
            calls = -(-len(items) // batch)
            rows.append({"runtime": name, "batch": batch, "items_per_s": len(items) / seconds, "ms_per_batch": 1000 * seconds / calls})
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


def accuracy(backbones: dict[str, TorchImageBackbone], train_per_label: int, test_per_label: int) -> list[dict]:
    train = per_label(load_jsonl("digits.train.jsonl"), train_per_label, seed=0)
    test = per_label(load_jsonl("digits.test.jsonl"), test_per_label, seed=1)
    pre = next(iter(backbones.values())).preprocessing
    x_train = images.from_stored([r["input"] for r in train], pre)
    x_test = images.from_stored([r["input"] for r in test], pre)
    y_test = np.array([r["label"] for r in test])
    rows, reference = [], None
    for name, backbone in backbones.items():
        train_vectors, test_vectors = backbone.embed(x_train), backbone.embed(x_test)
        result = fit_head("linear", train_vectors, [r["label"] for r in train], folds=5, seed=0)
        predicted = np.array(result.head.labels)[result.head.predict_proba(test_vectors).argmax(axis=1)]
        if reference is None:
            reference = (test_vectors, predicted)
        rows.append({
            "runtime": name,
            "digits_accuracy": float((predicted == y_test).mean()),
            "agreement_with_fp32": float((predicted == reference[1]).mean()),
            "min_cosine_to_fp32": float((test_vectors * reference[0]).sum(axis=1).min()),
        })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--architecture", default="mobilenet_v2", choices=sorted(ARCHITECTURES))
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--train-per-label", type=int, default=16)
    parser.add_argument("--test-per-label", type=int, default=30)
    args = parser.parse_args()

    threads = cpu_quota()
    torch.set_num_threads(threads)
    backbones = {name: TorchImageBackbone(args.architecture, args.architecture, dtype=dtype) for name, dtype in RUNTIMES.items()}
    pre = backbones["torch fp32"].preprocessing
    inputs = [pre(images.decode(jpeg(p), images.STORED_LIMITS)) for p in photos()]
    inputs = (inputs * 8)[:64]

    speed = throughput(backbones, inputs, args.reps)
    prep = preprocessing_cost(pre, args.reps)
    quality = accuracy(backbones, args.train_per_label, args.test_per_label)

    base = {r["batch"]: r["items_per_s"] for r in speed if r["runtime"] == "torch fp32"}
    print(f"\n{args.architecture} on {platform.processor() or platform.machine()}, torch {torch.__version__}, {threads} threads")
    print(f"{'runtime':<12} {'batch':>5} {'items/s':>9} {'ms/batch':>9} {'vs fp32':>8}")
    for r in speed:
        print(f"{r['runtime']:<12} {r['batch']:>5} {r['items_per_s']:>9.1f} {r['ms_per_batch']:>9.1f} {r['items_per_s'] / base[r['batch']]:>7.2f}×")
    print(f"\nrequest path: {prep['what']}: {prep['ms_per_image']:.1f} ms/image ({prep['items_per_s']:.0f}/s, one thread)")
    print(f"\ndigits linear probe ({args.train_per_label}/label train, {args.test_per_label}/label test)")
    print(f"{'runtime':<12} {'accuracy':>9} {'agree':>7} {'min cos':>8}")
    for r in quality:
        print(f"{r['runtime']:<12} {r['digits_accuracy']:>9.3f} {r['agreement_with_fp32']:>7.3f} {r['min_cosine_to_fp32']:>8.4f}")

    out = ROOT / "benchmarks" / "results" / f"images-{args.architecture}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "architecture": args.architecture, "torch": torch.__version__, "threads": threads, "machine": platform.machine(),
        "args": vars(args), "throughput": speed, "preprocessing": prep, "accuracy": quality,
    }, indent=2))
    print(f"\nwrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
