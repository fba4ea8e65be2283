"""The fine-tuned entities tagger (``head: "finetune"``, adapters/spans/finetune.py) on the real MiniLM and a
small template entity set: it trains (LoRA moves, held-out F1 recorded against the frozen tagger and the
baseline), predicts exact character offsets (also past one window), round-trips through its stored bytes,
stops at its seconds bound, and the entities kind serves it when pinned."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from adapters.kinds import Finetuning, kind_of
from adapters.spans import Span, entity_scores, from_bytes, to_bytes
from adapters.spans.finetune import TAGGER_RECIPE, FinetuneTagger, finetune_warnings, fit_finetune_tagger
from benchmarks.spansets import entity_rows

LABELS = ["LOC", "ORG", "PER"]
FAST = replace(TAGGER_RECIPE, max_epochs=2, patience=1)


def spans_of(row: dict) -> list[Span]:
    return [Span(s["start"], s["end"], s["label"]) for s in row["label"]]


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return entity_rows(30, 0, seed=3)


@pytest.fixture(scope="module")
def fitted(minilm, rows):  # type: ignore[no-untyped-def]
    texts = [r["input"] for r in rows]
    return fit_finetune_tagger(minilm, texts, [spans_of(r) for r in rows], LABELS, minilm.token_states(texts), FAST)


def test_trains_and_competes_on_the_held_out_part(fitted) -> None:  # type: ignore[no-untyped-def]
    run = fitted.metrics["finetune"]
    assert run["held_out"] == 6 and fitted.metrics["evaluation"] == "holdout"
    assert [h["epoch"] for h in run["history"]][:2] == [0, 1]
    assert set(fitted.metrics["heads"]) == {"finetune", "tagger", "word-tagger"}
    assert all(0.0 <= v["f1"] <= 1.0 for v in fitted.metrics["heads"].values())
    # training moved the LoRA matrices off their zero start (B starts at 0), unless no epoch beat epoch 0
    moved = max(float(np.abs(v).max()) for k, v in fitted.head.lora.items() if "lora_B" in k)
    assert (moved > 0) == (run["best_epoch"] > 0)
    assert fitted.head.lora and all(k.endswith((".lora_A.weight", ".lora_B.weight")) for k in fitted.head.lora)


def test_predicts_exact_character_offsets(fitted) -> None:  # type: ignore[no-untyped-def]
    test = entity_rows(40, 1, seed=11)  # names never seen in training
    found = fitted.head.predict([r["input"] for r in test])
    assert entity_scores([spans_of(r) for r in test], [[s for s, _ in row] for row in found])["f1"] > 0.5
    text = "Maria Lopez joined Siemens in Lyon."
    (got,) = fitted.head.predict([text])
    assert [(s.start, s.end, s.label) for s, _ in got] == [(0, 11, "PER"), (19, 26, "ORG"), (30, 34, "LOC")]
    assert all(0.0 < score <= 1.0 for _, score in got)


def test_long_text_runs_through_windows(fitted, minilm) -> None:  # type: ignore[no-untyped-def]
    sentence = "Maria Lopez joined Siemens in Lyon. "
    text = sentence * 40  # ~400 tokens: more than one 256-token window
    assert len(minilm.tokenizer(text)["input_ids"]) > minilm.max_length
    (got,) = fitted.head.predict([text])
    tail = [s for s, _ in got if s.start > len(text) // 2]
    assert tail and all(text[s.start : s.end] in {"Maria Lopez", "Siemens", "Lyon"} for s in tail)


def test_round_trips_through_its_bytes(fitted, minilm, rows) -> None:  # type: ignore[no-untyped-def]
    blob = to_bytes(fitted.head, backbone="minilm")
    again = from_bytes(blob)
    assert isinstance(again, FinetuneTagger) and again.source is None
    with pytest.raises(RuntimeError, match="bind"):
        again.predict(["Maria Lopez joined Siemens in Lyon."])
    again.bind(minilm)
    texts = [r["input"] for r in rows[:8]]
    a, _ = fitted.head.log_probs(texts)
    b, _ = again.log_probs(texts)
    assert all(np.allclose(x, y, atol=1e-5) for x, y in zip(a, b, strict=True))
    assert again.resident_nbytes() > 1_000_000  # the merged top layer is held per task


def test_stops_at_its_seconds_bound(minilm, rows) -> None:  # type: ignore[no-untyped-def]
    texts = [r["input"] for r in rows[:10]]
    fit = fit_finetune_tagger(minilm, texts, [spans_of(r) for r in rows[:10]], LABELS, None, FAST, max_seconds=0.0)
    assert fit.metrics["finetune"]["stopped"] == "time" and fit.metrics["finetune"]["best_epoch"] == 0
    assert "tagger" not in fit.metrics["heads"]  # no frozen states given: only the baseline competes
    assert not any("lora_B" in k and np.abs(v).max() > 0 for k, v in fit.head.lora.items())  # epoch 0 served


def test_warnings_say_when_the_finetune_loses() -> None:
    lost = finetune_warnings({"finetune": {"f1": 0.6}, "tagger": {"f1": 0.7}, "word-tagger": {"f1": 0.9}}, 10, 3)
    assert len(lost) == 2 and "did not beat the frozen tagger" in lost[0] and "no-transfer baseline" in lost[1]
    assert finetune_warnings({"finetune": {"f1": 0.9}, "tagger": {"f1": 0.7}, "word-tagger": {"f1": 0.8}}, 10, 3) == []
    assert "not compared" in finetune_warnings({}, 0, 0)[0]
    unchanged = finetune_warnings({"finetune": {"f1": 0.7}, "tagger": {"f1": 0.7}}, 10, 0)
    assert len(unchanged) == 1 and "changed nothing" in unchanged[0]


def test_the_entities_kind_pins_it(minilm, rows) -> None:  # type: ignore[no-untyped-def]
    kind = kind_of("entities")
    assert "finetune" in kind.pinnable_heads
    texts = [r["input"] for r in rows[:12]]
    labels = [r["label"] for r in rows[:12]]
    seen: list[float] = []
    result = kind.fit_tokens(  # type: ignore[attr-defined]
        minilm.token_states(texts),
        texts,
        labels,
        head="finetune",
        folds=5,
        seed=0,
        finetuning=Finetuning(minilm, replace(TAGGER_RECIPE, max_epochs=1, patience=1), progress=seen.append),
    )
    assert result.metrics["head"] == "finetune" and result.metrics["selection"] == "pinned"
    assert result.oof_pred is None and not kind.comparable(result)
    assert seen and seen[-1] == 1.0
    (answer,) = kind.predict_tokens(result.head, ["Ken Sato visited Oslo."], None)  # type: ignore[attr-defined]
    assert set(answer.as_json()) == {"entities"}
    with pytest.raises(ValueError, match="Finetuning"):
        kind.fit_tokens(minilm.token_states(texts), texts, labels, head="finetune", folds=5, seed=0)  # type: ignore[attr-defined]
