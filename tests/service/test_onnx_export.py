"""Fusing a backbone export and a head into one ONNX graph (adapters/export.py)."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from adapters.export import MANIFEST_FILE, MODEL_FILE, ExportError, bundle, fuse
from adapters.heads import HEADS, RAW
from adapters.training import encode_labels
from tests.conftest import per_label


@pytest.mark.parametrize("kind", sorted(k for k, cls in HEADS.items() if RAW in cls.consumes))
def test_heads_that_read_raw_inputs_are_refused(kind) -> None:
    """baseline/hybrid need the raw texts (TF-IDF), which a graph on input_ids cannot see."""
    from adapters.export import head_graph

    head = HEADS[kind](["a", "b"]).fit(np.eye(2, dtype=np.float32), np.array([0, 1]), raw=["x y", "z w"])
    with pytest.raises(ExportError, match=kind):
        head_graph(head, 2, 17)


@pytest.mark.parametrize("kind", sorted(k for k, cls in HEADS.items() if cls.exportable))
@pytest.mark.parametrize("variant", ["onnx_fp32", "onnx_int8"])
def test_fused_graph_equals_backbone_then_head(kind, variant, request, bbc_train, bbc_test) -> None:
    backbone = request.getfixturevalue(variant)
    train = per_label(bbc_train, 2, seed=2)
    classes, y = encode_labels([r["label"] for r in train])
    head = HEADS[kind](classes).fit(backbone.embed([r["input"] for r in train]), y)
    texts = [r["input"] for r in bbc_test[:4]] + ["short text", "Ünïcödé"]
    expected = head.predict_proba(backbone.embed(texts))

    fused = fuse(onnx.load(str(backbone.model_path)), head)
    session = ort.InferenceSession(fused.SerializeToString(), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask"]
    assert [o.name for o in session.get_outputs()] == ["probabilities"]
    got = np.empty_like(expected)
    for idx, feeds in backbone.origin.batches(texts, backbone.per_call):
        got[idx] = session.run(None, feeds)[0]
    assert np.abs(got - expected).max() <= 1e-5
    assert json.loads({p.key: p.value for p in fused.metadata_props}["labels"]) == classes


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
