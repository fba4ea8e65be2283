"""The fine-tuning recipe's measured variants (docs/finetune.md): full fine-tuning stored as exact LoRA-format
deltas, layer-wise learning-rate decay, the warm start's C by cross-validation and the contrastive stage."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from adapters.encoding import encode_labels
from adapters.heads.finetune import (
    LINEAR_C_GRID,
    FinetuneConfig,
    FinetuneHead,
    _Cached,
    _contrastive,
    _Trainable,
    cv_c,
    encoder_layers,
    fit_finetune,
)
from adapters.training import GRIDS
from tests.conftest import per_label

ONE_EPOCH = FinetuneConfig(max_epochs=1, patience=1, refit=False)


@pytest.fixture(scope="module")
def text_backbone():
    from service.backbones.registry import BUILTIN
    from service.backbones.text import TorchTextBackbone

    return TorchTextBackbone("minilm", BUILTIN["minilm"].source())


@pytest.fixture(scope="module")
def few(bbc_train):
    rows = per_label(bbc_train, 4, seed=1)
    return [r["input"] for r in rows], [r["label"] for r in rows]


def test_full_finetuning_is_stored_as_exact_deltas(text_backbone, few):
    """Trained projection weights come back exactly from the stored factors, through the head's own merge."""
    model = text_backbone.model
    n = len(encoder_layers(model))
    cfg = replace(FinetuneConfig(), full=True, layers=2)
    net = _Trainable(model, n - 2, cfg, np.zeros((5, 384), np.float32), np.zeros(5, np.float32))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _, p in net.adapted_parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=gen))
    trained = {k: v.detach().clone() for k, v in net.layer.state_dict().items()}
    assert not any("lora_" in k for k in trained)  # no LoRA injected
    head = FinetuneHead(["a"] * 5, n - 2, n, cfg.rank, cfg.alpha, lora=net.lora_state()).bind(text_backbone)
    assert head.layers is not None
    changed = 0
    for key, value in head.layers.state_dict().items():
        assert torch.allclose(value, trained[key], atol=1e-5), key
        changed += int(not torch.equal(value, encoder_layers(model)[n - 2 :].state_dict()[key].float()))
    assert changed == 2 * 6  # every projection of both layers moved; nothing else did


def test_layer_decay_zero_trains_only_the_top_layer(text_backbone, few):
    head, _ = fit_finetune(text_backbone, *few, replace(ONE_EPOCH, layers=2, layer_decay=0.0), seed=0)
    moved = {k.split(".", 1)[0] for k, b in head.lora.items() if "lora_B" in k and np.abs(b).max() > 0}
    assert moved == {"1"}  # layer 1 of the two adapted ones is the top; layer 0 kept its zero-initialised B


def test_warm_start_c_by_cross_validation():
    assert LINEAR_C_GRID == tuple(g["c"] for g in GRIDS["linear"])  # the same grid as the linear head's
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16))
    y = np.repeat(np.arange(3), 10)
    x = centres[y] + 0.3 * rng.normal(size=(30, 16))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    assert cv_c(x, y, seed=0) in LINEAR_C_GRID
    # one example in a label: no CV possible, the grid's middle
    assert cv_c(x[:21], np.r_[y[:20], 2], seed=0) == LINEAR_C_GRID[len(LINEAR_C_GRID) // 2]


def test_contrastive_stage_pulls_same_label_examples_together(text_backbone, few):
    texts, labels = few
    _, y = encode_labels(labels)
    model = text_backbone.model
    split = len(encoder_layers(model)) - 1
    cache = _Cached(text_backbone, texts, split)
    cfg = replace(FinetuneConfig(), layers=1, lr=3e-3, contrastive_epochs=10)
    net = _Trainable(model, split, cfg, np.zeros((5, 384), np.float32), np.zeros(5, np.float32))
    rows = np.arange(len(texts))

    def gap() -> float:
        with torch.no_grad():
            emb = net.embed(*cache.batch(rows.tolist()))
        sim = (emb @ emb.T).numpy()
        same = y[:, None] == y[None, :]
        off = ~np.eye(len(y), dtype=bool)
        return float(sim[same & off].mean() - sim[~same].mean())

    before = gap()
    _contrastive(net, cache, y, rows, cfg, torch.Generator().manual_seed(0), None)
    after = gap()
    assert after > before + 0.05, (before, after)
