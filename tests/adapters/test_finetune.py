"""Fine-tuning heads on the real MiniLM backbone and BBC News: learning, determinism, storage,
the shared-trunk serving path (mixed batches equal each task's whole model) and ONNX export."""

from __future__ import annotations

import numpy as np
import pytest

from adapters.heads import HEADS, from_bytes, to_bytes
from adapters.heads.finetune import FinetuneConfig, FinetunedModel, fit_finetune, predict_shared
from adapters.heads.linear import LinearHead
from adapters.training import encode_labels
from tests.conftest import per_label

FAST = FinetuneConfig(max_epochs=3, patience=2)


@pytest.fixture(scope="module")
def text_backbone():
    from service.backbones.registry import BUILTIN
    from service.backbones.text import TorchTextBackbone

    return TorchTextBackbone("minilm", BUILTIN["minilm"].source())


@pytest.fixture(scope="module")
def few(bbc_train):
    rows = per_label(bbc_train, 4, seed=1)
    return [r["input"] for r in rows], [r["label"] for r in rows]


@pytest.fixture(scope="module")
def fitted(text_backbone, few):
    return fit_finetune(text_backbone, *few, FAST, seed=0)


@pytest.fixture(scope="module")
def second(text_backbone, bbc_train):
    """Another tenant's task: 3 labels, two adapted layers (a different split point)."""
    rows = [r for r in per_label(bbc_train, 4, seed=2) if r["label"] in {"business", "sports", "tech"}]
    head, _ = fit_finetune(text_backbone, [r["input"] for r in rows], [r["label"] for r in rows],
                           FinetuneConfig(layers=2, rank=4, max_epochs=1, patience=1), seed=3)
    return head


def test_registered_but_not_a_transfer_head():
    from adapters.heads import TRANSFER_HEADS
    from adapters.training import available_heads

    assert HEADS["finetune"].kind == "finetune"
    assert "finetune" not in TRANSFER_HEADS and "finetune" not in available_heads(True, True)


def test_learns_well_above_chance(fitted, bbc_test):
    head, metrics = fitted
    test = bbc_test[:100]
    proba = head.predict_proba(None, raw=[r["input"] for r in test])
    assert proba.shape == (100, 5) and np.allclose(proba.sum(axis=1), 1, atol=1e-5)
    accuracy = np.mean([head.labels[i] == r["label"] for i, r in zip(proba.argmax(axis=1), test, strict=True)])
    assert accuracy >= 0.7, accuracy  # 5 labels: chance is 0.2
    assert head.split == 5 and metrics["finetune"]["split"] == 5
    assert metrics["finetune"]["history"][0]["epoch"] == 0 and metrics["finetune"]["held_out"] == 5
    assert any(np.abs(b).max() > 0 for k, b in head.lora.items() if "lora_B" in k) or metrics["finetune"]["best_epoch"] == 0


def test_seeded_runs_are_identical(text_backbone, few, fitted):
    again, _ = fit_finetune(text_backbone, *few, FAST, seed=0)
    first = fitted[0].tensors()
    assert sorted(again.tensors()) == sorted(first)
    for key, value in again.tensors().items():
        np.testing.assert_allclose(value, first[key], atol=1e-6, err_msg=key)


def test_stores_only_adapters_and_classifier(text_backbone, fitted, few):
    head = fitted[0]
    blob = to_bytes(head, backbone="minilm")
    assert len(blob) < 300_000  # LoRA (rank 8, one layer: 55k values) + classifier; not the 7 MB of the layer
    assert all(k.startswith(("lora.", "classifier.")) for k in head.tensors())
    restored = from_bytes(blob)
    assert not restored.bound
    with pytest.raises(RuntimeError):
        restored.predict_proba(None, raw=few[0][:2])
    restored.bind(text_backbone)
    np.testing.assert_allclose(restored.predict_proba(None, raw=few[0][:6]), head.predict_proba(None, raw=few[0][:6]), atol=1e-6)
    from service.caching import head_nbytes

    assert head_nbytes(restored) > 7_000_000  # the merged copy of one layer is what the cache budget counts


def test_mixed_batch_equals_each_tasks_whole_model(text_backbone, fitted, second, bbc_test):
    import torch

    first = fitted[0]
    texts = [r["input"][: 40 + 60 * (i % 5)] for i, r in enumerate(bbc_test[:12])]  # mixed lengths
    row_heads = [first if i % 3 else second for i in range(len(texts))]
    mixed = predict_shared(text_backbone, texts, row_heads)
    for head in (first, second):
        rows = [i for i, h in enumerate(row_heads) if h is head]
        feeds = text_backbone.feeds(text_backbone._tokenize([texts[i] for i in rows]))
        with torch.no_grad():
            whole = FinetunedModel(text_backbone.model, head)(*(torch.from_numpy(v) for v in feeds.values())).numpy()
        np.testing.assert_allclose(mixed[rows, : len(head.labels)], whole, atol=1e-4)
        assert np.all(mixed[rows, len(head.labels):] == 0)


def test_batcher_serves_finetuned_and_linear_rows_in_one_pass(text_backbone, fitted, second, few, bbc_test):
    from service.batching import Batcher

    classes, y = encode_labels(few[1])
    linear = LinearHead(classes).fit(text_backbone.embed(few[0]), y)
    texts = [r["input"][:300] for r in bbc_test[:9]]
    batcher = Batcher(text_backbone, max_batch=64, max_delay_s=0.05)
    try:
        futures = [batcher.submit(texts[i::3], head=h) for i, h in enumerate((fitted[0], linear, second))]
        got = [f.result(timeout=300) for f in futures]
    finally:
        batcher.close()
    np.testing.assert_allclose(got[0], fitted[0].predict_proba(None, raw=texts[0::3]), atol=1e-4)
    np.testing.assert_allclose(got[1], linear.predict_proba(text_backbone.embed(texts[1::3])), atol=1e-5)
    np.testing.assert_allclose(got[2], second.predict_proba(None, raw=texts[2::3]), atol=1e-4)
    assert got[2].shape == (3, 3)


def test_onnx_export_of_merged_weights_matches_torch(text_backbone, second, bbc_test):
    import onnxruntime as ort

    from adapters.export import PROBABILITIES, finetune_graph

    graph = finetune_graph(second, text_backbone.export_spec())
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    texts = [r["input"][: 50 + 80 * i] for i, r in enumerate(bbc_test[:5])]
    feeds = text_backbone.feeds(text_backbone._tokenize(texts))
    (out,) = session.run([PROBABILITIES], feeds)
    np.testing.assert_allclose(out, second.predict_proba(None, raw=texts), atol=1e-4)


def test_finetune_head_is_never_fused_behind_the_pooled_embedding(second):
    from adapters.export import ExportError, head_graph

    with pytest.raises(ExportError, match="finetune"):
        head_graph(second, 384, 17)
