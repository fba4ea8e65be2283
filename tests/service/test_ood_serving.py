"""OOD scores served per prediction: stored with the version's head, computed on the embeddings of the
shared backbone pass (never a second one), on real MiniLM embeddings of BBC News against Python docs."""

from __future__ import annotations

import asyncio
import inspect
import json
import zipfile

import numpy as np
import pytest
from prometheus_client import REGISTRY

from adapters import heads, kinds
from adapters.heads import LinearHead
from adapters.ood import fit_ood
from benchmarks.multitenant import install
from service.batching import Batcher
from service.caching import HeadCache, head_nbytes
from service.engine.prediction_ids import BadPredictionId, read_id
from service.router import Router, store_head_loader
from service.store.repository import Store
from tests.conftest import per_label

FOREIGN = [
    inspect.getdoc(obj) or ""
    for obj in (json.dumps, json.loads, zipfile.ZipFile, inspect.signature, np.linalg.eigh, pytest.raises)
]


def flagged_total() -> float:
    return REGISTRY.get_sample_value("graft_ood_flagged_total", {"kind": "classification"}) or 0.0


class Counting:
    """A backbone that counts the inputs it embeds (to show OOD scoring runs no second pass)."""

    def __init__(self, inner) -> None:
        self.inner, self.embedded = inner, 0
        self.name, self.dim, self.modality = inner.name, inner.dim, inner.modality
        self.revision, self.runtime = inner.revision, inner.runtime

    def embed(self, texts):
        self.embedded += len(texts)
        return self.inner.embed(texts)


@pytest.fixture(scope="module")
def news(minilm, bbc_train):
    rows = per_label(bbc_train, 16, seed=3)
    x = minilm.embed([r["input"][:600] for r in rows])
    labels = [r["label"] for r in rows]
    topics = sorted(set(labels))
    head = LinearHead(topics).fit(x, np.array([topics.index(label) for label in labels]))
    groups = kinds.kind_of("classification").ood_groups(labels)
    return head, fit_ood(x, groups, fpr=0.05)


@pytest.fixture
def served(tmp_path, minilm, news):
    head, ood = news
    store = Store(f"sqlite:///{tmp_path / 'graft.db'}")
    store.create_schema()
    tenant, _ = store.create_tenant("acme")
    task_id, _ = install(store, tenant.id, "news", head, minilm, ood=ood)
    install(store, tenant.id, "old", head, minilm)  # a version trained before OOD models: no stats
    backbone = Counting(minilm)
    batcher = Batcher(backbone, max_batch=16, max_delay_s=0.002)
    router = Router(store, lambda _: batcher, HeadCache(store_head_loader(store), 10**8))
    yield router, tenant.id, backbone, task_id
    batcher.close()
    store.close()


def test_blob_round_trip_carries_the_ood_model_and_the_cache_counts_it(news) -> None:
    head, ood = news
    again = heads.from_bytes(heads.to_bytes(head, ood=ood))
    model = heads.ood_of(again)
    assert model is not None and model.threshold == ood.threshold and np.array_equal(model.whiten, ood.whiten)
    assert heads.ood_of(heads.from_bytes(heads.to_bytes(head))) is None
    assert head_nbytes(again) - head_nbytes(head) == ood.whiten.nbytes + ood.means.nbytes + 16
    broken = heads.to_bytes(head, ood=ood)
    from safetensors.numpy import load, save

    tensors = load(broken)
    del tensors["ood.whiten"]
    meta = json.dumps({"kind": head.kind, "labels": head.labels, "params": head.params(), "provenance": {}})
    with pytest.raises(heads.HeadFormatError, match="OOD"):
        heads.from_bytes(save(tensors, metadata={"graft": meta}))


def test_predictions_carry_ood_flags_from_the_same_pass(served, bbc_test, minilm, news) -> None:
    router, tenant, backbone, task_id = served
    in_domain = [r["input"][:600] for r in bbc_test[:40]]
    inputs = in_domain + FOREIGN
    flagged_before = flagged_total()

    async def go():
        return await router.predict(tenant, "news", inputs)

    ref, version, predictions = asyncio.run(go())
    assert backbone.embedded == len(inputs)  # one backbone pass per input: the scores reuse its embeddings
    answers = [p.as_json() for p in predictions]
    assert all({"id", "label", "ood", "ood_score"} <= set(a) for a in answers)
    expected = news[1].score(minilm.embed(inputs))
    assert np.allclose([a["ood_score"] for a in answers], expected, rtol=1e-3)
    assert all(a["ood"] == (a["ood_score"] > 1.0) for a in answers)
    assert np.mean([a["ood"] for a in answers[:40]]) <= 0.15
    assert all(a["ood"] for a in answers[40:])
    flagged = sum(a["ood"] for a in answers)
    assert flagged_total() - flagged_before == flagged
    # ids: distinct, and each records the version and its answer for feedback
    assert len({a["id"] for a in answers}) == len(answers)
    recorded = read_id(task_id, answers[0]["id"])
    assert (recorded.version, recorded.answer) == (version, answers[0]["label"])
    with pytest.raises(BadPredictionId, match="another task"):
        read_id("some-other-task", answers[0]["id"])


def test_a_version_without_ood_stats_omits_the_fields(served, bbc_test) -> None:
    router, tenant, _, _ = served
    _, _, predictions = asyncio.run(router.predict(tenant, "old", [bbc_test[0]["input"][:300]]))
    answer = predictions[0].as_json()
    assert "ood" not in answer and "ood_score" not in answer and answer["id"]
