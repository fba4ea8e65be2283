"""Tenant security end to end, on real `bentoml serve` processes: API keys (rotate, revoke,
disable), isolation of every endpoint between two tenants, error bodies and logs that leak
nothing, corrupt head blobs.

Two tenants share the session server. Tenant A owns a trained task and a job; tenant B tries each
endpoint on A's task name, job id and tenant id and must get 404 with A's data untouched.
"""

from __future__ import annotations

import re
import sqlite3

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
LEAKS = re.compile(r"Traceback|File \"|/work/|/tmp/|site-packages|sqlalchemy|SELECT |INSERT |UPDATE |sqlite|psycopg", re.I)


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
    return {"active": task["active_version"], "examples": task["examples_per_label"],
            "versions": [(v["version"], v["status"]) for v in versions["versions"]]}


def test_every_endpoint_is_404_for_another_tenant_and_leaves_the_data_untouched(server: Server, tenants: dict) -> None:
    a, ca, cb, job = tenants["a"], tenants["ca"], tenants["cb"], tenants["job"]
    before = snapshot(ca)
    assert before["active"] == 2 and len(before["versions"]) == 2
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
    attacks = {
        "get task": lambda: cb.get("/v1/tasks/secret"),
        "append examples": lambda: cb.post("/v1/tasks/secret/examples", json={"examples": TOY}),
        "predict": lambda: cb.post("/v1/tasks/secret/predict", json={"inputs": ["hello"]}),
        "predict files": lambda: cb.post("/v1/tasks/secret/predict/files", files=[("file", ("a.png", png, "image/png"))]),
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
        db.execute("UPDATE versions SET weights = ? WHERE task_id = (SELECT id FROM tasks WHERE name = 'broken' AND tenant_id = ?)",
                   (b"\x00not-safetensors" * 8, tenant_id))
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
