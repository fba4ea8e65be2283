from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy.exc import IntegrityError

from service.store.repository import Conflict, NewVersion, NotFound, Store, hash_key

# `store` and `store_url` (tests/service/conftest.py) run every test here on SQLite and on PostgreSQL.

EXAMPLES = [("good", "pos"), ("great", "pos"), ("bad", "neg"), ("awful", "neg")]


def new_version(**overrides) -> NewVersion:
    fields = dict(
        head="linear",
        backbone="minilm",
        backbone_revision="sha256:x",
        runtime="torch",
        labels=["neg", "pos"],
        metrics={"accuracy": 1.0},
        n_examples=4,
        weights=b"blob",
    )
    return NewVersion(**{**fields, **overrides})


def test_api_key_is_stored_only_as_hash(store: Store) -> None:
    tenant, key = store.create_tenant("acme")
    assert key.startswith("gft_") and len(key) >= 40
    with store.reading() as s:
        stored = s.execute(__import__("sqlalchemy").text("select key_hash from api_keys")).scalars().all()
    assert stored == [hash_key(key)] and key not in stored
    assert store.tenant_for_key(key).id == tenant.id
    assert store.tenant_for_key(key + "x") is None


def test_duplicate_names_conflict(store: Store) -> None:
    tenant, _ = store.create_tenant("acme")
    with pytest.raises(Conflict):
        store.create_tenant("acme")
    store.create_task(tenant.id, "t", modality="text", backbone="minilm", head="linear", examples=EXAMPLES)
    with pytest.raises(Conflict):
        store.create_task(tenant.id, "t", modality="text", backbone="minilm", head="linear", examples=EXAMPLES)
    assert len(store.examples(store.get_task(tenant.id, "t").id)) == 4  # the failed create wrote nothing


def test_tasks_are_scoped_by_tenant(store: Store) -> None:
    a, _ = store.create_tenant("a")
    b, _ = store.create_tenant("b")
    task, job = store.create_task(
        a.id, "shared-name", modality="text", backbone="minilm", head="linear", examples=EXAMPLES
    )
    with pytest.raises(NotFound):
        store.get_task(b.id, "shared-name")
    with pytest.raises(NotFound):
        store.get_job(b.id, job.id)
    with pytest.raises(NotFound):
        store.delete_task(b.id, "shared-name")
    with pytest.raises(NotFound):
        store.add_examples(b.id, "shared-name", EXAMPLES)
    assert store.list_tasks(b.id) == []
    store.create_task(b.id, "shared-name", modality="text", backbone="minilm", head="linear", examples=EXAMPLES[:2])
    assert len(store.examples(store.get_task(a.id, "shared-name").id)) == 4


def test_everything_persists_across_reopen(store: Store, store_url: str) -> None:
    tenant, key = store.create_tenant("acme")
    task, job = store.create_task(tenant.id, "t", modality="text", backbone="minilm", head="linear", examples=EXAMPLES)
    claimed = store.claim_job("w1", lease_s=60, max_attempts=3)
    assert claimed.id == job.id
    assert store.complete_job(job.id, "w1", new_version()) == 1
    store.close()

    reopened = Store(store_url)
    assert reopened.tenant_for_key(key).id == tenant.id
    task = reopened.get_task(tenant.id, "t")
    assert task.active_version == 1
    assert reopened.examples(task.id) == EXAMPLES
    assert reopened.version(task.id, 1, with_weights=True).weights == b"blob"
    finished = reopened.get_job(tenant.id, job.id)
    assert (finished.status, finished.version, finished.progress) == ("succeeded", 1, 1.0)
    reopened.close()


def test_a_structured_label_longer_than_a_class_name_is_stored_whole(store: Store) -> None:
    """Entity spans, detection objects and completions are stored encoded in the examples' label column (Text
    since migration 0009): 8,192 characters, the kinds' bound, survive on SQLite and PostgreSQL alike."""
    tenant, _ = store.create_tenant("acme")
    completion = "The capital is Canberra. " * 327 + "Yes."  # 8,179 characters
    long = [("Country: Australia", completion), ("Country: Japan", "Tokyo")]
    task, _ = store.create_task(tenant.id, "g", modality="text", backbone="smollm2", head="lora", examples=long)
    assert store.examples(task.id) == long


def test_version_switch_is_atomic_and_versions_are_numbered(store: Store) -> None:
    tenant, _ = store.create_tenant("acme")
    task, job1 = store.create_task(tenant.id, "t", modality="text", backbone="minilm", head="linear", examples=EXAMPLES)
    store.claim_job("w", lease_s=60, max_attempts=3)
    store.complete_job(job1.id, "w", new_version())
    _, job2 = store.add_examples(tenant.id, "t", [("fine", "pos")])
    store.claim_job("w", lease_s=60, max_attempts=3)
    # A write that fails inside the transaction (NOT NULL weights) leaves version 1 active, no version 2.
    with pytest.raises(IntegrityError):
        store.complete_job(job2.id, "w", new_version(weights=None))
    assert store.get_task(tenant.id, "t").active_version == 1
    assert [v.number for v in store.versions(task.id)] == [1]
    assert store.get_job(tenant.id, job2.id).status == "running"
    assert store.complete_job(job2.id, "w", new_version(n_examples=5)) == 2
    assert store.get_task(tenant.id, "t").active_version == 2
    assert [v.n_examples for v in store.versions(task.id)] == [4, 5]


def test_a_job_completes_only_for_its_owner(store: Store) -> None:
    tenant, _ = store.create_tenant("acme")
    _, job = store.create_task(tenant.id, "t", modality="text", backbone="minilm", head="linear", examples=EXAMPLES)
    store.claim_job("w1", lease_s=60, max_attempts=3)
    assert store.complete_job(job.id, "intruder", new_version()) is None
    assert store.heartbeat(job.id, "intruder", 0.5) is False
    assert store.get_task(tenant.id, "t").active_version is None
    assert store.complete_job(job.id, "w1", new_version()) == 1
    assert store.complete_job(job.id, "w1", new_version()) is None  # never twice


def test_concurrent_claims_never_share_a_job(store: Store) -> None:
    tenant, _ = store.create_tenant("acme")
    jobs = {
        store.create_task(tenant.id, f"t{i}", modality="text", backbone="minilm", head="linear", examples=EXAMPLES)[
            1
        ].id
        for i in range(20)
    }
    claimed: list[str] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        while (job := store.claim_job(name, lease_s=60, max_attempts=3)) is not None:
            with lock:
                claimed.append(job.id)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(jobs)


def test_expired_lease_is_reclaimed_then_given_up(store: Store) -> None:
    tenant, _ = store.create_tenant("acme")
    _, job = store.create_task(tenant.id, "t", modality="text", backbone="minilm", head="linear", examples=EXAMPLES)
    assert store.claim_job("dead", lease_s=0.2, max_attempts=2).id == job.id
    assert store.claim_job("other", lease_s=0.2, max_attempts=2) is None  # lease still fresh
    time.sleep(0.3)
    again = store.claim_job("other", lease_s=0.2, max_attempts=2)
    assert again.id == job.id and again.attempts == 2
    assert store.complete_job(job.id, "dead", new_version()) is None  # the dead worker lost it
    time.sleep(0.3)
    assert store.claim_job("third", lease_s=0.2, max_attempts=2) is None
    failed = store.get_job(tenant.id, job.id)
    assert (
        failed.status == "failed"
        and "stopped its worker 2 times" in failed.error
        and "will not be retried" in failed.error
    )


def test_delete_removes_examples_versions_and_fails_open_jobs(store: Store) -> None:
    tenant, _ = store.create_tenant("acme")
    task, job1 = store.create_task(tenant.id, "t", modality="text", backbone="minilm", head="linear", examples=EXAMPLES)
    store.claim_job("w", lease_s=60, max_attempts=3)
    store.complete_job(job1.id, "w", new_version())
    _, job2 = store.add_examples(tenant.id, "t", [("ok", "pos")])
    store.delete_task(tenant.id, "t")
    with pytest.raises(NotFound):
        store.get_task(tenant.id, "t")
    assert store.examples(task.id) == [] and store.versions(task.id) == []
    assert store.get_job(tenant.id, job2.id).status == "failed"
    assert store.get_job(tenant.id, job1.id).status == "succeeded"
    assert store.claim_job("w", lease_s=60, max_attempts=3) is None


def test_sqlite_is_durable_and_private(tmp_path) -> None:
    """SQLite commits with synchronous=FULL (a just-issued key survives power loss, not only a crash),
    and the data directory it creates is 0700, the database file (and so its -wal, -shm files) 0600,
    whatever the umask. The admin token's directory likewise."""
    import os
    import stat

    from sqlalchemy import text

    from service.config import Settings
    from service.tenancy import load_admin_token

    old = os.umask(0o022)
    try:
        data = tmp_path / "fresh" / "var"
        s = Store(f"sqlite:///{data / 'graft.db'}")
        s.migrate()
        s.create_tenant("acme")
        with s.reading() as session:
            assert session.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL (NORMAL is 1)
        s.close()
        mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
        assert mode(data) == 0o700
        assert mode(data / "graft.db") == 0o600
        for extra in ("graft.db-wal", "graft.db-shm"):
            if (data / extra).exists():
                assert mode(data / extra) == 0o600
        other = tmp_path / "token-dir"
        load_admin_token(Settings.from_env({}, data_dir=str(other), admin_token=None))
        assert mode(other) == 0o700 and mode(other / "admin-token") == 0o600
    finally:
        os.umask(old)
