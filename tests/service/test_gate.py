"""The HTTP layer's gate, on the real FastAPI app and a real store (no backbones): authentication
before any body is read, body limits by matched route, key roles, throttled failed authentication,
the admin token's strength, metrics that name no tenant and no raw path."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import pytest

from service import metrics
from service.api.app import create
from service.api.limits import UPLOAD_ROUTES
from service.api.routes import ROUTES
from service.config import Settings
from service.store.repository import Store
from service.tenancy import Auth, Throttle, load_admin_token, weak_admin_token

ADMIN = "gfa_" + "k3Y9-zQpW7mR" * 3


@dataclass
class GateRuntime:
    """What the gate and the tenant routes reach: settings, store, auth, throttle (no backbones)."""

    settings: Settings
    store: Store
    ready: bool = True
    auth: Auth = field(init=False)
    auth_throttle: Throttle = field(init=False)

    def __post_init__(self) -> None:
        self.auth = Auth(self.store, ADMIN)
        self.auth_throttle = Throttle(self.settings.auth_failure_rate_per_s, self.settings.auth_failure_burst)


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[GateRuntime]:
    store = Store(f"sqlite:///{tmp_path / 'graft.db'}")
    store.migrate()
    settings = Settings.from_env(
        {},
        data_dir=str(tmp_path),
        max_request_bytes=1000,
        max_upload_bytes=5000,
        auth_failure_burst=3,
        auth_failure_rate_per_s=0.01,
    )
    yield GateRuntime(settings, store)
    store.close()


@pytest.fixture
def app(rt: GateRuntime):
    app = create()
    app.state.runtime = rt
    return app


@dataclass
class Answer:
    status: int
    body: dict
    headers: dict[str, str]
    chunks_read: int  # how many body chunks the server took from the client


def call(
    app,
    method: str,
    path: str,
    token: str | None = None,
    chunks: tuple[bytes, ...] = (),
    length: int | None = None,
    content_type: str = "application/json",
    client: str = "10.0.0.1",
) -> Answer:
    """One raw ASGI request; the body comes in ``chunks`` (chunked unless ``length`` is given)."""
    headers = [(b"content-type", content_type.encode())]
    if token:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "scheme": "http",
        "query_string": b"",
        "headers": headers,
        "client": (client, 1234),
        "server": ("127.0.0.1", 3000),
    }
    read = 0
    empty_sent = False
    sent: list[dict] = []

    async def receive() -> dict:
        nonlocal read, empty_sent
        if read < len(chunks):
            read += 1
            return {"type": "http.request", "body": chunks[read - 1], "more_body": read < len(chunks)}
        if not chunks and not empty_sent:
            empty_sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await anyio.sleep(3600)  # the client waits for the answer
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    async def run() -> None:
        with anyio.fail_after(30):
            await app(scope, receive, send)

    anyio.run(run)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return Answer(
        start["status"], json.loads(body) if body else {}, {k.decode(): v.decode() for k, v in start["headers"]}, read
    )


BIG = (b'{"examples": [' + b" " * 900, b" " * 900, b" " * 900)  # 2700 bytes, chunked


def test_anonymous_bodies_are_refused_before_a_byte_is_read(app) -> None:
    for method, path in [
        ("POST", "/v1/tasks"),
        ("PATCH", "/v1/tenants/ten_x"),
        ("POST", "/v1/tasks/t/dataset"),
        ("POST", "/v1/tasks/t/predict"),
        ("POST", "/v1/tenants/ten_x/keys"),
    ]:
        for token in (None, f"gft_{len(path):04d}wrong"):
            answer = call(app, method, path, token, BIG, client=f"10.1.{len(path)}.{token is None}")
            assert answer.status == 401, (method, path, answer)
            assert answer.chunks_read == 0, (method, path)  # nothing of the body was read
            assert answer.body["error"]["code"] == "unauthorized"
    declared = call(app, "POST", "/v1/tasks", None, (b"{}",), length=64 * 2**20)  # a declared 64 MiB: 401, not 413
    assert declared.status == 401 and declared.chunks_read == 0


def test_body_limits_go_by_the_matched_route_and_count_every_chunked_body(app, rt: GateRuntime) -> None:
    tenant, key = rt.store.create_tenant("acme")
    # the admin route PATCH /v1/tenants/{tenant_id} with id "dataset": a JSON route, however its path ends
    over = call(app, "PATCH", "/v1/tenants/dataset", ADMIN, BIG)
    assert over.status == 413 and "the limit is 1000 bytes" in over.body["error"]["message"], over
    ok = call(app, "PATCH", f"/v1/tenants/{tenant.id}", ADMIN, (b'{"disabled": ', b"false}"))
    assert ok.status == 200 and ok.body["disabled"] is False, ok
    # an upload route may take more than the JSON limit, but its chunked body is counted too
    huge = tuple([b"x" * 1000] * 6)  # 6000 bytes > 5000
    upload = call(app, "POST", "/v1/tasks/t/dataset", key, huge, content_type="text/csv")
    assert upload.status == 413 and "5000 bytes" in upload.body["error"]["message"], upload
    assert upload.chunks_read <= 6
    assert {"/v1/tasks/{name}/dataset", "/v1/tasks/{name}/predict/files"} == UPLOAD_ROUTES
    templates = {getattr(r, "path", None) for r in ROUTES}
    assert UPLOAD_ROUTES <= templates  # the limits name real routes
    assert len({p for p in app.openapi()["paths"]}) == len({t for t in templates})  # and ROUTES has every route


def test_key_roles(app, rt: GateRuntime) -> None:
    tenant, owner = rt.store.create_tenant("roles")
    issued = call(app, "POST", f"/v1/tenants/{tenant.id}/keys", owner, (json.dumps({"role": "predict"}).encode(),))
    assert issued.status == 201 and issued.body["role"] == "predict", issued
    predict = issued.body["api_key"]
    writer = call(app, "POST", f"/v1/tenants/{tenant.id}/keys", ADMIN, (b'{"role": "write"}',)).body["api_key"]
    default = call(app, "POST", f"/v1/tenants/{tenant.id}/keys", owner)
    assert default.status == 201 and default.body["role"] == "owner"
    for key in (predict, writer):  # only owners (and the admin) manage keys; the body is not read
        for method, path in [
            ("POST", f"/v1/tenants/{tenant.id}/keys"),
            ("GET", f"/v1/tenants/{tenant.id}/keys"),
            ("DELETE", f"/v1/tenants/{tenant.id}/keys/{issued.body['id']}"),
        ]:
            answer = call(app, method, path, key, (b'{"role": "owner"}',) if method == "POST" else ())
            assert answer.status == 403 and "role 'owner'" in answer.body["error"]["message"], (method, answer)
            assert answer.chunks_read == 0
    # predict keys may not write: 403 naming the role, before the body is read
    for method, path in [
        ("POST", "/v1/tasks"),
        ("DELETE", "/v1/tasks/t"),
        ("POST", "/v1/tasks/t/examples"),
        ("POST", "/v1/tasks/t/dataset"),
        ("POST", "/v1/tasks/t/promote"),
        ("POST", "/v1/tasks/t/rollback"),
        ("PATCH", "/v1/tasks/t"),
        ("POST", "/v1/tasks/t/feedback/promote"),
        ("POST", "/v1/tasks/t/versions/2/shadow"),
        ("DELETE", "/v1/tasks/t/versions/2/shadow"),
    ]:
        answer = call(app, method, path, predict, (b"{}",))
        assert answer.status == 403 and "role 'write'" in answer.body["error"]["message"], (method, path, answer)
        assert answer.chunks_read == 0
    # ...but read: listing tasks passes the gate (the route answers)
    assert call(app, "GET", "/v1/tasks", predict).status != 403
    # a write key passes the gate of a write route (the route itself then answers 404 for a missing task)
    assert call(app, "DELETE", "/v1/tasks/nothing", writer).status == 404
    listed = call(app, "GET", f"/v1/tenants/{tenant.id}/keys", owner).body["keys"]
    assert [k["role"] for k in listed] == ["owner", "predict", "write", "owner"]
    assert call(app, "POST", f"/v1/tenants/{tenant.id}/keys", owner, (b'{"role": "root"}',)).status == 422


def test_active_keys_are_capped_and_key_events_are_audited(app, rt: GateRuntime, caplog) -> None:
    tenant, owner = rt.store.create_tenant("capped")
    owner_id = rt.store.list_keys(tenant.id)[0].id
    cap = rt.settings.max_keys_per_tenant
    with caplog.at_level("INFO", logger="graft.audit"):
        ids = [call(app, "POST", f"/v1/tenants/{tenant.id}/keys", owner).body["id"] for _ in range(cap - 1)]
        refused = call(app, "POST", f"/v1/tenants/{tenant.id}/keys", owner)
        assert refused.status == 409 and f"the limit is {cap}" in refused.body["error"]["message"], refused
        assert call(app, "DELETE", f"/v1/tenants/{tenant.id}/keys/{ids[0]}", ADMIN).status == 204
        again = call(app, "POST", f"/v1/tenants/{tenant.id}/keys", owner, (b'{"role": "predict"}',))
        assert again.status == 201
    events = [r for r in caplog.records if getattr(r, "event", None)]
    assert [r.event for r in events] == ["key_issued"] * (cap - 1) + ["key_revoked", "key_issued"]
    assert events[0].by == owner_id and events[-2].by == "admin" and events[-2].key_id == ids[0]
    assert events[-1].role == "predict" and events[-1].key_id == again.body["id"]
    for record in events:
        assert owner not in record.getMessage() and owner not in str(vars(record))


def test_failed_authentication_is_throttled_per_address_and_key_prefix(app, rt: GateRuntime) -> None:
    tenant, key = rt.store.create_tenant("throttled")
    for _ in range(3):  # the burst
        assert call(app, "GET", "/v1/tasks", "gft_guess", client="10.9.9.9").status == 401
    blocked = call(app, "GET", "/v1/tasks", "gft_guess", client="10.9.9.9")
    assert blocked.status == 429 and int(blocked.headers["retry-after"]) >= 1, blocked
    assert "failed authentications" in blocked.body["error"]["message"]
    assert call(app, "GET", "/v1/tasks", key, client="10.9.9.9").status == 429  # the address is spent
    assert call(app, "GET", "/v1/tasks", key, client="10.8.8.8").status == 200  # another address is not
    # one key prefix guessed from many addresses: the prefix's bucket runs out
    statuses = [call(app, "GET", "/v1/tasks", "gft_AAAAwrong" + str(i), client=f"10.7.0.{i}").status for i in range(5)]
    assert statuses == [401, 401, 401, 429, 429]
    bucket = Throttle(1.0, 2, clock=lambda: now)
    now = 0.0
    bucket.fail("a")
    bucket.fail("a")
    assert bucket.blocked("a") == pytest.approx(1.0)
    now = 1.0
    assert bucket.blocked("a") is None and bucket.blocked("b") is None


def test_a_weak_admin_token_from_the_environment_refuses_to_start(tmp_path: Path) -> None:
    for weak in ("test-admin-token", "a" * 40, "sizing"):
        assert weak_admin_token(weak)
        with pytest.raises(ValueError, match="GRAFT_ADMIN_TOKEN is too weak"):
            load_admin_token(Settings.from_env({"GRAFT_ADMIN_TOKEN": weak, "GRAFT_DATA_DIR": str(tmp_path)}))
    assert weak_admin_token(ADMIN) is None
    generated, path = load_admin_token(Settings.from_env({"GRAFT_DATA_DIR": str(tmp_path)}))
    assert path is not None and weak_admin_token(generated) is None


def test_metrics_name_no_tenant_by_default_and_drop_raw_paths() -> None:
    assert Settings.from_env({}).metrics_tenant_labels == 0
    off = metrics.TenantLabels(Settings.from_env({}).metrics_tenant_labels, admit_after=1)
    assert off.label("ten_secret", 1000) == metrics.OTHER
    on = metrics.TenantLabels(2, admit_after=1)
    value = on.label("ten_secret", 5)
    assert value.startswith("t-") and "ten_secret" not in value and value == metrics.opaque("ten_secret")
    page = "\n".join(
        [
            'bentoml_service_request_total{endpoint="/x8f7a",http_response_code="404"} 1.0',
            'bentoml_service_request_duration_seconds_bucket{endpoint="/robots.txt",le="0.1"} 1.0',
            'bentoml_service_request_total{endpoint="/v1/jobs/job_abc",http_response_code="200"} 3.0',
            'bentoml_service_request_total{endpoint="/readyz",http_response_code="200"} 9.0',
            'bentoml_service_request_in_progress{endpoint="/metrics"} 1.0',
        ]
    )
    kept = metrics.without_raw_paths(page)
    assert "/x8f7a" not in kept and "robots" not in kept and "job_abc" not in kept
    assert "/readyz" in kept and 'endpoint="/metrics"' in kept
