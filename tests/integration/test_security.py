"""Tenant security end to end, on real `bentoml serve` processes: API keys (rotate, revoke,
disable), isolation of every endpoint between two tenants, error bodies and logs that leak
nothing, corrupt head blobs.

Two tenants share the session server. Tenant A owns a trained task and a job; tenant B tries each
endpoint on A's task name, job id and tenant id and must get 404 with A's data untouched.
"""

from __future__ import annotations

import json
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import Server, wait_for_job

pytestmark = pytest.mark.integration

MARKER = "zebra-payload-7f3a"  # in every example and input: must never reach a log line
TOY = [
    {"input": f"I love this, it is wonderful {MARKER}", "label": "pos"},
    {"input": f"great value, very happy {MARKER}", "label": "pos"},
    {"input": f"terrible, it broke at once {MARKER}", "label": "neg"},
    {"input": f"awful service, never again {MARKER}", "label": "neg"},
]
LEAKS = re.compile(
    r"Traceback|File \"|/work/|/tmp/|site-packages|sqlalchemy|SELECT |INSERT |UPDATE |sqlite|psycopg", re.I
)


def key_of(client: httpx.Client) -> str:
    return client.headers["authorization"].split()[1]


def error_of(resp: httpx.Response, status: int, *fragments: str, forbidden: tuple[str, ...] = ()) -> dict:
    """An error answer with ``status``, ``{"error": {"code", "message"}}``, the fragments, and no leak."""
    assert resp.status_code == status, (resp.request.method, resp.request.url.path, resp.status_code, resp.text)
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    for fragment in fragments:
        assert fragment in body["error"]["message"], body
    assert not LEAKS.search(resp.text), resp.text
    for word in forbidden:
        assert word not in resp.text, (word, resp.text)
    return body["error"]


@pytest.fixture(scope="module")
def tenants(server: Server) -> dict:
    """Tenant A with a trained two-version task and a job; tenant B with nothing."""
    with server.admin() as admin:
        a = admin.post("/v1/tenants", json={"name": "victim-corp"}).json()
        b = admin.post("/v1/tenants", json={"name": "mallory-inc"}).json()
    ca, cb = server.client(a["api_key"]), server.client(b["api_key"])
    first = ca.post("/v1/tasks", json={"name": "secret", "examples": TOY})
    assert first.status_code == 202, first.text
    assert wait_for_job(ca, first.json()["job"]["id"])["status"] == "succeeded"
    second = ca.post("/v1/tasks/secret/examples", json={"examples": TOY[:2]})
    job = wait_for_job(ca, second.json()["job"]["id"])
    assert job["status"] == "succeeded", job
    yield {"a": a, "b": b, "ca": ca, "cb": cb, "job": job["id"]}
    ca.close()
    cb.close()


def snapshot(client: httpx.Client) -> dict:
    task = client.get("/v1/tasks/secret").json()
    versions = client.get("/v1/tasks/secret/versions").json()
    return {
        "active": task["active_version"],
        "examples": task["examples_per_label"],
        "versions": [(v["version"], v["status"]) for v in versions["versions"]],
    }


def test_every_endpoint_is_404_for_another_tenant_and_leaves_the_data_untouched(server: Server, tenants: dict) -> None:
    a, ca, cb, job = tenants["a"], tenants["ca"], tenants["cb"], tenants["job"]
    before = snapshot(ca)
    assert before["active"] == 2 and len(before["versions"]) == 2
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
    attacks = {
        "get task": lambda: cb.get("/v1/tasks/secret"),
        "append examples": lambda: cb.post("/v1/tasks/secret/examples", json={"examples": TOY}),
        "predict": lambda: cb.post("/v1/tasks/secret/predict", json={"inputs": ["hello"]}),
        "predict files": lambda: cb.post(
            "/v1/tasks/secret/predict/files", files=[("file", ("a.png", png, "image/png"))]
        ),
        "export": lambda: cb.get("/v1/tasks/secret/export"),
        "export version": lambda: cb.get("/v1/tasks/secret/export", params={"version": 1}),
        "versions": lambda: cb.get("/v1/tasks/secret/versions"),
        "promote": lambda: cb.post("/v1/tasks/secret/promote", json={"version": 1}),
        "rollback": lambda: cb.post("/v1/tasks/secret/rollback"),
        "delete": lambda: cb.delete("/v1/tasks/secret"),
        "job": lambda: cb.get(f"/v1/jobs/{job}"),
        "issue key for A": lambda: cb.post(f"/v1/tenants/{a['id']}/keys"),
        "list A's keys": lambda: cb.get(f"/v1/tenants/{a['id']}/keys"),
        "revoke A's key": lambda: cb.delete(f"/v1/tenants/{a['id']}/keys/key_x"),
    }
    for attack, call in attacks.items():
        resp = call()
        error_of(resp, 404, forbidden=(a["name"], a["id"], MARKER))
        assert resp.json()["error"]["code"] == "not_found", attack
    admin_only = {
        "list tenants": lambda: cb.get("/v1/tenants"),
        "create tenant": lambda: cb.post("/v1/tenants", json={"name": "evil"}),
        "disable A": lambda: cb.patch(f"/v1/tenants/{a['id']}", json={"disabled": True}),
    }
    for attack, call in admin_only.items():
        assert error_of(call(), 401, forbidden=(a["name"],))["code"] == "unauthorized", attack
    assert cb.get("/v1/tasks").json() == {"tasks": []}
    # a dataset upload under A's task name makes B's own task; A's is untouched
    csv = "input,label\n" + "".join(f"text {i} {MARKER},{'xy'[i % 2]}\n" for i in range(4))
    upload = cb.post("/v1/tasks/secret/dataset", content=csv, headers={"content-type": "text/csv"})
    assert upload.status_code == 202 and upload.json()["created"] is True, upload.text
    assert cb.get("/v1/tasks/secret").json()["examples_per_label"] == {"x": 2, "y": 2}
    assert snapshot(ca) == before
    assert ca.post("/v1/tasks/secret/predict", json={"inputs": ["so happy"]}).status_code == 200
    cb.delete("/v1/tasks/secret")
    assert snapshot(ca) == before


def test_job_ids_are_unguessable(tenants: dict) -> None:
    job = tenants["job"]
    assert re.fullmatch(r"job_[A-Za-z0-9_-]{22}", job)  # 128 random bits


def test_rotate_revoke_and_disable(server: Server) -> None:
    with server.admin() as admin:
        created = admin.post("/v1/tenants", json={"name": "rotator"}).json()
        tid, first = created["id"], created["api_key"]
        assert re.fullmatch(r"gft_[A-Za-z0-9_-]{43}", first)  # 256 random bits
        with server.client(first) as me:
            issued = me.post(f"/v1/tenants/{tid}/keys")  # the tenant rotates its own key
            assert issued.status_code == 201, issued.text
            second = issued.json()["api_key"]
            keys = me.get(f"/v1/tenants/{tid}/keys").json()["keys"]
            assert [k["prefix"] for k in keys] == [first[:8], second[:8]]
            assert all("api_key" not in k for k in keys) and first not in str(keys)
            old = next(k["id"] for k in keys if k["prefix"] == first[:8])
            assert me.delete(f"/v1/tenants/{tid}/keys/{old}").status_code == 204
            error_of(me.get("/v1/tasks"), 401)  # revoked at once, though it was just cached
        with server.client(second) as me:
            assert me.get("/v1/tasks").status_code == 200
            by_admin = admin.post(f"/v1/tenants/{tid}/keys").json()["api_key"]
            assert admin.patch(f"/v1/tenants/{tid}", json={"disabled": True}).json()["disabled"] is True
            for key in (second, by_admin):
                with server.client(key) as c:
                    error_of(c.get("/v1/tasks"), 401)
            listed = {t["id"]: t["disabled"] for t in admin.get("/v1/tenants").json()}
            assert listed[tid] is True
            assert admin.patch(f"/v1/tenants/{tid}", json={"disabled": False}).status_code == 200
            assert me.get("/v1/tasks").status_code == 200
        error_of(admin.patch("/v1/tenants/ten_nope", json={"disabled": True}), 404)
        error_of(admin.post("/v1/tenants/ten_nope/keys"), 404)
    with server.client("gft_" + "A" * 43) as forged:
        error_of(forged.get("/v1/tasks"), 401)
    with server.client(server.admin_token + "x") as wrong_admin:
        error_of(wrong_admin.get("/v1/tenants"), 401)


def test_logs_hold_no_keys_and_no_payloads(server: Server, tenants: dict) -> None:
    tenants["ca"].post("/v1/tasks/secret/predict", json={"inputs": [f"log probe {MARKER}"]})
    logs = server.logs()
    assert tenants["a"]["id"] in logs  # the log is the right one: ids are logged
    for secret in (tenants["a"]["api_key"], tenants["b"]["api_key"], server.admin_token, MARKER):
        assert secret not in logs, secret


def test_a_corrupt_head_blob_fails_its_version_and_the_service_serves_on(server: Server) -> None:
    c = server.new_tenant("corrupted")
    for name in ("broken", "fine"):
        job = c.post("/v1/tasks", json={"name": name, "examples": TOY}).json()["job"]["id"]
        assert wait_for_job(c, job)["status"] == "succeeded"
    # nothing has predicted yet, so no process holds the head: the next predict loads the blob
    tenant_id = next(t["id"] for t in server.admin().get("/v1/tenants").json() if t["name"] == "corrupted")
    with sqlite3.connect(server.data_dir / "graft.db") as db:
        db.execute(
            "UPDATE versions SET weights = ? WHERE task_id = (SELECT id FROM tasks WHERE name = 'broken' AND "
            "tenant_id = ?)",
            (b"\x00not-safetensors" * 8, tenant_id),
        )
    error_of(c.post("/v1/tasks/broken/predict", json={"inputs": ["hi"]}), 503, "version 1 failed to load", "corrupt")
    error_of(c.get("/v1/tasks/broken/export"), 503, "failed to load")
    versions = c.get("/v1/tasks/broken/versions").json()["versions"]
    assert versions[0]["status"] == "failed" and "HeadFormatError" in versions[0]["error"]
    assert c.post("/v1/tasks/fine/predict", json={"inputs": ["so happy"]}).status_code == 200
    assert "a head failed to load" in server.logs()
    # retraining gives the task a working version again (the corrupt one does not block it)
    job = c.post("/v1/tasks/broken/examples", json={"examples": TOY[:2]}).json()["job"]["id"]
    assert wait_for_job(c, job)["status"] == "succeeded"
    assert c.post("/v1/tasks/broken/predict", json={"inputs": ["so happy"]}).json()["version"] == 2


def test_errors_bentoml_answers_itself_are_json_too(server: Server, tenants: dict) -> None:
    """A path with a newline never reaches Graft's app (BentoML's mount pattern does not match it):
    BentoML's plain-text 404 is rewritten to the JSON error shape (found by schemathesis)."""
    cb = tenants["cb"]
    for path in ("/v1/tasks/a%0Ab", "/v1/tenants/x%0Ay/keys", "/nothing-here"):
        assert error_of(cb.get(path), 404)["code"] == "not_found", path
    assert error_of(cb.request("PUT", "/v1/tasks"), 405)["code"] == "method_not_allowed"


# -- issue 15, the HTTP layer ------------------------------------------------------------------


def test_bodies_are_limited_by_route_and_keys_by_role(server: Server, tenants: dict) -> None:
    a, ca = tenants["a"], tenants["ca"]
    # the admin route PATCH /v1/tenants/{tenant_id} with the id "dataset": a chunked body over the
    # JSON limit is counted (it once passed as an "upload" by its path's ending) and refused unparsed
    from service.config import SETTINGS

    limit = SETTINGS["max_request_bytes"].default  # the shared server runs with the default
    chunks = iter([b'{"disabled": true' + b" " * (limit - 17), b" " * 16])  # limit + 16 bytes, the excess last
    with server.admin() as admin:
        big = admin.patch("/v1/tenants/dataset", content=chunks, headers={"content-type": "application/json"})
    error_of(big, 413, f"the limit is {limit} bytes")
    # anonymous: 401 before the body is read, whatever its size
    with server.client() as anonymous:
        error_of(anonymous.post("/v1/tasks", content=b"{" * 100_000, headers={"content-type": "application/json"}), 401)
    # roles: the owner mints a predict key; it predicts and reads, and nothing more
    issued = ca.post(f"/v1/tenants/{a['id']}/keys", json={"role": "predict"})
    assert issued.status_code == 201 and issued.json()["role"] == "predict", issued.text
    with server.client(issued.json()["api_key"]) as reader:
        assert reader.post("/v1/tasks/secret/predict", json={"inputs": ["so happy"]}).status_code == 200
        assert reader.get("/v1/tasks/secret/versions").status_code == 200
        error_of(reader.post("/v1/tasks/secret/examples", json={"examples": TOY}), 403, "role 'write'")
        error_of(reader.post("/v1/tasks/secret/rollback"), 403, "role 'write'")
        error_of(reader.post(f"/v1/tenants/{a['id']}/keys", json={"role": "owner"}), 403, "role 'owner'")
        error_of(reader.delete(f"/v1/tenants/{a['id']}/keys/{issued.json()['id']}"), 403, "role 'owner'")
    assert ca.delete(f"/v1/tenants/{a['id']}/keys/{issued.json()['id']}").status_code == 204
    audit = [json.loads(line) for line in server.logs().splitlines() if '"event": "key_' in line]
    mine = [e for e in audit if e.get("key_id") == issued.json()["id"]]
    assert [e["event"] for e in mine] == ["key_issued", "key_revoked"] and mine[0]["role"] == "predict"
    assert all(e["by"].startswith("key_") for e in mine)  # by the owner's key id
    assert issued.json()["api_key"] not in server.logs()


def test_metrics_show_no_tenant_and_random_paths_make_no_series(server: Server, tenants: dict) -> None:
    a, ca = tenants["a"], tenants["ca"]
    assert ca.post("/v1/tasks/secret/predict", json={"inputs": ["fine"] * 120}).status_code == 200  # a busy tenant

    def series() -> set[str]:
        page = httpx.get(f"{server.url}/metrics").text
        return {line.rsplit(" ", 1)[0] for line in page.splitlines() if line and not line.startswith("#")}

    with server.client() as anonymous:
        anonymous.get(f"/probe-{secrets.token_hex(8)}")  # the first unmatched path may add its series
        before = series()
        for _ in range(50):
            anonymous.get(f"/{secrets.token_hex(8)}/{secrets.token_hex(4)}")
        after = series()
    assert after - before == set(), sorted(after - before)[:5]
    page = httpx.get(f"{server.url}/metrics").text
    assert a["id"] not in page and tenants["b"]["id"] not in page


def test_exports_are_cached_built_one_at_a_time_and_deleted_with_their_task(server: Server) -> None:
    c = server.new_tenant("exporter")
    exports = server.data_dir / "exports"
    others = set(exports.rglob("*.zip"))  # the shared server holds other tests' exports too

    def mine() -> list:
        return sorted(set(exports.rglob("*.zip")) - others)

    for step in (
        c.post("/v1/tasks", json={"name": "cached", "examples": TOY, "head": "linear"}),
        c.post("/v1/tasks/cached/examples", json={"examples": TOY[:2]}),
    ):
        assert wait_for_job(c, step.json()["job"]["id"])["status"] == "succeeded"
    with ThreadPoolExecutor(2) as pool:  # two builds of one tenant at once: one waits its turn
        answers = list(pool.map(lambda v: c.get("/v1/tasks/cached/export", params={"version": v}), (1, 2)))
    assert sorted(r.status_code for r in answers) == [200, 429], [r.text[:200] for r in answers]
    busy = next(r for r in answers if r.status_code == 429)
    error_of(busy, 429, "already building an export")
    assert int(busy.headers["retry-after"]) >= 1
    assert len(mine()) == 1  # the one built
    for version in (1, 2):
        first = c.get("/v1/tasks/cached/export", params={"version": version})
        second = c.get("/v1/tasks/cached/export", params={"version": version})
        assert first.status_code == second.status_code == 200
        assert first.content == second.content  # served from the cache (its manifest's exported_at is the same)
    assert len(mine()) == 2
    assert c.delete("/v1/tasks/cached").status_code == 204
    assert mine() == []


def test_one_upload_per_tenant_at_a_time(server: Server) -> None:
    c = server.new_tenant("one-upload-at-a-time")
    key = key_of(c)
    started = threading.Event()

    def slow() -> Iterator[bytes]:
        yield b"input,label\n"
        started.set()
        time.sleep(3)
        yield b"a,pos\nb,neg\n"

    def first() -> httpx.Response:
        with server.client(key) as mine:
            return mine.post("/v1/tasks/slow/dataset", content=slow(), headers={"content-type": "text/csv"})

    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(first)
        assert started.wait(30)
        time.sleep(0.5)
        second = c.post(
            "/v1/tasks/fast/dataset", content=b"input,label\na,pos\nb,neg\n", headers={"content-type": "text/csv"}
        )
        error_of(second, 429, "one upload at a time")
        assert pending.result().status_code == 202
    assert (
        c.post(
            "/v1/tasks/fast/dataset", content=b"input,label\na,pos\nb,neg\n", headers={"content-type": "text/csv"}
        ).status_code
        == 202
    )
