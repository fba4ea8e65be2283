"""Closing the loop (docs/monitoring.md): feedback copied into examples (flagged ``source = "feedback"``),
the retrain policy, shadow versions (answers recorded on the active version's embeddings, never a second
backbone pass) with their agreement and feedback accounting, and drift windows. The store parts run on
SQLite and PostgreSQL; the router parts on real MiniLM embeddings of BBC News."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import pytest
from sqlalchemy import func, select, update

from adapters import heads, kinds
from adapters.heads import LinearHead
from benchmarks.multitenant import install
from service import metrics
from service.application import loop
from service.application.feedback import Item, drift, monitoring, record, shadow_report
from service.application.quotas import QuotaExceeded
from service.batching import Batcher
from service.caching import HeadCache
from service.config import Settings
from service.engine.shadow import ShadowLog
from service.ratelimit import RateLimiter
from service.router import Router, store_head_loader
from service.runtime import Runtime
from service.store.models import Example, Feedback, ShadowPrediction, utcnow
from service.store.repository import (
    Conflict,
    NewFeedback,
    NewShadow,
    NotFound,
    ShadowCounts,
    ShadowFeedback,
    Store,
)
from tests.conftest import per_label
from tests.service.test_ood_serving import FOREIGN, Counting, news  # noqa: F401  (the module-scoped fixture)
from tests.service.test_store import new_version

EXAMPLES = [("good", "pos"), ("great", "pos"), ("bad", "neg"), ("awful", "neg")]


def runtime(store: Store, router: Any = None, **settings: Any) -> Runtime:
    """What the loop use cases read of the runtime: settings, store, router, the job runner's wake-up."""
    notified: list[int] = []
    rt = SimpleNamespace(
        settings=Settings.from_env({}, **settings),
        store=store,
        router=router or SimpleNamespace(shadow_log=None),
        predict_rate=RateLimiter(1000.0, 10_000),
        jobs=SimpleNamespace(notify=lambda: notified.append(1), notified=notified),
    )
    return cast(Runtime, rt)


def labelled(n: int, version: int = 1, label: str = "pos") -> list[NewFeedback]:
    return [NewFeedback(version, "pos", label, input=f"feedback text {i}") for i in range(n)]


# -- feedback into examples, and the retrain policy ------------------------------------------------


def test_promoted_feedback_becomes_examples_flagged_as_such_once(store: Store) -> None:
    acme, _ = store.create_tenant("acme")
    bob, _ = store.create_tenant("bob")
    task, _ = store.create_task(acme.id, "t", modality="text", backbone="minilm", head="auto", examples=EXAMPLES)
    rt = runtime(store, max_text_chars=30)
    rows = labelled(3) + [NewFeedback(1, "pos", "neg", input=None)]  # no input (an image's): cannot be an example
    rows.append(NewFeedback(1, "pos", "neg", input="x" * 31))  # longer than an example may be: unfit
    store.add_feedback(acme.id, task.id, rows, retention_days=30, max_rows=100)
    assert store.pending_feedback(acme.id, task.id) == 4 and store.pending_feedback(bob.id, task.id) == 0

    with pytest.raises(NotFound):  # another tenant's task
        loop.promote_feedback(rt, bob.id, "t")
    done = loop.promote_feedback(rt, acme.id, "t")
    assert done.added == 3 and done.job is not None and done.job.status == "queued"
    assert cast(Any, rt).jobs.notified == [1]
    assert store.examples_per_source(task.id) == {"user": 4, "feedback": 3}
    with store.reading() as s:
        copied = s.execute(select(Example.input, Example.label).where(Example.source == "feedback")).all()
    assert sorted(copied) == [(f"feedback text {i}", "pos") for i in range(3)]
    # each is considered once: the long one was found unfit and is not counted again
    assert store.pending_feedback(acme.id, task.id) == 0
    again = loop.promote_feedback(rt, acme.id, "t")
    assert again.added == 0 and again.job is None and store.examples_per_source(task.id)["feedback"] == 3


def test_promotion_respects_the_quotas_and_writes_nothing_when_refused(store: Store) -> None:
    acme, _ = store.create_tenant("acme")
    task, _ = store.create_task(acme.id, "t", modality="text", backbone="minilm", head="auto", examples=EXAMPLES)
    store.add_feedback(acme.id, task.id, labelled(3), retention_days=30, max_rows=100)
    rt = runtime(store, max_examples_per_task=6)
    with pytest.raises(QuotaExceeded, match="7 examples; the limit is 6"):
        loop.promote_feedback(rt, acme.id, "t")
    assert store.examples_per_source(task.id) == {"user": 4} and store.pending_feedback(acme.id, task.id) == 3
    # the retrain policy reports the refusal instead of failing the feedback request
    store.set_retrain_policy(acme.id, "t", 2)
    promoted, note = loop.apply_policy(rt, acme.id, task.id, "t")
    assert promoted is None and note is not None and "no retrain was queued" in note and "limit is 6" in note


def test_retrain_policy_queues_after_n_new_labels(store: Store) -> None:
    acme, _ = store.create_tenant("acme")
    task, _ = store.create_task(acme.id, "t", modality="text", backbone="minilm", head="auto", examples=EXAMPLES)
    rt = runtime(store, retrain_after_feedback=0)
    store.add_feedback(acme.id, task.id, labelled(5), retention_days=30, max_rows=100)
    assert loop.apply_policy(rt, acme.id, task.id, "t") == (None, None)  # no policy: nothing happens

    assert store.set_retrain_policy(acme.id, "t", 8).retrain_after_feedback == 8
    assert loop.apply_policy(rt, acme.id, task.id, "t") == (None, None)  # 5 < 8 waiting
    store.add_feedback(acme.id, task.id, labelled(3), retention_days=30, max_rows=100)
    promoted, note = loop.apply_policy(rt, acme.id, task.id, "t")
    assert note is None and promoted is not None and promoted.added == 8 and promoted.job is not None
    assert store.examples_per_source(task.id)["feedback"] == 8 and store.pending_feedback(acme.id, task.id) == 0
    # the job that trains them supersedes the queued first job: one job waits per task
    assert store.get_job(acme.id, promoted.job.id).status == "queued"

    # the service default applies to a task without its own policy; 0 on the task turns it off
    store.set_retrain_policy(acme.id, "t", None)
    rt_default = runtime(store, retrain_after_feedback=2)
    store.add_feedback(acme.id, task.id, labelled(2), retention_days=30, max_rows=100)
    assert loop.retrain_threshold(rt_default, store.get_task(acme.id, "t")) == 2
    assert loop.apply_policy(rt_default, acme.id, task.id, "t")[0] is not None
    store.set_retrain_policy(acme.id, "t", 0)
    store.add_feedback(acme.id, task.id, labelled(4), retention_days=30, max_rows=100)
    assert loop.apply_policy(rt_default, acme.id, task.id, "t") == (None, None)


# -- shadow records in the store ----------------------------------------------------------------


def shadow_rows(tenant_id: str, task_id: str, n: int, agree: int, start: int = 0) -> list[NewShadow]:
    return [
        NewShadow(tenant_id, task_id, 2, 1, f"{start + i:032x}", "pos" if i < agree else "neg", "pos") for i in range(n)
    ]


def test_shadow_records_are_counted_matched_to_feedback_trimmed_and_deleted(store: Store) -> None:
    acme, _ = store.create_tenant("acme")
    bob, _ = store.create_tenant("bob")
    task, _ = store.create_task(acme.id, "t", modality="text", backbone="minilm", head="auto", examples=EXAMPLES)
    since = utcnow() - timedelta(days=1)
    store.add_shadow_records(shadow_rows(acme.id, task.id, 10, agree=7), retention_days=30, max_rows=100)
    assert store.shadow_counts(acme.id, task.id, since) == {2: ShadowCounts(10, 7)}
    assert store.shadow_counts(bob.id, task.id, since) == {}
    # feedback quoting two of those predictions (by the id's random part) is matched to the shadow's answers
    feedback = [
        NewFeedback(1, "pos", "neg", prediction_id=f"{9:032x}"),  # shadow said neg: right; active wrong
        NewFeedback(1, "pos", "pos", prediction_id=f"{0:032x}"),  # both right
        NewFeedback(1, "pos", "pos", prediction_id="f" * 32),  # not shadowed: not matched
    ]
    store.add_feedback(acme.id, task.id, feedback, retention_days=30, max_rows=100)
    got = store.shadow_feedback(acme.id, task.id, since)
    assert sorted(got, key=lambda r: r.label) == [
        ShadowFeedback(2, "neg", "pos", "neg"),
        ShadowFeedback(2, "pos", "pos", "pos"),
    ]
    assert store.shadow_feedback(bob.id, task.id, since) == []

    # the cap keeps the newest; retention drops the old at the next write
    store.add_shadow_records(shadow_rows(acme.id, task.id, 5, agree=5, start=100), retention_days=30, max_rows=12)
    assert store.shadow_counts(acme.id, task.id, since)[2].predictions == 12
    with store.writing() as s:
        s.execute(update(ShadowPrediction).values(created_at=utcnow() - timedelta(days=40)))
    store.add_shadow_records(shadow_rows(acme.id, task.id, 1, agree=1, start=200), retention_days=30, max_rows=12)
    with store.reading() as s:
        assert s.scalar(select(func.count()).select_from(ShadowPrediction)) == 1
    # records of a deleted task are dropped; the task's are deleted with it (and its feedback)
    store.delete_task(acme.id, "t")
    store.add_shadow_records(shadow_rows(acme.id, task.id, 3, agree=3), retention_days=30, max_rows=12)
    with store.reading() as s:
        assert s.scalar(select(func.count()).select_from(ShadowPrediction)) == 0
        assert s.scalar(select(func.count()).select_from(Feedback)) == 0


def test_one_shadow_per_task_never_the_active_version_and_promotion_ends_it(store: Store) -> None:
    acme, _ = store.create_tenant("acme")
    bob, _ = store.create_tenant("bob")
    task, job = store.create_task(acme.id, "t", modality="text", backbone="minilm", head="auto", examples=EXAMPLES)
    for _ in range(2):
        claimed = store.claim_job("w", lease_s=60, max_attempts=3)
        assert claimed is not None
        store.complete_job(claimed.id, "w", new_version(), promote=claimed.id == job.id)
        if claimed.id == job.id:
            store.add_examples(acme.id, "t", [("fine", "pos")])
    assert store.get_task(acme.id, "t").active_version == 1
    with pytest.raises(Conflict, match="active version"):
        store.set_shadow(acme.id, "t", 1, 0.5)
    with pytest.raises(NotFound):
        store.set_shadow(acme.id, "t", 3, 0.5)
    with pytest.raises(NotFound):
        store.set_shadow(bob.id, "t", 2, 0.5)
    shadowed = store.set_shadow(acme.id, "t", 2, 0.25)
    assert (shadowed.shadow_version, shadowed.shadow_share) == (2, 0.25)
    promoted = store.promote(acme.id, "t", 2)  # promoting the shadow ends it: it serves for real now
    assert promoted.active_version == 2 and promoted.shadow_version is None and promoted.shadow_share is None
    store.set_shadow(acme.id, "t", 1, 0.5)
    assert store.clear_shadow(acme.id, "t").shadow_version is None


# -- accounting ---------------------------------------------------------------------------------


def test_shadow_report_pairs_the_shadow_with_the_answering_version_on_the_same_feedback() -> None:
    classification = kinds.kind_of("classification")
    paired = [
        ShadowFeedback(2, "a", "a", "a"),  # both right
        ShadowFeedback(2, "b", "a", "b"),  # shadow right, active wrong
        ShadowFeedback(2, "b", "b", "a"),  # both wrong
        ShadowFeedback(2, None, "a", "a"),  # the shadow gave no answer: not measured
        ShadowFeedback(3, "c", "a", "c"),
    ]
    report = shadow_report(classification, {2: ShadowCounts(40, 30), 4: ShadowCounts(0, 0)}, paired)
    assert report[2] == {
        "version": 2,
        "predictions": 40,
        "agreements": 30,
        "agreement": 0.75,
        "feedback": {
            "count": 3,
            "accuracy": pytest.approx(2 / 3),
            "mean_abs_error": None,
            "active_accuracy": pytest.approx(1 / 3),
            "active_mean_abs_error": None,
        },
    }
    assert report[3]["predictions"] == 0 and report[3]["agreement"] is None and report[3]["feedback"]["accuracy"] == 1
    assert report[4]["feedback"] == {
        "count": 0,
        "accuracy": None,
        "mean_abs_error": None,
        "active_accuracy": None,
        "active_mean_abs_error": None,
    }
    regression = kinds.kind_of("regression")
    values = shadow_report(regression, {}, [ShadowFeedback(2, "1.0", "3.0", "2.0")])[2]["feedback"]
    assert values["mean_abs_error"] == 1.0 and values["active_mean_abs_error"] == 1.0 and values["accuracy"] is None


def test_drift_windows_score_the_flag_count_against_the_calibrated_rate() -> None:
    series = [(0, 0, 0.0), (100, 5, 50.0), (100, 40, 120.0)]
    out = drift(series, 0.05, 300.0)
    first, calm, shifted = out["windows"]
    assert first["scored"] == 0 and first["z"] is None and first["flag_rate"] is None and first["ends_s_ago"] == 600
    assert calm["z"] == pytest.approx(0.0) and calm["mean_score"] == 0.5
    assert shifted["z"] == pytest.approx((40 - 5) / np.sqrt(100 * 0.05 * 0.95)) and shifted["ends_s_ago"] == 0
    assert out["latest"] == shifted and out["shifted"] is True
    assert drift(series[:2], 0.05, 300.0)["shifted"] is False
    assert drift([(10, 9, 30.0)], 0.05, 300.0)["shifted"] is False  # too few inputs to call it
    assert drift([(100, 40, 1.0)], None, 300.0)["windows"][0]["z"] is None  # no OOD model: no reference


def test_ood_window_series_splits_the_hour_into_windows() -> None:
    now = [0.0]
    window = metrics.OodWindow(window_s=60.0, slices=6, clock=lambda: now[0])
    window.add("t", 1, [0.5, 2.0])  # slice 0
    now[0] = 25.0
    window.add("t", 1, [3.0])  # slice 2
    window.add("t", 2, [0.1])
    now[0] = 55.0
    window.add("t", 1, [0.2])  # slice 5
    assert window.series("t", 1, 3) == [(2, 1, 2.5), (1, 1, 3.0), (1, 0, 0.2)]
    now[0] = 65.0  # slice 0 left the window
    assert window.series("t", 1, 3) == [(1, 1, 3.0), (0, 0, 0.0), (1, 0, 0.2)]
    assert window.series("t", 2, 6)[1] == (1, 0, pytest.approx(0.1))  # slice 2, four slices back


# -- shadow versions served: real embeddings ------------------------------------------------------


@pytest.fixture
def shadowed(tmp_path, minilm, news, bbc_train):  # noqa: F811  (news: the module fixture imported above)
    head, ood = news
    rows = per_label(bbc_train, 2, seed=11)  # a weaker candidate: it disagrees on some inputs
    x = minilm.embed([r["input"][:400] for r in rows])
    labels = [r["label"] for r in rows]
    candidate = LinearHead(head.labels).fit(x, np.array([head.labels.index(label) for label in labels]))
    store = Store(f"sqlite:///{tmp_path / 'graft.db'}")
    store.create_schema()
    tenant, _ = store.create_tenant("acme")
    task_id, _ = install(store, tenant.id, "news", head, minilm, ood=ood)
    store.add_examples(tenant.id, "news", [("another", head.labels[0])])
    job = store.claim_job("w", lease_s=60, max_attempts=3)
    assert job is not None
    blob = heads.to_bytes(candidate, backbone=minilm.name, backbone_revision=minilm.revision, runtime=minilm.runtime)
    fields = dict(backbone=minilm.name, backbone_revision=minilm.revision, runtime=minilm.runtime)
    assert (
        store.complete_job(
            job.id, "w", new_version(head="linear", labels=head.labels, weights=blob, **fields), promote=False
        )
        == 2
    )
    backbone = Counting(minilm)
    batcher = Batcher(backbone, max_batch=16, max_delay_s=0.002)
    log = ShadowLog(store, retention_days=30, max_rows_per_task=1000, flush_s=3600)
    router = Router(
        store, lambda _: batcher, HeadCache(store_head_loader(store), 10**8), shadow_log=log, rng=random.Random(7)
    )
    yield router, tenant.id, backbone, task_id, candidate
    log.close()
    batcher.close()
    store.close()


def predict(router: Router, tenant: str, texts: list[str]) -> list[dict]:
    return [p.as_json() for p in asyncio.run(router.predict(tenant, "news", texts))[2]]


def test_a_shadow_answers_on_the_same_pass_and_is_recorded_not_returned(shadowed, bbc_test, minilm) -> None:
    router, tenant, backbone, task_id, candidate = shadowed
    store = router.store
    texts = [r["input"][:400] for r in bbc_test[:24]] + FOREIGN[:2]
    plain = predict(router, tenant, texts)
    assert backbone.embedded == len(texts)
    store.set_shadow(tenant, "news", 2, 1.0)
    router.forget(tenant, "news")
    before = metrics.SHADOW_PREDICTIONS.labels("classification")._value.get()
    answers = predict(router, tenant, texts)
    assert backbone.embedded == 2 * len(texts)  # the shadow reused the pass: the backbone ran once per input
    # the answers returned are the active version's, as without a shadow (to float rounding of the batch)
    assert [(a["label"], a["ood"]) for a in answers] == [(a["label"], a["ood"]) for a in plain]
    assert np.allclose([a["score"] for a in answers], [a["score"] for a in plain], atol=1e-5)
    assert all(set(a) == set(plain[0]) for a in answers)  # and nothing of the shadow's is added

    assert router.shadow_log is not None and router.shadow_log.flush() == len(texts)
    assert metrics.SHADOW_PREDICTIONS.labels("classification")._value.get() - before == len(texts)
    with store.reading() as s:
        recorded = {
            r.prediction_id: r for r in s.scalars(select(ShadowPrediction).where(ShadowPrediction.task_id == task_id))
        }
    expected = [candidate.labels[i] for i in heads.predict(candidate, minilm.embed(texts)).argmax(axis=1)]
    for a, shadow_answer in zip(answers, expected, strict=True):
        row = recorded[a["id"].split(".")[0]]
        assert (row.version, row.active_version, row.answer, row.active_answer) == (2, 1, shadow_answer, a["label"])
    agree = sum(e == a["label"] for e, a in zip(expected, answers, strict=True))
    assert 0 < agree < len(texts)  # the weaker candidate disagrees on some: the accounting below can fail

    # feedback by id is matched to the shadow's answers: its accuracy beside the active version's
    truth = [r["label"] for r in bbc_test[:24]]
    rt = runtime(store, router)
    asyncio.run(
        record(rt, tenant, "news", [Item(label=t, id=a["id"]) for t, a in zip(truth, answers[:24], strict=True)])
    )
    report = monitoring(rt, tenant, "news")
    assert report["shadow"]["version"] == 2 and report["shadow"]["share"] == 1.0
    (figures,) = report["shadow"]["versions"]
    assert figures["predictions"] == len(texts) and figures["agreements"] == agree
    assert figures["agreement"] == pytest.approx(agree / len(texts))
    assert figures["feedback"]["count"] == len(truth)
    assert figures["feedback"]["accuracy"] == pytest.approx(
        np.mean([e == t for e, t in zip(expected[:24], truth, strict=True)])
    )
    assert figures["feedback"]["active_accuracy"] == pytest.approx(report["feedback"]["accuracy"])
    drift_now = report["drift"]
    assert drift_now["latest"]["scored"] == 2 * len(texts) and len(drift_now["windows"]) == 12


def test_the_shadow_share_is_respected_and_a_stopped_shadow_stops(shadowed, bbc_test) -> None:
    router, tenant, backbone, task_id, _ = shadowed
    store = router.store
    store.set_shadow(tenant, "news", 2, 0.3)
    router.forget(tenant, "news")
    text = bbc_test[0]["input"][:200]
    for _ in range(200):
        predict(router, tenant, [text])
    assert backbone.embedded == 200
    assert router.shadow_log is not None
    shadowed_n = router.shadow_log.flush()
    assert 40 <= shadowed_n <= 80, shadowed_n  # 30 % of 200 requests (binomial sd 6.5)
    store.clear_shadow(tenant, "news")
    router.forget(tenant, "news")
    predict(router, tenant, [text] * 3)
    assert router.shadow_log.flush() == 0
