"""ONNX Runtime backbones: exactness of fp32, accuracy of int8, the export cache, runtime selection."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from adapters.training import fit_head
from service.backbones.onnx_cache import MANIFEST, MODEL, OnnxCache
from service.backbones.registry import BUILTIN, Registry
from service.backbones.runtimes import AUTO, RuntimeConfig, parse_setting
from tests.conftest import per_label


def varied_texts(bbc_test: list[dict]) -> list[str]:
    return [
        "short",
        "Ünïcödé — 日本語のテキスト, émojis 🙂 and Ελληνικά",
        bbc_test[0]["input"],  # a full article: truncated at 256 tokens
        "word " * 2000,
        *[r["input"][:300] for r in bbc_test[1:5]],
    ]


def test_fp32_onnx_matches_torch(minilm, onnx_fp32, bbc_test) -> None:
    texts = varied_texts(bbc_test)
    reference = minilm.embed(texts)
    mixed = onnx_fp32.embed(texts)  # one mixed-length, padded batch
    assert onnx_fp32.per_call == minilm.micro_batch and mixed.shape == reference.shape
    assert np.abs(mixed - reference).max() <= 1e-4
    alone = np.concatenate([onnx_fp32.embed([t]) for t in texts])  # no padding at all
    assert np.abs(alone - reference).max() <= 1e-4
    assert onnx_fp32.runtime == "onnx" and onnx_fp32.revision == minilm.revision and onnx_fp32.dim == 384


def test_int8_close_to_fp32_and_predicts_the_same_labels(onnx_fp32, onnx_int8, bbc_train, bbc_test) -> None:
    """Each pipeline trains its head on its own embeddings (as Graft does: heads are trained on the
    serving runtime's embeddings) and predicts the test articles.

    Test set: a stratified 200-article subset (40 per label) of the BBC test split, not all 1,000:
    embedding the full split at 256 tokens costs over a minute on 2 cores per variant, and 200
    resolves agreement to 0.5 pt, enough to check >= 98 %. The full split is measured by
    benchmarks/backbones.py (docs/onnx.md)."""
    train = per_label(bbc_train, 16, seed=0)
    test = per_label(bbc_test, 40, seed=1)
    labels = [r["label"] for r in train]
    predictions = {}
    test_vectors = {}
    for name, backbone in (("fp32", onnx_fp32), ("int8", onnx_int8)):
        head = fit_head("linear", backbone.embed([r["input"] for r in train]), labels).head
        test_vectors[name] = backbone.embed([r["input"] for r in test])
        predictions[name] = head.predict_proba(test_vectors[name]).argmax(axis=1)
    cosine = np.sum(test_vectors["fp32"] * test_vectors["int8"], axis=1)
    assert cosine.mean() >= 0.98, cosine.mean()
    agreement = np.mean(predictions["fp32"] == predictions["int8"])
    assert agreement >= 0.98, agreement


def test_int8_results_do_not_depend_on_the_batch(onnx_int8, bbc_test) -> None:
    """Activation scales are per call: Graft runs int8 one input per call, so a tenant's embedding
    never depends on what else shares its batch."""
    texts = varied_texts(bbc_test)
    together = onnx_int8.embed(texts)
    alone = np.concatenate([onnx_int8.embed([t]) for t in texts])
    assert np.array_equal(together, alone)
    assert np.allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    assert onnx_int8.embed([]).shape == (0, 384)


# -- the export cache ---------------------------------------------------------------------


@pytest.fixture
def cache_copy(onnx_fp32, onnx_cache_dir, tmp_path):
    """A private copy of the session's built fp32 entry, to damage."""
    cache = OnnxCache(tmp_path / "cache")
    src = OnnxCache(onnx_cache_dir).entry(onnx_fp32.origin, "onnx")
    shutil.copytree(src, cache.entry(onnx_fp32.origin, "onnx"))
    return cache


def test_corrupt_export_is_detected_and_rebuilt(cache_copy, onnx_fp32, minilm, caplog) -> None:
    entry = cache_copy.entry(minilm, "onnx")
    identity = cache_copy.identity(minilm, "onnx")
    assert cache_copy.problem(entry, identity) is None
    model = entry / MODEL
    with model.open("r+b") as fh:  # flip bytes in the middle of the weights, size unchanged
        fh.seek(model.stat().st_size // 2)
        chunk = fh.read(64)
        fh.seek(-64, 1)
        fh.write(bytes(b ^ 0xFF for b in chunk))
    assert cache_copy.problem(entry, identity) == "model file does not match its checksum"

    path = cache_copy.path(minilm, "onnx")
    assert any(getattr(r, "reason", None) == "model file does not match its checksum" for r in caplog.records)
    assert cache_copy.problem(entry, identity) is None
    rebuilt = RuntimeConfig("onnx", cache_copy.root).wrap(minilm, "onnx")
    assert rebuilt.model_path == path
    texts = ["the rebuilt export embeds like the original", "short"]
    assert np.abs(rebuilt.embed(texts) - onnx_fp32.embed(texts)).max() <= 1e-5


def test_truncated_or_stale_export_is_rebuilt_and_a_new_revision_gets_its_own_entry(cache_copy, minilm) -> None:
    entry = cache_copy.entry(minilm, "onnx")
    identity = cache_copy.identity(minilm, "onnx")
    model = entry / MODEL
    with model.open("r+b") as fh:
        fh.truncate(model.stat().st_size - 10)
    assert "bytes" in cache_copy.problem(entry, identity)

    manifest = json.loads((entry / MANIFEST).read_text())  # a file built for other weights
    manifest["revision"] = "sha256:0000000000000000"
    (entry / MANIFEST).write_text(json.dumps(manifest))
    assert cache_copy.problem(entry, identity).startswith("stale")
    cache_copy.path(minilm, "onnx")
    assert json.loads((entry / MANIFEST).read_text())["revision"] == minilm.revision
    assert cache_copy.problem(entry, identity) is None

    class Retrained:  # same backbone name, changed weights
        name, revision = minilm.name, "sha256:ffffffffffffffff"

    assert cache_copy.entry(Retrained, "onnx") != entry  # type: ignore[arg-type]


# -- runtime selection ----------------------------------------------------------------------


def test_runtime_setting() -> None:
    assert parse_setting("") == {"": "auto"}
    assert parse_setting("onnx-int8") == {"": "onnx-int8"}
    assert parse_setting("auto, mpnet=torch") == {"": "auto", "mpnet": "torch"}
    for bad in ("onnx-int4", "mpnet=fast", "=onnx"):
        with pytest.raises(ValueError):
            parse_setting(bad)
    config = RuntimeConfig("auto,other=onnx")
    assert config.choose("minilm", "text", "cpu") == AUTO[("text", "cpu")] == "onnx-int8"
    assert config.choose("other", "text", "cpu") == "onnx"
    assert config.choose("minilm", "image", "cpu") == "onnx"
    assert config.choose("minilm", "text", "cuda") == "onnx-fp16" and config.choose("minilm", "image", "cuda") == "onnx"
    with pytest.raises(ValueError, match="needs CUDA"):
        RuntimeConfig("onnx-fp16").choose("minilm", "text", "cpu")
    assert (
        RuntimeConfig.torch_runtime("onnx-int8") == "torch"
        and RuntimeConfig.torch_runtime("torch-bf16") == "torch-bf16"
    )


def test_registry_loads_the_configured_runtime(onnx_cache_dir, onnx_fp32) -> None:
    registry = Registry({"minilm": BUILTIN["minilm"]}, "cpu", runtimes=RuntimeConfig("onnx-int8", onnx_cache_dir))
    backbone = registry.load("minilm")
    assert backbone.runtime == "onnx-int8" and backbone.device == "cpu"
    assert registry.exportable("minilm") is backbone.origin
    assert registry.onnx_file("minilm", "onnx") == onnx_fp32.model_path
    assert backbone.session.get_session_options().intra_op_num_threads >= 1


def test_torch_bf16_runtime_is_close_to_fp32(minilm, bbc_test) -> None:
    from service.backbones.text import TorchTextBackbone

    bf16 = TorchTextBackbone("minilm", minilm.source, runtime="torch-bf16")
    texts = varied_texts(bbc_test)
    assert bf16.runtime == "torch-bf16"
    assert np.sum(bf16.embed(texts) * minilm.embed(texts), axis=1).min() >= 0.99


def test_auto_falls_back_to_torch_when_onnxruntime_cannot_serve(monkeypatch, tmp_path) -> None:
    """Under `auto` (e.g. onnx-fp16 on a GPU whose onnxruntime lacks the CUDA provider) the backbone
    still serves, on torch; an explicitly configured ONNX runtime fails loudly instead."""
    from service.backbones import onnx_runtime
    from service.backbones.onnx_runtime import OrtUnavailable
    from service.backbones.registry import BUILTIN, Registry
    from service.backbones.runtimes import RuntimeConfig

    def unavailable(device: str):
        raise OrtUnavailable("no usable execution provider here")

    monkeypatch.setattr(onnx_runtime, "providers", unavailable)
    backbone = Registry({"minilm": BUILTIN["minilm"]}, "cpu", runtimes=RuntimeConfig("auto", tmp_path)).load("minilm")
    assert backbone.runtime == "torch" and backbone.embed(["still serves"]).shape == (1, 384)
    with pytest.raises(OrtUnavailable):
        Registry({"minilm": BUILTIN["minilm"]}, "cpu", runtimes=RuntimeConfig("onnx", tmp_path)).load("minilm")
