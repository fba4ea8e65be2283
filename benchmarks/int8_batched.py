"""Batched int8 without batch dependence: per-token and static int8 vs the served int8.

    .venv/bin/python benchmarks/int8_batched.py --texts 48 --reps 3 [--static]

The served ``onnx-int8`` is ``quantize_dynamic``'s graph: one activation scale per tensor per call,
so a batched input's embedding would depend on its batch mates; Graft therefore runs it one input
per call. Two row-independent forms are measured against it: **per-token** activation scales (the
graph rewritten by ``benchmarks/int8_per_token.py``: each token quantised with its own range), and,
with ``--static``, a statically quantised graph (``quantize_static``, QDQ, int8 weights per output
channel, activation scales fixed by calibration on BBC training articles). Neither is served
(docs/onnx.md says why). This measures, on MiniLM and this machine: items/s at batch 1/8/32 for
each; the largest |embedding in a batch of 32 − embedding alone| (row dependence); the cosine to
fp32; and the label agreement with fp32 of a linear head trained on each variant's own embeddings.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from adapters.training import encode_labels, fit_head  # noqa: E402
from benchmarks.int8_per_token import quantize_activations_per_token  # noqa: E402
from service.backbones.registry import BUILTIN, Registry  # noqa: E402
from service.backbones.runtimes import RuntimeConfig  # noqa: E402
from tests.conftest import load_jsonl, per_label  # noqa: E402


def quantize_static_int8(source: Path, path: Path, origin, calibration: list[str], method: str) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter([feeds for _, feeds in origin.batches(calibration, 8)])

        def get_next(self):
            return next(self.feeds, None)

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_static(
            str(source), str(path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
            weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8, op_types_to_quantize=["MatMul", "Gemm"],
            calibrate_method=getattr(CalibrationMethod, method),
        )
    finally:
        root.setLevel(level)


class Runner:
    def __init__(self, path: Path, origin, per_call: int | None, threads: int) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.origin, self.per_call = origin, per_call

    def embed(self, texts: list[str], batch: int) -> np.ndarray:
        out = np.empty((len(texts), 384), dtype=np.float32)
        for idx, feeds in self.origin.batches(texts, self.per_call or batch):  # positions: batches may be length-sorted
            out[idx] = self.session.run(None, feeds)[0]
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=64, help="texts timed per cell")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--calibration", type=int, default=64, help="BBC training articles to calibrate on")
    parser.add_argument("--method", default="MinMax", choices=["MinMax", "Percentile", "Entropy"])
    parser.add_argument("--static", action="store_true", help="also build and measure static (QDQ) int8")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--train-per-label", type=int, default=20)
    parser.add_argument("--test-per-label", type=int, default=40)
    parser.add_argument("--cache", type=Path, default=ROOT / "var" / "onnx-bench")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "int8_batched.json")
    args = parser.parse_args()

    registry = Registry({"minilm": BUILTIN["minilm"]}, "cpu", runtimes=RuntimeConfig("onnx", args.cache))
    fp32 = registry.load("minilm")
    origin = fp32.origin
    served = RuntimeConfig("onnx-int8", args.cache).wrap(origin, "onnx-int8")
    bbc_train, bbc_test = load_jsonl("bbc_news.train.jsonl"), load_jsonl("bbc_news.test.jsonl")
    per_token = args.cache / "minilm-int8-per-token.onnx"
    onnx.save(quantize_activations_per_token(onnx.load(str(served.model_path))), str(per_token))
    runners = {
        "onnx fp32": Runner(Path(fp32.model_path), origin, None, args.threads),
        "onnx-int8 served (1 per call)": Runner(Path(served.model_path), origin, 1, args.threads),
        "per-tensor int8 batched": Runner(Path(served.model_path), origin, None, args.threads),
        "per-token int8 batched": Runner(per_token, origin, None, args.threads),
    }
    if args.static:
        static_path = args.cache / f"minilm-static-int8-{args.method}.onnx"
        start = time.perf_counter()
        calibration = [r["input"] for r in per_label(bbc_train, max(1, args.calibration // 5), seed=11)]
        quantize_static_int8(Path(fp32.model_path), static_path, origin, calibration, args.method)
        print(
            f"static int8 ({args.method}, {len(calibration)} calibration articles) built in "
            f"{time.perf_counter() - start:.0f} s"
        )
        runners["static int8 batched"] = Runner(static_path, origin, None, args.threads)
    articles = [r["input"] for r in bbc_test]
    tok = origin.tokenizer
    short = [
        tok.decode(x)
        for x in tok(articles[: args.texts], add_special_tokens=False, truncation=True, max_length=34)["input_ids"]
    ]
    data = {"short (~36 tok)": short, "BBC News": articles[: args.texts]}

    rows = []
    for dataset, texts in data.items():
        for batch in (1, 8, 32):
            best = dict.fromkeys(runners, float("inf"))
            for _ in range(args.reps):  # round-robin: ratios within one run share the machine's noise
                for name, runner in runners.items():
                    t = time.perf_counter()
                    runner.embed(texts, batch)
                    best[name] = min(best[name], time.perf_counter() - t)
            for name in runners:
                rows.append(
                    {"dataset": dataset, "batch": batch, "runtime": name, "items_per_s": len(texts) / best[name]}
                )

    texts = articles[:32]
    reference = runners["onnx fp32"].embed(texts, 32)
    quality = {}
    train, test = per_label(bbc_train, args.train_per_label, seed=1), per_label(bbc_test, args.test_per_label, seed=2)
    classes, y = encode_labels([r["label"] for r in train])
    truth = np.array([classes.index(r["label"]) for r in test])
    preds = {}
    for name, runner in runners.items():
        together = runner.embed(texts, 32)
        alone = np.concatenate([runner.embed([t], 1) for t in texts])
        x_train = runner.embed([r["input"] for r in train], 32)
        x_test = runner.embed([r["input"] for r in test], 32)
        head = fit_head("linear", x_train, [r["label"] for r in train]).head
        preds[name] = head.predict_proba(x_test).argmax(1)
        quality[name] = {
            "row_dependence": float(np.abs(together - alone).max()),
            "min_cosine_to_fp32": float((together * reference).sum(1).min()),
            "accuracy": float((preds[name] == truth).mean()),
        }
    for name in runners:
        quality[name]["agreement_with_fp32"] = float((preds[name] == preds["onnx fp32"]).mean())

    print(f"\nitems/s, {args.threads} threads, best of {args.reps} ({platform.processor() or platform.machine()}):")
    print("| dataset | batch | " + " | ".join(runners) + " |")
    print("|---|---|" + "---|" * len(runners))
    for dataset in data:
        for batch in (1, 8, 32):
            cells = {r["runtime"]: r["items_per_s"] for r in rows if r["dataset"] == dataset and r["batch"] == batch}
            print(f"| {dataset} | {batch} | " + " | ".join(f"{cells[n]:.1f}" for n in runners) + " |")
    print("\n| runtime | row dependence (max abs) | min cosine to fp32 | linear-head accuracy | agreement with fp32 |")
    print("|---|---|---|---|---|")
    for name, q in quality.items():
        print(
            f"| {name} | {q['row_dependence']:.2e} | {q['min_cosine_to_fp32']:.4f} | {q['accuracy']:.3f} | "
            f"{q['agreement_with_fp32']:.3f} |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {"args": {k: str(v) for k, v in vars(args).items()}, "throughput": rows, "quality": quality}, indent=2
        )
    )


if __name__ == "__main__":
    main()
