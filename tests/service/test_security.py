"""Tenant security in the store and the service layer: key rotation and revocation, disabled
tenants, per-tenant running-job limits, quotas, the predict token bucket, corrupt head blobs."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from adapters import heads
from service.application import quotas
from service.application.quotas import QuotaExceeded, check_new_examples
from service.config import Settings
from service.engine.head_store import VersionFailed, head_of, store_head_loader
from service.ratelimit import RateLimited, RateLimiter
from service.store.repository import Conflict, NotFound, Store
from service.tenancy import Auth

from .test_store import EXAMPLES, new_version

# `store` (tests/service/conftest.py) runs every store test here on SQLite and on PostgreSQL.


def test_rotate_then_revoke_a_key(store: Store) -> None:
    tenant, first = store.create_tenant("acme")
    row, second = store.issue_key(tenant.id)
    assert second.startswith("gft_") and len(second) >= 4 + 43 and second != first  # 256 random bits, url-safe
    assert row.prefix == second[:8]
    assert store.tenant_for_key(first).id == store.tenant_for_key(second).id == tenant.id
    old = next(k for k in store.list_keys(tenant.id) if k.id != row.id)
    store.revoke_key(tenant.id, old.id)
    assert store.tenant_for_key(first) is None and store.tenant_for_key(second).id == tenant.id
    revoked_at = store.revoke_key(tenant.id, old.id).revoked_at  # idempotent
    assert revoked_at is not None
    other, _ = store.create_tenant("other")
    with pytest.raises(NotFound):
        store.revoke_key(other.id, row.id)  # another tenant's key id is not found
    with pytest.raises(NotFound):
        store.issue_key("ten_missing")


def test_a_disabled_tenant_is_refused_at_once_even_when_its_key_is_cached(store: Store) -> None:
    tenant, key = store.create_tenant("acme")
    auth = Auth(store, "admin", cache_ttl_s=3600)
    assert auth.tenant(key).id == tenant.id  # now cached for an hour
    store.set_tenant_disabled(tenant.id, True)
    auth.forget()
    assert auth.tenant(key) is None
    store.set_tenant_disabled(tenant.id, False)
    assert auth.tenant(key).id == tenant.id
    with pytest.raises(NotFound):
        store.set_tenant_disabled("ten_missing", True)


def test_a_tenant_runs_at_most_its_limit_of_jobs_and_the_rest_wait(store: Store) -> None:
    busy, _ = store.create_tenant("busy")
    calm, _ = store.create_tenant("calm")
    for i in range(3):
        store.create_task(busy.id, f"t{i}", modality="text", backbone="minilm", head="linear", examples=EXAMPLES)
    store.create_task(calm.id, "c", modality="text", backbone="minilm", head="linear", examples=EXAMPLES)
    claim = lambda: store.claim_job("w", lease_s=60, max_attempts=3, max_running_per_tenant=2)  # noqa: E731
    claimed = [claim() for _ in range(4)]
    # claims take turns across tenants (busy, calm, busy); busy's third job waits for a free slot
    assert [j.tenant_id for j in claimed[:3]] == [busy.id, calm.id, busy.id]
    assert claimed[3] is None
    store.fail_job(claimed[0].id, "w", "done")
    assert claim().tenant_id == busy.id  # a slot freed: the queued job runs


def test_corrupt_head_blob_marks_its_version_failed_and_nothing_else(store: Store) -> None:
    tenant, _ = store.create_tenant("acme")
    good = heads.LinearHead(["neg", "pos"]).fit(np.eye(4, dtype=np.float32), np.array([0, 0, 1, 1]))
    blobs = {"bad": b"\x00garbage" * 10, "good": heads.to_bytes(good)}
    numbers = {}
    for name in ("bad", "good"):
        task, job = store.create_task(
            tenant.id, name, modality="text", backbone="minilm", head="linear", examples=EXAMPLES
        )
        claimed = store.claim_job("w", lease_s=60, max_attempts=3)
        numbers[name] = (task.id, store.complete_job(claimed.id, "w", new_version(weights=blobs[name])))
    load = store_head_loader(store)
    with pytest.raises(VersionFailed, match="corrupt"):
        load(numbers["bad"])
    bad = store.version(*numbers["bad"])
    assert bad.error and "HeadFormatError" in bad.error
    with pytest.raises(VersionFailed, match="earlier"):  # not parsed again
        head_of(store, store.version(*numbers["bad"], with_weights=True))
    with pytest.raises(Conflict, match="failed to load"):
        store.promote(tenant.id, "bad", numbers["bad"][1])
    assert load(numbers["good"]).labels == ["neg", "pos"]
    assert store.version(*numbers["good"]).error is None


def test_token_bucket_allows_the_burst_then_429_with_retry_after() -> None:
    now = [0.0]
    limiter = RateLimiter(rate=2.0, burst=3, clock=lambda: now[0])
    for _ in range(3):
        limiter.take("a")
    with pytest.raises(RateLimited) as refused:
        limiter.take("a")
    assert refused.value.code == "rate_limited" and refused.value.retry_after_s == pytest.approx(0.5)
    assert "2 inputs/s (burst 3)" in str(refused.value)
    limiter.take("b")  # buckets are per tenant
    now[0] = 0.5
    limiter.take("a")  # one token back after 1/rate s
    RateLimiter(rate=0, burst=1).take("a")  # 0 = no limit


def test_token_bucket_charges_one_token_per_input() -> None:
    """A request of n inputs costs n tokens: one tenant cannot send 200× the work for the price of one request."""
    now = [0.0]
    limiter = RateLimiter(rate=10.0, burst=100, clock=lambda: now[0])
    limiter.take("a", 60)
    with pytest.raises(RateLimited) as refused:
        limiter.take("a", 60)  # 40 tokens left
    assert refused.value.retry_after_s == pytest.approx(2.0) and "by 60 input(s)" in str(refused.value)
    limiter.take("a", 40)
    with pytest.raises(RateLimited):
        limiter.take("a", 1)
    now[0] = 100.0
    limiter.take("a", 500)  # more than the burst: charged a full bucket, so it can pass at all
    with pytest.raises(RateLimited):
        limiter.take("a", 1)


@pytest.mark.parametrize(
    "field,limit,make",
    [
        ("max_tasks_per_tenant", 2, "tasks"),
        ("max_examples_per_task", 6, "examples"),
        ("max_labels_per_task", 3, "labels"),
        ("max_label_chars", 5, "label_chars"),
    ],
)
def test_quota_boundaries(store: Store, field: str, limit: int, make: str) -> None:
    """The limit passes; limit + 1 is refused with the limit in the message."""
    settings = Settings.from_env({}, **{field: limit})
    tenant, _ = store.create_tenant("acme")
    check = lambda task, examples: check_new_examples(store, settings, tenant.id, task, examples)  # noqa: E731
    if make == "tasks":
        for i in range(limit):
            check(None, EXAMPLES)
            store.create_task(tenant.id, f"t{i}", modality="text", backbone="minilm", head="linear", examples=EXAMPLES)
        with pytest.raises(QuotaExceeded, match=f"the limit is {limit}") as refused:
            check(None, EXAMPLES)
    elif make == "examples":
        task, _ = store.create_task(
            tenant.id, "t", modality="text", backbone="minilm", head="linear", examples=EXAMPLES
        )
        check(task, [("x", "pos")] * (limit - 4))
        with pytest.raises(QuotaExceeded, match=f"the limit is {limit}") as refused:
            check(task, [("x", "pos")] * (limit - 3))
    elif make == "labels":
        task, _ = store.create_task(
            tenant.id, "t", modality="text", backbone="minilm", head="linear", examples=EXAMPLES
        )
        check(task, [("x", "third")])
        with pytest.raises(QuotaExceeded, match=f"the limit is {limit}") as refused:
            check(task, [("x", "third"), ("y", "fourth")])
    else:
        check(None, [("x", "a" * limit), ("y", "b")])
        with pytest.raises(QuotaExceeded, match=f"the limit is {limit}") as refused:
            check(None, [("x", "a" * (limit + 1)), ("y", "b")])
    assert refused.value.code in ("quota_exceeded", "validation_error")


def test_stored_bytes_quota_counts_examples_and_weights(store: Store) -> None:
    tenant, _ = store.create_tenant("acme")
    task, _ = store.create_task(tenant.id, "t", modality="text", backbone="minilm", head="linear", examples=EXAMPLES)
    claimed = store.claim_job("w", lease_s=60, max_attempts=3)
    store.complete_job(claimed.id, "w", new_version(weights=b"w" * 100))
    used = sum(len(t) + len(lbl) for t, lbl in EXAMPLES) + 100
    assert store.usage(tenant.id) == (1, used)
    settings = Settings.from_env({}, max_stored_bytes_per_tenant=used + 10)
    check_new_examples(store, settings, tenant.id, task, [("abcdefgh", "ab")])  # exactly at the limit
    with pytest.raises(QuotaExceeded, match=f"the limit is {used + 10} bytes"):
        check_new_examples(store, settings, tenant.id, task, [("abcdefghi", "ab")])


def test_every_limit_is_in_the_security_docs_table() -> None:
    from pathlib import Path

    from service.config import SETTINGS

    doc = (Path(__file__).resolve().parents[2] / "docs" / "security.md").read_text()
    limits = [v.env for k, v in SETTINGS.items() if k.startswith(("max_", "predict_", "generation_max_"))]
    limits += ["GRAFT_GENERATION_QUEUE_SIZE", "GRAFT_GENERATION_ADAPTER_CACHE_MB"]
    assert len(limits) >= 14
    missing = [env for env in limits if f"`{env}`" not in doc]
    assert missing == [], f"add these to docs/security.md's limits table: {missing}"


def test_nothing_is_ever_unpickled() -> None:
    """Stored and uploaded bytes are data: no pickle, joblib or numpy object loading anywhere in
    the service, and torch checkpoints load with weights_only=True."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    sources = [p for d in ("service", "adapters", "graft") for p in (root / d).rglob("*.py")]
    assert len(sources) > 30
    for path in sources:
        code = path.read_text()
        assert not re.search(
            r"\bimport pickle\b|\bpickle\.loads?\(|\bjoblib\b|\bdill\b|allow_pickle\s*=\s*True", code
        ), path
        for call in re.findall(r"torch\.load\([^)]*\)", code):
            assert "weights_only=True" in call, (path, call)


def test_a_full_disk_fails_the_write_whole_and_the_store_recovers(tmp_path) -> None:
    """SQLite with a page budget (``max_page_count``): the write that does not fit raises the same
    OperationalError as a full disk ("database or disk is full", which the API answers with 503
    store_unavailable), commits nothing, and once space is back the same store writes again."""
    from sqlalchemy import event, text
    from sqlalchemy.exc import OperationalError

    store = Store(f"sqlite:///{tmp_path / 'graft.db'}")
    try:
        store.migrate()
        tenant, _ = store.create_tenant("acme")
        store.create_task(tenant.id, "small", modality="text", backbone="minilm", head="linear", examples=EXAMPLES)
        with store.reading() as s:
            pages = s.execute(text("PRAGMA page_count")).scalar()
        budget = {"pages": pages + 2}

        @event.listens_for(store.engine, "checkout")
        def _limit(dbapi_conn, *_) -> None:  # type: ignore[no-untyped-def]
            dbapi_conn.execute(f"PRAGMA max_page_count={budget['pages']}")

        store.engine.pool.dispose()  # every connection from now on has the budget
        big = [("x" * 50_000, "pos"), ("y" * 50_000, "neg")] * 10
        with pytest.raises(OperationalError, match="full"):
            store.create_task(tenant.id, "big", modality="text", backbone="minilm", head="linear", examples=big)
        assert [t.name for t in store.list_tasks(tenant.id)] == ["small"]  # nothing half-written
        with pytest.raises(NotFound):
            store.get_task(tenant.id, "big")
        budget["pages"] = 1_000_000  # space is back
        store.create_task(tenant.id, "big", modality="text", backbone="minilm", head="linear", examples=big)
        assert len(store.examples(store.get_task(tenant.id, "big").id)) == 20
        with store.reading() as s:
            assert s.execute(text("PRAGMA integrity_check")).scalar() == "ok"
    finally:
        store.close()


def test_database_errors_never_quote_the_data_in_logs(store: Store, caplog) -> None:
    """A failed statement hides its parameters, and a logged database error carries its type and
    SQL shape only (PostgreSQL's message quotes the failing row), so payloads never reach the logs."""
    import logging

    from sqlalchemy import text
    from sqlalchemy.exc import IntegrityError

    from service import logs

    with pytest.raises(IntegrityError) as failed:
        with store.writing() as s:
            s.execute(
                text("INSERT INTO tenants (id, name, disabled, created_at) VALUES (:id, NULL, false, :at)"),
                {"id": "secret-payload-4711", "at": "2026-01-01"},
            )
    assert "hidden due to hide_parameters" in str(failed.value)
    logger = logging.getLogger("graft.test-security")
    with caplog.at_level(logging.ERROR, logger="graft.test-security"):
        logger.propagate = True
        logs.exception(logger, "unhandled error", failed.value)
    formatted = "\n".join(logs.JsonFormatter().format(r) for r in caplog.records)
    assert "IntegrityError" in formatted or "NotNullViolation" in formatted, formatted
    assert "INSERT INTO tenants" in formatted and "secret-payload-4711" not in formatted


def test_zip_expansion_limit_at_its_boundary() -> None:
    """GRAFT_MAX_UPLOAD_UNCOMPRESSED_BYTES: a zip expanding to exactly the limit is read; one byte
    more is refused (from its directory, before extracting) with the limit in the message."""
    from service.api.errors import answer_for
    from service.datasets import DatasetError, read_image_folder

    from .test_datasets import PNG, make_zip

    def read(extra: bytes) -> None:
        zipped = make_zip({"cat/a.png": PNG + b"\x00" * 500, "dog/b.png": PNG + extra})
        read_image_folder(zipped, max_files=10, max_total_bytes=2 * len(PNG) + 1000, max_file_bytes=10_000)

    read(b"\x00" * 500)
    with pytest.raises(DatasetError, match=f"the limit is {2 * len(PNG) + 1000}") as refused:
        read(b"\x00" * 501)
    assert refused.value.code == "too_large" and answer_for(refused.value).status == 413


def test_rollback_refuses_to_activate_a_version_that_failed_to_load(store: Store) -> None:
    """v1 is active, then marked failed (its weights did not load); v2 replaces it. Rolling back would
    activate v1 again and fail every predict: 409 with a message, the active version stays v2."""
    tenant, _ = store.create_tenant("acme")
    task, _ = store.create_task(tenant.id, "t", modality="text", backbone="minilm", head="linear", examples=EXAMPLES)
    claimed = store.claim_job("w", lease_s=60, max_attempts=3)
    first = store.complete_job(claimed.id, "w", new_version())
    store.mark_version_failed(task.id, first, "HeadFormatError: corrupt")
    store.add_examples(tenant.id, "t", EXAMPLES)
    claimed = store.claim_job("w", lease_s=60, max_attempts=3)
    second = store.complete_job(claimed.id, "w", new_version())
    assert store.get_task(tenant.id, "t").active_version == second
    assert store.version(task.id, second).metrics["promotion"]["previous_active"] == first
    with pytest.raises(Conflict, match=f"version {first} of task 't' failed to load .*rollback is refused"):
        store.rollback(tenant.id, "t")
    assert store.get_task(tenant.id, "t").active_version == second


def test_concurrent_requests_cannot_overshoot_a_quota(store: Store) -> None:
    """Eight threads at once each add 2 examples to a task holding 2, quota 10 per task; eight more each
    create a task, quota 3 per tenant. The quota check runs in the write's own transaction under the
    tenant's lock (PostgreSQL: a row lock; SQLite: the write lock), so exactly the quota is reached,
    never more (a check before the write let all k requests through: an overshoot of k−1)."""
    settings = Settings.from_env({}, max_examples_per_task=10, max_tasks_per_tenant=3)
    tenant, _ = store.create_tenant("acme")
    task, _ = store.create_task(
        tenant.id, "t", modality="text", backbone="minilm", head="linear", examples=EXAMPLES[:2]
    )
    barrier = threading.Barrier(8)

    def add(i: int) -> str:
        batch = [(f"text {i}a", "pos"), (f"text {i}b", "neg")]
        barrier.wait()
        try:
            store.add_examples(tenant.id, "t", batch, guard=quotas.examples_guard(settings, tenant.id, task, batch))
            return "ok"
        except QuotaExceeded as exc:
            return exc.code

    def create(i: int) -> str:
        barrier.wait()
        try:
            store.create_task(
                tenant.id,
                f"n{i}",
                modality="text",
                backbone="minilm",
                head="linear",
                examples=EXAMPLES,
                guard=quotas.examples_guard(settings, tenant.id, None, EXAMPLES),
            )
            return "ok"
        except QuotaExceeded as exc:
            return exc.code

    with ThreadPoolExecutor(8) as pool:
        added = list(pool.map(add, range(8)))
    assert store.example_count(task.id) == 10
    assert sorted(added) == ["ok"] * 4 + ["quota_exceeded"] * 4
    with ThreadPoolExecutor(8) as pool:
        created = list(pool.map(create, range(8)))
    assert len(store.list_tasks(tenant.id)) == 3  # "t" and two new ones
    assert sorted(created) == ["ok"] * 2 + ["quota_exceeded"] * 6
