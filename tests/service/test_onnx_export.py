"""Fusing a backbone export and a head into one ONNX graph (adapters/export.py)."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from adapters import heads, raw_inputs
from adapters.export import MANIFEST_FILE, MODEL_FILE, TOKENS, ExportError, bundle, fuse
from adapters.heads import HEADS, KIND_HEADS
from adapters.training import encode_labels
from tests.conftest import per_label

ODD = ["", "!!! ???", "Ünïcödé: le café résumé 🙂", "東京 株式", "x"]  # odd texts next to real articles


def run_fused(session: ort.InferenceSession, backbone, texts: list[str]) -> np.ndarray:
    """What a bare consumer runs: the backbone's tokenizer feeds and/or the shipped pre-tokenisation."""
    names = [i.name for i in session.get_inputs()]
    rows = []
    for idx, feeds in backbone.origin.batches(texts, backbone.per_call):
        feeds = {k: v for k, v in feeds.items() if k in names}
        if TOKENS in names:
            feeds[TOKENS] = raw_inputs.tokens([texts[i] for i in idx])
        rows.append((idx, session.run(None, feeds)[0]))
    out = np.empty((len(texts), *rows[0][1].shape[1:]), dtype=np.float32)
    for idx, part in rows:
        out[idx] = part
    return out


@pytest.mark.parametrize("kind", sorted(k for k, cls in HEADS.items() if cls.exportable))
@pytest.mark.parametrize("variant", ["onnx_fp32", "onnx_int8"])
def test_fused_graph_equals_backbone_then_head(kind, variant, request, bbc_train, bbc_test) -> None:
    backbone = request.getfixturevalue(variant)
    train = per_label(bbc_train, 2, seed=2)
    classes, y = encode_labels([r["label"] for r in train])
    raw = [r["input"] for r in train]
    head = heads.from_bytes(heads.to_bytes(HEADS[kind](classes).fit(backbone.embed(raw), y, raw=raw)))
    texts = [r["input"] for r in bbc_test[:4]] + ["short text", *ODD]
    expected = head.predict_proba(backbone.embed(texts), raw=texts)

    fused = fuse(onnx.load(str(backbone.model_path)), head)
    session = ort.InferenceSession(fused.SerializeToString(), providers=["CPUExecutionProvider"])
    inputs = {"baseline": [TOKENS], "hybrid": ["input_ids", "attention_mask", TOKENS]}.get(
        kind, ["input_ids", "attention_mask"]
    )
    assert [i.name for i in session.get_inputs()] == inputs
    assert [o.name for o in session.get_outputs()] == ["probabilities"]
    got = run_fused(session, backbone, texts)
    assert np.abs(got - expected).max() <= 1e-5
    assert got.argmax(axis=1).tolist() == expected.argmax(axis=1).tolist()
    assert json.loads({p.key: p.value for p in fused.metadata_props}["labels"]) == classes


def test_multilabel_and_regression_graphs(onnx_fp32, bbc_train, bbc_test) -> None:
    """Multi-label: each label's sigmoid (thresholds stay in the manifest); regression: ``value`` (batch,)."""
    train = per_label(bbc_train, 4, seed=6)
    x = onnx_fp32.embed([r["input"] for r in train])
    classes = sorted({r["label"] for r in train})
    indicator = np.array(
        [[r["label"] == c or (c == classes[0] and i % 3 == 0) for c in classes] for i, r in enumerate(train)]
    )
    texts = [r["input"] for r in bbc_test[:6]] + ODD
    z = onnx_fp32.embed(texts)
    for head, output in [
        (KIND_HEADS["multilabel"](classes).fit(x, indicator.astype(int)), "probabilities"),
        (KIND_HEADS["regression"]().fit(x, np.array([len(r["input"]) / 1000 for r in train])), "value"),
    ]:
        head = heads.from_bytes(heads.to_bytes(head))
        session = ort.InferenceSession(
            fuse(onnx.load(str(onnx_fp32.model_path)), head).SerializeToString(), providers=["CPUExecutionProvider"]
        )
        assert [o.name for o in session.get_outputs()] == [output]
        got = run_fused(session, onnx_fp32, texts)
        expected = heads.predict(head, z)  # a regression head's values (n,)
        assert got.shape == expected.shape and np.abs(got - expected).max() <= 1e-4


def test_finetune_heads_are_refused_by_head_graph() -> None:
    from adapters.export import head_graph

    class Finetuned:
        kind = "finetune"
        labels = ["a", "b"]

    with pytest.raises(ExportError, match="finetune_graph"):
        head_graph(Finetuned(), 2, 17)


def test_a_head_without_a_torch_form_is_refused(onnx_fp32) -> None:
    class Opaque:
        kind = "opaque"
        labels = ["a", "b"]

    with pytest.raises(ExportError, match="'opaque' have no ONNX form"):
        fuse(onnx.load(str(onnx_fp32.model_path)), Opaque())  # type: ignore[arg-type]


def test_bundle_layout(onnx_fp32) -> None:
    fused = onnx.load(str(onnx_fp32.model_path))
    data = bundle(fused, onnx_fp32.preprocessing_files(), {"labels": ["a"]})
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert {MODEL_FILE, MANIFEST_FILE, "tokenizer.json", "vocab.txt"} <= set(zf.namelist())
        assert zf.getinfo(MODEL_FILE).compress_type == zipfile.ZIP_STORED
        tokenizer = json.loads(zf.read("tokenizer.json"))
    assert tokenizer["truncation"]["max_length"] == 256 and tokenizer["padding"] is not None
