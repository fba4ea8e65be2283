"""From-scratch baseline and hybrid heads, and the negative-transfer guard, on real BBC News."""

from __future__ import annotations

import numpy as np
import pytest

from adapters import heads
from adapters.heads import HEADS, BaselineHead, HybridHead, MissingInputs
from adapters.training import available_heads, encode_labels, fit_head
from tests.conftest import per_label

TEXTS = [
    "the match ended two nil after extra time",
    "a late goal won the cup final",
    "the striker signed for the club",
    "shares fell as profits missed forecasts",
    "the central bank raised interest rates",
    "quarterly revenue beat estimates",
    "the new phone has a faster chip",
    "software update fixes the security flaw",
    "the laptop battery lasts all day",
]
LABELS = ["sport"] * 3 + ["business"] * 3 + ["tech"] * 3


def fake_embeddings(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_heads_declare_inputs_and_exportability() -> None:
    assert {k: sorted(c.consumes) for k, c in HEADS.items()} == {
        "linear": ["embedding"],
        "prototype": ["embedding"],
        "baseline": ["raw"],
        "hybrid": ["embedding", "raw"],
        "finetune": ["trunk"],
    }
    assert {k for k, c in HEADS.items() if c.exportable} == {"linear", "prototype", "baseline", "hybrid"}
    assert available_heads(True, False) == ["linear", "prototype"]
    assert available_heads(False, True) == ["baseline"]
    assert available_heads(True, True, modality="image") == ["linear", "prototype", "baseline", "hybrid"]
    assert available_heads(True, True, modality="audio") == ["linear", "prototype", "baseline", "hybrid"]  # MFCCs
    assert available_heads(True, True, modality="video") == ["linear", "prototype"]  # no from-scratch features


@pytest.mark.parametrize("kind", ["baseline", "hybrid"])
def test_raw_input_heads_round_trip_exactly(kind: str) -> None:
    x = fake_embeddings(len(TEXTS))
    result = fit_head(kind, x, LABELS, raw=TEXTS, folds=3)
    blob = heads.to_bytes(result.head, backbone="minilm")
    restored = heads.from_bytes(blob)
    assert type(restored) is HEADS[kind] and restored.labels == result.head.labels
    probe = ["the goal came late", "rates and shares", "a chip in the phone", "ünïcode and 日本語 text"]
    xp = fake_embeddings(len(probe), seed=1)
    assert np.array_equal(restored.predict_proba(xp, raw=probe), result.head.predict_proba(xp, raw=probe))
    meta = heads.read_metadata(blob)
    assert meta["params"]["featurizer"] == "tfidf" and "the" in meta["params"]["vocabulary"]
    assert b"pickle" not in blob and not blob[8:].startswith(b"\x80")  # safetensors + JSON only


def test_baseline_learns_from_words_alone() -> None:
    result = fit_head("baseline", None, LABELS, raw=TEXTS, folds=3)
    proba = result.head.predict_proba(
        None, raw=["the cup final goal", "interest rates and profits", "a faster laptop chip"]
    )
    assert [result.head.labels[i] for i in proba.argmax(axis=1)] == ["sport", "business", "tech"]


def test_texts_without_words_fall_back_to_characters() -> None:
    raw = ["!!", "!!!", "??", "???"]
    head = BaselineHead(["a", "b"], c=10).fit(None, np.array([0, 0, 1, 1]), raw=raw)
    restored = heads.from_bytes(heads.to_bytes(head))
    assert np.array_equal(restored.predict_proba(None, raw=["!", "?"]), head.predict_proba(None, raw=["!", "?"]))
    assert restored.predict_proba(None, raw=["!", "?"]).argmax(axis=1).tolist() == [0, 1]


def test_raw_pixel_baseline_on_real_digits() -> None:
    """The image baseline: raw pixels of the 8x8 digits (base64 PNGs as the API receives them)."""
    from tests.conftest import load_jsonl

    train = per_label(load_jsonl("digits.train.jsonl"), 8, seed=1)
    test = load_jsonl("digits.test.jsonl")[:300]
    result = fit_head("baseline", None, [r["label"] for r in train], raw=[r["input"] for r in train], modality="image")
    restored = heads.from_bytes(heads.to_bytes(result.head))
    proba = restored.predict_proba(None, raw=[r["input"] for r in test])
    assert np.array_equal(proba, result.head.predict_proba(None, raw=[r["input"] for r in test]))
    accuracy = np.mean([restored.labels[i] == r["label"] for i, r in zip(proba.argmax(axis=1), test, strict=True)])
    assert accuracy >= 0.8, accuracy  # 10 classes: chance is 0.1


def test_missing_inputs_are_refused_clearly() -> None:
    _, y = encode_labels(LABELS)
    with pytest.raises(MissingInputs, match="raw inputs"):
        BaselineHead(sorted(set(LABELS))).fit(None, y)
    hybrid = HybridHead(sorted(set(LABELS))).fit(fake_embeddings(9), y, raw=TEXTS)
    with pytest.raises(MissingInputs, match="embeddings"):
        hybrid.predict_proba(None, raw=TEXTS)
    with pytest.raises(MissingInputs):
        heads.require(hybrid, fake_embeddings(9), None)


def test_embedding_heads_refuse_missing_embeddings_clearly() -> None:
    """Every head takes ``x=None`` as the Head protocol allows; those that read embeddings say so."""
    _, y = encode_labels(LABELS)
    x = fake_embeddings(9)
    targets = {"multilabel": np.eye(3, dtype=np.int64)[y], "regression": y.astype(np.float64)}
    for kind, cls in {**{k: HEADS[k] for k in ("linear", "prototype")}, **heads.KIND_HEADS}.items():
        head = cls(sorted(set(LABELS)))
        with pytest.raises(MissingInputs, match=f"the {cls.kind!r} head needs backbone embeddings"):
            head.fit(None, targets.get(kind, y))
        head.fit(x, targets.get(kind, y))
        assert heads.predict(head, x).shape[0] == 9  # probabilities, or a regression head's values
        with pytest.raises(MissingInputs, match="needs backbone embeddings"):
            heads.predict(head, None)


def test_every_candidate_is_scored_on_the_same_folds_and_auto_serves_the_best() -> None:
    x = fake_embeddings(len(TEXTS))  # embeddings that carry no signal: words must win
    result = fit_head("auto", x, LABELS, raw=TEXTS, folds=3)
    m = result.metrics
    assert set(m["heads"]) == {"linear", "prototype", "baseline", "hybrid"}
    best = max(h["accuracy"] for h in m["heads"].values())
    assert m["heads"][m["head"]]["accuracy"] >= best - 1 / 9  # the best, up to one example (ties prefer hybrid)
    assert m["heads"]["baseline"]["accuracy"] > m["heads"]["linear"]["accuracy"]
    assert any("did not help" in w for w in m["warnings"])
    assert result.oof_proba is not None and result.oof_proba.shape == (9, 3)
    pinned = fit_head("linear", x, LABELS, raw=TEXTS, folds=3)
    assert pinned.metrics["head"] == "linear" and pinned.metrics["selection"] == "pinned"
    assert any("as pinned" in w for w in pinned.metrics["warnings"])


def test_transfer_wins_with_few_examples(minilm, bbc_train) -> None:
    """8 articles per label: frozen MiniLM features beat TF-IDF from scratch; no warning. (The other
    direction, 64 per label, runs through a real server in tests/integration/test_versions.py.)"""
    rows = per_label(bbc_train, 8, seed=11)
    x = minilm.embed([r["input"] for r in rows])
    m = fit_head("auto", x, [r["label"] for r in rows], raw=[r["input"] for r in rows]).metrics
    assert m["heads"]["linear"]["accuracy"] > m["heads"]["baseline"]["accuracy"]  # 0.95 vs 0.925 on this draw
    assert m["head"] != "baseline" and not any("did not help" in w for w in m["warnings"])
