"""Feedback rows in the store (SQLite and PostgreSQL): scoped by tenant, trimmed by retention and by the
per-task cap, deleted with the task; and the per-kind figures monitoring reports from them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from adapters import kinds
from service.application.feedback import summarize
from service.store.models import Feedback, utcnow
from service.store.repository import FeedbackRow, NewFeedback, NotFound, Store

EXAMPLES = [("good", "pos"), ("great", "pos"), ("bad", "neg"), ("awful", "neg")]


def rows(n: int, version: int = 1, right: bool = True) -> list[NewFeedback]:
    return [NewFeedback(version, "pos", "pos" if right else "neg", ood=i % 2 == 0, input=f"text {i}") for i in range(n)]


def test_feedback_is_scoped_trimmed_and_deleted_with_the_task(store: Store) -> None:
    acme, _ = store.create_tenant("acme")
    bob, _ = store.create_tenant("bob")
    task, _ = store.create_task(acme.id, "t", modality="text", backbone="minilm", head="auto", examples=EXAMPLES)
    since = utcnow() - timedelta(days=1)
    assert store.add_feedback(acme.id, task.id, rows(3), retention_days=30, max_rows=10) == 3
    assert store.add_feedback(acme.id, task.id, rows(2, version=2, right=False), retention_days=30, max_rows=10) == 5
    got = store.feedback(acme.id, task.id, since)
    assert [(r.version, r.predicted, r.label) for r in got] == [(1, "pos", "pos")] * 3 + [(2, "pos", "neg")] * 2
    assert store.feedback(bob.id, task.id, since) == []  # another tenant reads nothing of it
    with pytest.raises(NotFound):
        store.add_feedback(bob.id, task.id, rows(1), retention_days=30, max_rows=10)

    # the cap keeps the newest rows
    assert store.add_feedback(acme.id, task.id, rows(7, version=3), retention_days=30, max_rows=10) == 10
    versions = [r.version for r in store.feedback(acme.id, task.id, since)]
    assert versions == [1] * 1 + [2] * 2 + [3] * 7

    # retention: rows older than the window go at the next write
    with store.writing() as s:
        s.execute(update(Feedback).where(Feedback.version < 3).values(created_at=utcnow() - timedelta(days=40)))
    assert store.add_feedback(acme.id, task.id, rows(1, version=4), retention_days=30, max_rows=10) == 8
    assert store.feedback(acme.id, task.id, utcnow() - timedelta(days=60))[0].version == 3

    store.delete_task(acme.id, "t")
    with store.reading() as s:
        assert s.query(Feedback).count() == 0


def test_summaries_by_kind() -> None:
    classification = kinds.kind_of("classification")
    feedback = [
        FeedbackRow(1, "a", "a", False),
        FeedbackRow(1, "a", "b", True),
        FeedbackRow(1, "b", "b", True),
        FeedbackRow(1, None, "b", None),  # stored, not measured
    ]
    summary = summarize(classification, feedback)
    assert summary == {
        "count": 4,
        "accuracy": pytest.approx(2 / 3),
        "ood_flagged": 2,
        "accuracy_flagged": 0.5,
        "accuracy_unflagged": 1.0,
    }
    assert summarize(classification, [])["accuracy"] is None
    multilabel = kinds.kind_of("multilabel")
    exact = summarize(
        multilabel, [FeedbackRow(1, '["a","b"]', '["a","b"]', None), FeedbackRow(1, '["a"]', '["a","b"]', None)]
    )
    assert exact["accuracy"] == 0.5
    regression = kinds.kind_of("regression")
    values = summarize(regression, [FeedbackRow(1, "1.0", "2.5", None), FeedbackRow(1, "3.0", "2.5", None)])
    assert values["accuracy"] is None and values["mean_abs_error"] == 1.0


def test_prediction_ids_round_trip_and_stay_bounded() -> None:
    from service.engine.prediction_ids import MAX_ID_CHARS, BadPredictionId, new_id, read_id

    one = new_id("task-1", 3, "business", False)
    said = read_id("task-1", one)
    assert (said.version, said.answer, said.ood, said.nonce) == (3, "business", False, one[:32])
    assert new_id("task-1", 3, "business") != one  # a fresh random part each time
    huge = new_id("task-1", 3, '["' + '","'.join(f"label {i:04d}" for i in range(500)) + '"]', True)
    assert len(huge) <= MAX_ID_CHARS and read_id("task-1", huge).answer is None  # stored, not measured
    for bad in ("", "x" * 32, one[:32] + ".%%%", one[:32] + ".WzEsMiwzXQ", "y" * 5000):
        with pytest.raises(BadPredictionId):
            read_id("task-1", bad)
    with pytest.raises(BadPredictionId, match="another task"):
        read_id("task-2", one)
