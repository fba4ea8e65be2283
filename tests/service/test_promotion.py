"""Auto-promotion: a retrain that is worse beyond noise stays a candidate, with the reason recorded."""

from __future__ import annotations

from sqlalchemy import update

from adapters.selection import compare_on_unseen
from service.batching import Batcher
from service.config import Settings
from service.jobs import JobRunner
from service.store.models import Task
from service.store.repository import Store
from tests.conftest import per_label


def test_paired_comparison_tolerates_noise_and_catches_real_losses() -> None:
    truth = ["a"] * 20
    same = compare_on_unseen(truth, ["a"] * 20, ["a"] * 20, 3)
    assert same.promote and same.compared_on == 20 and "version 3" in same.reason
    slightly = compare_on_unseen(truth, ["a"] * 18 + ["b"] * 2, ["a"] * 20, 3)  # b=2, c=0: 2 < 1.96*sqrt(2)
    assert slightly.promote
    clearly = compare_on_unseen(truth, ["a"] * 12 + ["b"] * 8, ["a"] * 20, 3)  # b=8, c=0
    assert not clearly.promote and "beyond noise" in clearly.reason and clearly.only_active_right == 8
    better = compare_on_unseen(truth, ["a"] * 20, ["b"] * 20, 3)
    assert better.promote and better.only_new_right == 20
    assert compare_on_unseen([], [], [], 3).promote


def test_store_keeps_a_rejected_or_stale_version_as_candidate(tmp_path) -> None:
    from tests.service.test_store import new_version  # the store tests' version factory

    store = Store(f"sqlite:///{tmp_path / 'g.db'}")
    store.create_schema()
    tenant, _ = store.create_tenant("acme")
    task, job = store.create_task(
        tenant.id, "t", modality="text", backbone="minilm", head="auto", examples=[("a", "x"), ("b", "y")]
    )
    store.claim_job("w", lease_s=60, max_attempts=3)
    assert store.complete_job(job.id, "w", new_version()) == 1
    _, job = store.add_examples(tenant.id, "t", [("c", "x")])
    store.claim_job("w", lease_s=60, max_attempts=3)
    assert store.complete_job(job.id, "w", new_version(), promote=False) == 2
    assert store.get_task(tenant.id, "t").active_version == 1
    assert store.version(task.id, 2).metrics["promotion"]["promoted"] is False
    _, job = store.add_examples(tenant.id, "t", [("d", "y")])
    store.claim_job("w", lease_s=60, max_attempts=3)
    store.promote(tenant.id, "t", 2)  # by hand while version 3 trains against version 1
    assert store.complete_job(job.id, "w", new_version(), promote=True, compared_with=1) == 3
    assert store.get_task(tenant.id, "t").active_version == 2
    assert "changed from 1 to 2" in store.version(task.id, 3).metrics["promotion"]["reason"]
    store.close()


def test_worse_retrain_stays_a_candidate(tmp_path, minilm, bbc_train) -> None:
    """Version 1: the linear head on 16 MiniLM-embedded articles per label. Then the task is pinned to
    the from-scratch baseline and 16 *headlines* per label are added: TF-IDF has little to go on in a
    headline, the frozen embeddings do. On those headlines (unseen by both), version 2 is worse beyond
    noise, so version 1 stays active and version 2 records why."""
    store = Store(f"sqlite:///{tmp_path / 'g.db'}")
    store.create_schema()
    batcher = Batcher(minilm)
    runner = JobRunner(store, lambda _: batcher, Settings.from_env({}, data_dir=str(tmp_path)), lambda _: ["minilm"])
    try:
        tenant, _ = store.create_tenant("acme")
        articles = per_label(bbc_train, 16, seed=31)
        task, _ = store.create_task(
            tenant.id,
            "t",
            modality="text",
            backbone="minilm",
            head="linear",
            examples=[(r["input"], r["label"]) for r in articles],
        )
        runner.run(store.claim_job(runner.worker_id, lease_s=60, max_attempts=3))
        assert store.get_task(tenant.id, "t").active_version == 1
        with store.writing() as s:
            s.execute(update(Task).where(Task.id == task.id).values(head="baseline"))
        headlines = [r for r in per_label(bbc_train, 16, seed=32) if r not in articles]
        _, job = store.add_examples(tenant.id, "t", [(r["input"].split("\n")[0], r["label"]) for r in headlines])
        runner.run(store.claim_job(runner.worker_id, lease_s=60, max_attempts=3))
        assert store.get_job(tenant.id, job.id).status == "succeeded"
        assert store.get_task(tenant.id, "t").active_version == 1
        v2 = store.version(task.id, 2)
        promotion = v2.metrics["promotion"]
        assert promotion["promoted"] is False and promotion["compared_on"] == len(headlines) > 60, promotion
        assert promotion["active_correct"] > promotion["new_correct"], promotion
        assert promotion["reason"].startswith("kept as a candidate: worse than the active version beyond noise")
        assert v2.head == "baseline" and v2.metrics["transferability"]["scores"].keys() == {"minilm"}
    finally:
        batcher.close()
        store.close()
