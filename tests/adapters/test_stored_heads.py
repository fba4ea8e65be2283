"""Heads stored before the head plumbing moved into ``adapters/heads/base.py`` (``StoredHead``) still load.

``fixtures/stored_heads/`` holds one tiny head of every stored kind as the code of commit a5bfe77 wrote it, and
what each answered then (``fixtures/make_stored_heads.py`` says how they were made). Versions in users'
databases are such blobs: they must restore to the same head, answer the same, and serialise to the same bytes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from adapters import heads
from adapters.heads import HeadFormatError

STORED = Path(__file__).parent / "fixtures" / "stored_heads"
ANSWERS = json.loads((STORED / "answers.json").read_text())
KINDS = {
    "linear": heads.LinearHead,
    "prototype": heads.PrototypeHead,
    "multilabel": heads.MultiLabelHead,
    "ridge": heads.RidgeHead,
    "baseline": heads.BaselineHead,
    "hybrid": heads.HybridHead,
    "finetune": heads.FinetuneHead,
    "baseline-pixels": heads.BaselineHead,
}


def stored(name: str) -> bytes:
    return (STORED / f"{name}.safetensors").read_bytes()


# Heads added after a5bfe77, never stored by its code: each has its own round-trip test.
NEWER = {
    "speaker": "tests/adapters/test_speakers.py",
    "detector": "tests/adapters/test_detection.py",
    "scratch-detector": "tests/adapters/test_detection.py",
    "finetune-detector": "tests/service/test_detection_finetune.py",
}


def test_every_registered_kind_has_a_stored_blob() -> None:
    assert {cls.kind for cls in KINDS.values()} | set(NEWER) == set(heads.REGISTRY)


@pytest.mark.parametrize("name", sorted(KINDS))
def test_a_stored_head_loads_and_serialises_to_the_same_bytes(name: str) -> None:
    blob = stored(name)
    head = heads.from_bytes(blob)
    assert type(head) is KINDS[name]
    meta = heads.read_metadata(blob)
    assert head.labels == meta["labels"] and head.params() == meta["params"]
    assert getattr(head, "backbone", None) == "minilm"
    assert heads.to_bytes(head, **meta["provenance"]) == blob


@pytest.mark.parametrize("name", sorted(ANSWERS))
def test_a_stored_head_answers_what_it_answered_when_stored(name: str) -> None:
    head = heads.from_bytes(stored(name))
    case = ANSWERS[name]
    x = None if case["x"] is None else np.array(case["x"], dtype=np.float32)
    got = heads.predict(head, x, raw=case["raw"])
    expected = np.array(case["answer"])
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_the_regression_head_answers_values_not_probabilities() -> None:
    head = heads.from_bytes(stored("ridge"))
    x = np.array(ANSWERS["ridge"]["x"], dtype=np.float32)
    assert isinstance(head, heads.ValueHead) and not isinstance(heads.from_bytes(stored("linear")), heads.ValueHead)
    assert head.predict_values(x).shape == (len(x),)  # type: ignore[attr-defined]
    with pytest.raises(TypeError, match="predict_values"):
        head.predict_proba(x)


def rewritten(blob: bytes, **changes: np.ndarray | None) -> bytes:
    """``blob`` with some tensors replaced (or dropped, for None); its metadata kept."""
    tensors = {k: v for k, v in {**st_load(blob), **changes}.items() if v is not None}
    return st_save(tensors, metadata={"graft": json.dumps(heads.read_metadata(blob))})


@pytest.mark.parametrize(
    ("name", "changes", "message"),
    [
        ("linear", {"bias": np.zeros(4, np.float32)}, r"'bias' has shape \(4,\), not \(labels\) for its 3 labels"),
        ("linear", {"weight": np.zeros((4, 4), np.float32)}, r"'weight' has shape \(4, 4\), not \(labels, dim\)"),
        ("linear", {"weight": np.zeros(3, np.float32)}, r"'weight' has shape \(3,\)"),
        ("linear", {"weight": np.zeros((3, 4), np.int32)}, r"'weight' is int32, not float32"),
        ("linear", {"bias": None}, r"missing 'bias'"),
        ("hybrid", {"w_features": np.zeros((2, 7), np.float32)}, r"'w_features' has shape \(2, 7\)"),
        ("prototype", {"centroids": np.zeros((2, 4), np.float32)}, r"'centroids' has shape \(2, 4\)"),
        ("multilabel", {"thresholds": np.zeros(3, np.float32)}, r"'thresholds' has shape \(3,\)"),
        ("ridge", {"weight": np.zeros((2, 4), np.float32)}, r"'weight' has shape \(2, 4\), not \(1, dim\)"),
        ("finetune", {"classifier.bias": np.zeros(2, np.float32)}, r"'classifier.bias' has shape \(2,\)"),
    ],
)
def test_stored_arrays_that_do_not_fit_their_head_are_refused(name: str, changes: dict, message: str) -> None:
    with pytest.raises(HeadFormatError, match=message):
        heads.from_bytes(rewritten(stored(name), **changes))


def test_arrays_stored_in_another_float_precision_load_as_stored() -> None:
    blob = stored("linear")
    tensors = st_load(blob)
    head = heads.from_bytes(rewritten(blob, weight=tensors["weight"].astype(np.float64)))
    assert head.tensors()["weight"].dtype == np.float64
    assert np.array_equal(head.tensors()["weight"], tensors["weight"])


def test_a_finetune_head_with_its_split_out_of_range_is_refused() -> None:
    blob = stored("finetune")
    meta = heads.read_metadata(blob)
    meta["params"]["split"] = meta["params"]["n_layers"]
    with pytest.raises(HeadFormatError, match="split point out of range"):
        heads.from_bytes(st_save(st_load(blob), metadata={"graft": json.dumps(meta)}))
