from __future__ import annotations

from sqlalchemy import update

from service.batching import Batcher
from service.config import Settings
from service.jobs import JobRunner
from service.store.models import Task
from service.store.repository import Store

EXAMPLES = [("I love it", "pos"), ("great stuff", "pos"), ("terrible", "neg"), ("I hate this", "neg")]


def test_failed_job_keeps_previous_version_and_records_error(tmp_path, minilm) -> None:
    store = Store(f"sqlite:///{tmp_path / 'g.db'}")
    store.create_schema()
    batcher = Batcher(minilm)
    runner = JobRunner(store, lambda _: batcher, Settings.from_env({}, data_dir=str(tmp_path)))
    try:
        tenant, _ = store.create_tenant("acme")
        task, job1 = store.create_task(
            tenant.id, "t", modality="text", backbone="minilm", head="linear", examples=EXAMPLES
        )
        runner.run(store.claim_job(runner.worker_id, lease_s=60, max_attempts=3))
        done = store.get_job(tenant.id, job1.id)
        assert (done.status, done.version, done.progress) == ("succeeded", 1, 1.0)

        _, job2 = store.add_examples(tenant.id, "t", [("fine", "pos")])
        with store.writing() as s:  # make the next training impossible
            s.execute(update(Task).where(Task.id == task.id).values(head="no-such-head"))
        runner.run(store.claim_job(runner.worker_id, lease_s=60, max_attempts=3))
        failed = store.get_job(tenant.id, job2.id)
        assert failed.status == "failed" and "no-such-head" in failed.error and failed.version is None
        assert store.get_task(tenant.id, "t").active_version == 1
        assert [v.number for v in store.versions(task.id)] == [1]
    finally:
        batcher.close()
        store.close()


def test_job_of_a_deleted_task_is_abandoned(tmp_path, minilm) -> None:
    store = Store(f"sqlite:///{tmp_path / 'g.db'}")
    store.create_schema()
    batcher = Batcher(minilm)
    runner = JobRunner(store, lambda _: batcher, Settings.from_env({}, data_dir=str(tmp_path)))
    try:
        tenant, _ = store.create_tenant("acme")
        _, job = store.create_task(tenant.id, "t", modality="text", backbone="minilm", head="linear", examples=EXAMPLES)
        claimed = store.claim_job(runner.worker_id, lease_s=60, max_attempts=3)
        store.delete_task(tenant.id, "t")
        runner.run(claimed)
        assert store.get_job(tenant.id, job.id).status == "failed"
        assert store.get_job(tenant.id, job.id).error == "the task was deleted"
    finally:
        batcher.close()
        store.close()
