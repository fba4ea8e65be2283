"""OOD scores served per prediction: stored with the version's head, computed on the embeddings of the
shared backbone pass (never a second one), on real MiniLM embeddings of BBC News against Python docs; and
the suggest use case (active learning) on the same pass."""

from __future__ import annotations

import asyncio
import inspect
import json
import zipfile
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import pytest
from prometheus_client import REGISTRY

from adapters import heads, kinds
from adapters.heads import LinearHead
from adapters.ood import fit_ood
from benchmarks.multitenant import install
from service.application.errors import Invalid, TooLarge
from service.application.feedback import Item, monitoring, record
from service.application.suggest import check_pool, suggest
from service.batching import Batcher
from service.caching import HeadCache, head_nbytes
from service.config import Settings
from service.engine.prediction_ids import BadPredictionId, read_id
from service.ratelimit import RateLimited, RateLimiter
from service.router import Router, store_head_loader
from service.runtime import Runtime
from service.store.repository import NotFound, Store
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
    rows = per_label(bbc_train, 12, seed=3)
    x = minilm.embed([r["input"][:400] for r in rows])
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
    in_domain = [r["input"][:400] for r in bbc_test[:30]]
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
    assert np.mean([a["ood"] for a in answers[:30]]) <= 0.15
    assert all(a["ood"] for a in answers[30:])
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


def runtime(router: Router, **settings) -> Runtime:
    """What the suggest use case reads of the runtime: settings, the predict rate and the router."""
    s = Settings.from_env({}, **settings)
    return cast(Runtime, SimpleNamespace(settings=s, predict_rate=RateLimiter(1.0, 50), router=router))


def test_suggest_checks_the_pool_then_takes_one_rate_token_per_input(served) -> None:
    router, tenant, _, _ = served
    rt = runtime(router, max_suggest_inputs=30)
    with pytest.raises(TooLarge, match="31 inputs in one suggest request; the limit is 30"):
        check_pool(rt, tenant, 31, 5)
    with pytest.raises(Invalid, match=r"k must be between 1 and the pool's size \(4\), got 5"):
        check_pool(rt, tenant, 4, 5)
    check_pool(rt, tenant, 30, 5)
    with pytest.raises(RateLimited):  # 30 of the 50 tokens spent: 30 more are refused
        check_pool(rt, tenant, 30, 5)


def test_suggestions_are_distinct_uncertain_and_from_one_backbone_pass(served, bbc_test) -> None:
    router, tenant, backbone, _ = served
    pool = [r["input"][:300] for r in bbc_test[:40]]
    pool += [pool[0]] * 5  # exact duplicates: at most one of them is worth labelling
    rt = runtime(router)
    ref, version, indices, scores = asyncio.run(suggest(rt, tenant, "news", pool, [""] * len(pool), 10))
    assert backbone.embedded == len(pool)
    assert version == ref.active_version and len(indices) == 10 == len(set(indices))
    assert all(0 <= i < len(pool) for i in indices) and all(0.0 <= x <= 1.0 for x in scores)
    assert len({pool[i] for i in indices}) == 10  # no duplicate text chosen twice
    # the chosen are among the most uncertain inputs of the pool (margin of the active head)
    _, _, predictions = asyncio.run(router.predict(tenant, "news", pool))
    margins = []
    for p in predictions:
        top = sorted(p.prediction.scores.values(), reverse=True)
        margins.append(1.0 - (top[0] - top[1]))
    assert np.allclose(scores, [margins[i] for i in indices], atol=1e-4)
    assert min(scores) >= np.quantile(margins, 0.25)


def test_feedback_by_id_and_by_input_then_monitoring(served, bbc_test) -> None:
    router, tenant, _, _ = served
    rt = runtime(router)
    cast(Any, rt).store = router.store
    test = bbc_test[200:210]
    texts = [r["input"][:300] for r in test]
    _, version, predictions = asyncio.run(router.predict(tenant, "news", texts + FOREIGN[:2]))
    answers = [p.as_json() for p in predictions]
    items = [Item(label=r["label"], id=a["id"]) for a, r in zip(answers[:10], test, strict=True)]
    items.append(Item(label="tech", input=texts[0]))  # no id: the active version predicts it now
    done = asyncio.run(record(rt, tenant, "news", items))
    assert done.task.name == "news" and done.kept == len(items) and done.retrain is None
    with pytest.raises(Invalid, match=r"items\[0\].label: a classification task takes one label string"):
        asyncio.run(record(rt, tenant, "news", [Item(label=["tech"], id=answers[0]["id"])]))
    with pytest.raises(Invalid, match=r"items\[0\]: send the prediction's 'id', or the 'input' itself"):
        asyncio.run(record(rt, tenant, "news", [Item(label="tech")]))
    with pytest.raises(Invalid, match="issued by another task"):
        _, _, old = asyncio.run(router.predict(tenant, "old", texts[:1]))
        asyncio.run(record(rt, tenant, "news", [Item(label="tech", id=old[0].id)]))

    report = monitoring(rt, tenant, "news")
    right = [a["label"] == r["label"] for a, r in zip(answers[:10], test, strict=True)]
    right.append(answers[0]["label"] == "tech")
    assert report["active_version"] == version and report["feedback"]["count"] == len(items)
    assert report["feedback"]["accuracy"] == pytest.approx(sum(right) / len(right))
    flagged_sent = sum(a["ood"] for a in answers[:10]) + int(answers[0]["ood"])
    assert report["feedback"]["ood_flagged"] == flagged_sent
    ood = report["ood"]  # this router's window: the 12 predictions and the one made for feedback
    assert ood["scored"] == len(answers) + 1 and ood["expected_rate"] == 0.05
    assert ood["flagged"] == sum(a["ood"] for a in answers) + int(answers[0]["ood"])
    assert [v["version"] for v in report["per_version"]] == [version]
    with pytest.raises(NotFound):
        monitoring(rt, "another-tenant", "news")
