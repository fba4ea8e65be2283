"""Entities and answers: quality at 50 and 200 training examples, the encoder's heads vs the no-transfer
baselines, over several draws; training time (CV selection + refit) and token-state time.

Data: benchmarks/spansets.py (templates filled from hand-written gazetteers; test names and places are
never seen in training). Each draw takes fresh training rows (seeded); one test set of 200 rows per kind.
Both heads of a kind are scored on the test set whichever CV chose, and the chosen one is reported.

    PYTHONPATH=. .venv/bin/python -m benchmarks.spans [--draws 3] [--out spans.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

from adapters.spans import Span, answer_scores, entity_scores, fit_answers, fit_entities
from adapters.spans.heads import SpanPointer, TokenTagger, WordPointer, WordTagger
from benchmarks.spansets import answer_rows, entity_rows

LABELS = ["PER", "ORG", "LOC"]
SIZES = (50, 200)


def _spans(row: dict) -> list[Span]:
    return [Span(s["start"], s["end"], s["label"]) for s in row["label"]]


def _qa(rows: list[dict]) -> tuple[list[str], list[str], list[tuple[int, int] | None]]:
    return ([r["input"]["question"] for r in rows], [r["input"]["context"] for r in rows],
            [None if r["label"] is None else (r["label"]["start"], r["label"]["end"]) for r in rows])


def entities(backbone: Any, draws: int) -> list[dict]:
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
                                   "states_s": states_s, "fit_s": fit_s}
            for name, head in (("tagger", TokenTagger(LABELS).fit(t_texts, t_gold, enc)),
                               ("word-tagger", WordTagger(LABELS).fit(t_texts, t_gold))):
                found = head.predict(texts, test_enc)
                row[name] = entity_scores(gold, [[s for s, _ in f] for f in found])["f1"]
            found = fit.head.predict(texts, test_enc)
            row["served"] = entity_scores(gold, [[s for s, _ in f] for f in found])["f1"]
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
    lines = ["| kind | examples | transfer head F1 | baseline F1 | served F1 (CV's choice) | token states s | fit s |",
             "|---|---|---|---|---|---|---|"]
    for kind, transfer, baseline in (("entities", "tagger", "word-tagger"), ("answers", "pointer", "word-pointer")):
        for size in SIZES:
            group = [r for r in rows if r["kind"] == kind and r["examples"] == size]
            if not group:
                continue

            def cell(key: str, group: list[dict] = group) -> str:
                values = [r[key] for r in group]
                spread = statistics.stdev(values) if len(values) > 1 else 0.0
                return f"{statistics.mean(values):.3f} ± {spread:.3f}"

            lines.append(f"| {kind} | {size} | {cell(transfer)} | {cell(baseline)} | {cell('served')} | "
                         f"{statistics.mean(r['states_s'] for r in group):.1f} | "
                         f"{statistics.mean(r['fit_s'] for r in group):.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--out", default="spans.json")
    args = parser.parse_args()
    from service.backbones.registry import BUILTIN, Registry

    backbone = Registry({"minilm": BUILTIN["minilm"]}, "cpu").load("minilm")
    rows = entities(backbone, args.draws) + answers(backbone, args.draws)
    print(table(rows))
    with open(args.out, "w") as fh:
        json.dump({"draws": args.draws, "sizes": list(SIZES), "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
