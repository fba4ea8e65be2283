"""Fine-tuning heads on the real MiniLM backbone and BBC News: learning, determinism, storage,
the shared-trunk serving path (mixed batches equal each task's whole model) and ONNX export."""

from __future__ import annotations

import numpy as np
import pytest

from adapters.heads import HEADS, from_bytes, to_bytes
from adapters.heads.finetune import (
    FinetuneConfig,
    FinetunedModel,
    fit_finetune,
    holdout_warnings,
    lr_factor,
    predict_shared,
)
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
    head, _ = fit_finetune(
        text_backbone,
        [r["input"] for r in rows],
        [r["label"] for r in rows],
        FinetuneConfig(layers=2, rank=4, max_epochs=1, patience=1),
        seed=3,
    )
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
    assert head.split == 3 and metrics["finetune"]["split"] == 3  # the default recipe adapts the top 3 layers
    assert metrics["finetune"]["history"][0]["epoch"] == 0 and metrics["finetune"]["held_out"] == 5
    assert (
        any(np.abs(b).max() > 0 for k, b in head.lora.items() if "lora_B" in k)
        or metrics["finetune"]["best_epoch"] == 0
    )


def test_seeded_runs_are_identical(text_backbone, few, fitted):
    again, _ = fit_finetune(text_backbone, *few, FAST, seed=0)
    first = fitted[0].tensors()
    assert sorted(again.tensors()) == sorted(first)
    for key, value in again.tensors().items():
        np.testing.assert_allclose(value, first[key], atol=1e-6, err_msg=key)


def test_stores_only_adapters_and_classifier(text_backbone, fitted, few):
    head = fitted[0]
    blob = to_bytes(head, backbone="minilm")
    assert len(blob) < 800_000  # LoRA (rank 8, three layers: 166k values) + classifier; not the layers' 21 MB
    assert all(k.startswith(("lora.", "classifier.")) for k in head.tensors())
    restored = from_bytes(blob)
    assert not restored.bound
    with pytest.raises(RuntimeError):
        restored.predict_proba(None, raw=few[0][:2])
    restored.bind(text_backbone)
    np.testing.assert_allclose(
        restored.predict_proba(None, raw=few[0][:6]), head.predict_proba(None, raw=few[0][:6]), atol=1e-6
    )
    from service.caching import head_nbytes

    assert head_nbytes(restored) > 3 * 7_000_000  # the merged copies of the layers are what the cache budget counts


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
        assert np.all(mixed[rows, len(head.labels) :] == 0)


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


def test_cached_split_states_reproduce_the_whole_encoder(text_backbone, bbc_test):
    """The training cache (hidden states at the split, unpadded, re-padded per length bucket) run
    through the remaining layers gives the backbone's own embedding of the texts."""
    import torch

    from adapters.heads.finetune import _Cached, _pooled_frozen

    texts = [" ".join(r["input"].split()[: 3 + 17 * (i % 7)]) for i, r in enumerate(bbc_test[:40])]  # mixed lengths
    cache = _Cached(text_backbone, texts, split=4)
    assert [len(h) for h in cache.hidden] == [
        len(t) for t in text_backbone.tokenizer(texts, truncation=True)["input_ids"]
    ]
    np.testing.assert_allclose(_pooled_frozen(text_backbone, cache, 4), text_backbone.embed(texts), atol=1e-5)
    gen = torch.Generator().manual_seed(0)
    rows = np.arange(len(texts))
    bucketed = cache.epoch_batches(rows, 8, gen)
    assert sorted(i for b in bucketed for i in b) == rows.tolist() and all(len(b) <= 8 for b in bucketed)
    plain = cache.epoch_batches(rows, 8, torch.Generator().manual_seed(0), bucket=False)

    def slots(batches: list[list[int]]) -> int:
        return sum(len(b) * int(cache.lengths[b].max()) for b in batches)

    assert slots(bucketed) < slots(plain)  # less padding
    assert bucketed == cache.epoch_batches(rows, 8, torch.Generator().manual_seed(0))  # seeded
    assert bucketed != cache.epoch_batches(rows, 8, gen)  # a new order every epoch


def test_learning_rate_schedule():
    assert [lr_factor(s, 10, 0.0, False) for s in (0, 5, 9)] == [1.0, 1.0, 1.0]
    assert [lr_factor(s, 10, 0.2, False) for s in (0, 1, 2, 9)] == [0.5, 1.0, 1.0, 1.0]
    decayed = [lr_factor(s, 10, 0.2, True) for s in range(10)]
    assert decayed[:2] == [0.5, 1.0] and decayed[2] == 1.0 and decayed[-1] == pytest.approx(1 / 8)
    assert all(a >= b for a, b in zip(decayed[1:], decayed[2:], strict=False))


def test_finetune_is_compared_with_the_cheaper_heads_on_its_held_out_examples(fitted):
    _, metrics = fitted
    compared = metrics["heads"]
    assert set(compared) == {"finetune", "linear", "baseline"}
    history = {h["epoch"]: h["accuracy"] for h in metrics["finetune"]["history"]}
    assert compared["linear"]["accuracy"] == history[0]  # epoch 0: the logistic regression it starts from
    assert compared["finetune"]["accuracy"] == history[metrics["finetune"]["best_epoch"]] == metrics["accuracy"]
    assert metrics["warnings"] == holdout_warnings(
        compared, metrics["finetune"]["held_out"], metrics["finetune"]["best_epoch"]
    )


def test_a_finetune_that_does_not_win_says_so():
    tie = holdout_warnings(
        {"finetune": {"accuracy": 0.9}, "linear": {"accuracy": 0.9}, "baseline": {"accuracy": 0.5}}, 20, 0
    )
    assert (
        len(tie) == 1 and "did not beat the linear head" in tie[0] and "90.0%" in tie[0] and "changed nothing" in tie[0]
    )
    worse = holdout_warnings(
        {"finetune": {"accuracy": 0.8}, "linear": {"accuracy": 0.85}, "baseline": {"accuracy": 0.9}}, 20, 3
    )
    assert len(worse) == 2 and "served as pinned" in worse[0] and "from-scratch baseline" in worse[1]
    assert (
        holdout_warnings(
            {"finetune": {"accuracy": 0.95}, "linear": {"accuracy": 0.9}, "baseline": {"accuracy": 0.9}}, 20, 2
        )
        == []
    )
    assert "Too few examples" in holdout_warnings({}, 0, 3)[0]
