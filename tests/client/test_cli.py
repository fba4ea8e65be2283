"""The ``graft`` CLI, run as a subprocess against the real server: every command, ``--json`` output,
exit codes, settings from the environment and from the config file."""

from __future__ import annotations

import base64
import csv
import json
import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from graft import cli, errors
from tests.conftest import ROOT, free_port, load_jsonl, per_label

from .conftest import new_key, write_image_folder, write_jsonl

pytestmark = pytest.mark.integration


def graft(*args: str, env: dict[str, str] | None = None, config: Path | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GRAFT_")}
    clean["GRAFT_CONFIG"] = str(config or ROOT / "var" / "no-such-graft-config.toml")  # never the developer's own
    return subprocess.run(
        [sys.executable, "-m", "graft", *args],
        cwd=ROOT,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )


def ok_json(result: subprocess.CompletedProcess) -> object:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return json.loads(result.stdout)


def write_csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["input", "label"])
        writer.writeheader()
        writer.writerows({"input": r["input"], "label": r["label"]} for r in rows)
    return path


def test_every_command(server, news_train, news_test, tmp_path) -> None:
    admin = {"GRAFT_URL": server.url, "GRAFT_ADMIN_TOKEN": server.admin_token}
    tenant = ok_json(graft("tenants", "create", "cli-tenant", "--json", env=admin))
    assert tenant["name"] == "cli-tenant" and tenant["api_key"]
    listed = graft("tenants", "list", env=admin)
    assert listed.returncode == 0 and "cli-tenant" in listed.stdout and listed.stdout.startswith("NAME")
    env = {"GRAFT_URL": server.url, "GRAFT_API_KEY": tenant["api_key"]}

    data = write_csv(tmp_path / "news.csv", news_train)
    created = ok_json(graft("tasks", "create", "news", "--data", str(data), "--head", "linear", "--json", env=env))
    assert created["created"] and created["examples"] == len(news_train)
    assert (created["job"]["status"], created["task"]["active_version"]) == ("succeeded", 1)

    human = graft("tasks", "list", env=env)
    assert human.returncode == 0 and human.stdout.splitlines()[0].split()[:4] == [
        "NAME",
        "MODALITY",
        "KIND",
        "BACKBONE",
    ]
    assert human.stdout.splitlines()[1].split()[:3] == ["news", "text", "classification"]
    assert [t["name"] for t in ok_json(graft("tasks", "list", "--json", env=env))] == ["news"]
    shown = ok_json(graft("--json", "tasks", "show", "news", env=env))  # global options go before or after the command
    assert sorted(shown["examples_per_label"]) == sorted({r["label"] for r in news_train})

    two = ok_json(graft("predict", "news", news_test[0]["input"], news_test[-1]["input"], "--json", env=env))
    assert two["version"] == 1 and len(two["predictions"]) == 2
    inputs = write_jsonl(tmp_path / "inputs.jsonl", news_test)
    from_file = ok_json(graft("predict", "news", "--file", str(inputs), "--top-k", "1", "--json", env=env))
    right = sum(p["label"] == r["label"] for p, r in zip(from_file["predictions"], news_test, strict=True))
    assert right / len(news_test) >= 0.7 and all(len(p["scores"]) == 1 for p in from_file["predictions"])
    table = graft("predict", "news", "--file", str(inputs), env=env)
    assert table.returncode == 0 and len(table.stdout.splitlines()) == len(news_test) + 1
    assert table.stdout.splitlines()[0].split() == ["INPUT", "LABEL", "SCORE", "OOD"]
    suggested = ok_json(graft("suggest", "news", "--file", str(inputs), "-k", "3", "--json", env=env))
    assert len(set(suggested["indices"])) == 3 and all(0 <= i < len(news_test) for i in suggested["indices"])
    table = graft("suggest", "news", "--file", str(inputs), "-k", "3", env=env)
    assert table.returncode == 0 and table.stdout.splitlines()[0].split() == ["INDEX", "UNCERTAINTY", "INPUT"]

    versions = ok_json(graft("tasks", "versions", "news", "--json", env=env))
    assert [v["version"] for v in versions["versions"]] == [1] and versions["versions"][0]["status"] == "active"
    assert ok_json(graft("tasks", "promote", "news", "1", "--json", env=env))["active_version"] == 1
    rollback = graft("tasks", "rollback", "news", "--json", env=env)
    assert rollback.returncode == cli.EXIT_REJECTED and json.loads(rollback.stdout)["error"]["code"] == "conflict"

    exported = ok_json(graft("export", "news", "-o", str(tmp_path / "model.zip"), "--json", env=env))
    with zipfile.ZipFile(exported["path"]) as bundle:
        assert "model.onnx" in bundle.namelist()
    backbones = ok_json(graft("backbones", "--json", env=env))
    assert {"text", "image"} <= {b["modality"] for b in backbones}

    deleted = graft("tasks", "delete", "news", env=env)
    assert deleted.returncode == 0 and "deleted" in deleted.stdout
    gone = graft("tasks", "show", "news", "--json", env=env)
    assert gone.returncode == cli.EXIT_NOT_FOUND and json.loads(gone.stdout)["error"]["code"] == "not_found"
    assert "not_found" in gone.stderr


def test_image_folder_and_image_files(server, tmp_path) -> None:
    env = {"GRAFT_URL": server.url, "GRAFT_API_KEY": new_key(server, "cli-images")}
    folder = write_image_folder(tmp_path / "digits", per_label(load_jsonl("digits.train.jsonl"), 8, seed=0))
    created = ok_json(
        graft("tasks", "create", "digits", "--data", str(folder), "--head", "prototype", "--json", env=env)
    )
    assert (created["task"]["modality"], created["examples"], created["job"]["status"]) == ("image", 80, "succeeded")
    test = per_label(load_jsonl("digits.test.jsonl"), 3, seed=1)
    files = []
    for i, row in enumerate(test):
        files.append(tmp_path / f"{i}.png")
        files[-1].write_bytes(base64.b64decode(row["input"]))
    answer = ok_json(graft("predict", "digits", *map(str, files), "--json", env=env))
    right = sum(p["label"] == r["label"] for p, r in zip(answer["predictions"], test, strict=True))
    assert right / len(test) >= 0.6  # chance is 0.1
    human = graft("predict", "digits", str(files[0]), env=env)
    assert human.returncode == 0 and human.stdout.splitlines()[1].startswith("0.png ")


def test_exit_codes(server, tmp_path) -> None:
    env = {"GRAFT_URL": server.url, "GRAFT_API_KEY": new_key(server, "cli-codes")}
    assert graft(env=env).returncode == cli.EXIT_USAGE  # no command
    assert graft("tasks", "frobnicate", env=env).returncode == cli.EXIT_USAGE
    missing = graft("tasks", "create", "x", "--data", str(tmp_path / "missing.csv"), env=env)
    assert missing.returncode == cli.EXIT_USAGE and "no such file" in missing.stderr
    assert graft("predict", "x", env=env).returncode == cli.EXIT_USAGE  # nothing to predict
    assert graft("predict", "x", str(tmp_path / "missing.png"), env=env).returncode == cli.EXIT_USAGE

    assert graft("tasks", "list", env={**env, "GRAFT_API_KEY": "wrong"}).returncode == cli.EXIT_AUTH
    assert graft("tasks", "list", env={"GRAFT_URL": server.url}).returncode == cli.EXIT_AUTH  # no key anywhere
    assert graft("tenants", "create", "t", env=env).returncode == cli.EXIT_AUTH  # no admin token
    assert graft("predict", "nope", "text", env=env).returncode == cli.EXIT_NOT_FOUND

    one_label = write_csv(tmp_path / "one.csv", [{"input": "a text", "label": "x"}, {"input": "another", "label": "x"}])
    rejected = graft("tasks", "create", "one", "--data", str(one_label), "--json", env=env)
    assert rejected.returncode == cli.EXIT_REJECTED
    assert json.loads(rejected.stdout)["error"] == {
        "code": "validation_error",
        "message": json.loads(rejected.stdout)["error"]["message"],
        "status": 422,
        "exit_code": cli.EXIT_REJECTED,
    }

    down = graft("tasks", "list", "--retries", "0", env={**env, "GRAFT_URL": f"http://127.0.0.1:{free_port()}"})
    assert down.returncode == cli.EXIT_SERVER and "connect_error" in down.stderr


def test_tenants_and_keys(server) -> None:
    admin = {"GRAFT_URL": server.url, "GRAFT_ADMIN_TOKEN": server.admin_token}
    tenant = ok_json(graft("tenants", "create", "cli-keys", "--json", env=admin))
    env = {"GRAFT_URL": server.url, "GRAFT_API_KEY": tenant["api_key"]}
    fresh = ok_json(graft("keys", "create", tenant["id"], "--json", env=env))  # the tenant's own key will do
    listed = graft("keys", "list", tenant["id"], env=admin)  # so will the admin token
    assert listed.returncode == 0 and listed.stdout.count("\n") == 3 and fresh["id"] in listed.stdout
    old = next(
        k["id"] for k in ok_json(graft("keys", "list", tenant["id"], "--json", env=env)) if k["id"] != fresh["id"]
    )
    assert graft("keys", "revoke", tenant["id"], old, env={**env, "GRAFT_API_KEY": fresh["api_key"]}).returncode == 0
    assert graft("tasks", "list", env=env).returncode == cli.EXIT_AUTH
    env["GRAFT_API_KEY"] = fresh["api_key"]
    assert ok_json(graft("tenants", "disable", tenant["id"], "--json", env=admin))["disabled"] is True
    assert graft("tasks", "list", env=env).returncode == cli.EXIT_AUTH
    enabled = graft("tenants", "enable", tenant["id"], env=admin)
    assert enabled.returncode == 0 and "enabled" in enabled.stdout
    assert ok_json(graft("tasks", "list", "--json", env=env)) == []
    assert graft("keys", "list", "t_nope", env=env).returncode == cli.EXIT_NOT_FOUND  # another tenant's id: 404
    narrow = ok_json(graft("keys", "create", tenant["id"], "--role", "predict", "--json", env=env))
    assert narrow["role"] == "predict"
    reader = {**env, "GRAFT_API_KEY": narrow["api_key"]}
    assert ok_json(graft("tasks", "list", "--json", env=reader)) == []  # a predict key reads
    refused = graft("keys", "create", tenant["id"], env=reader)  # but manages no keys
    assert refused.returncode != 0 and "role 'owner'" in refused.stderr, refused
    assert "predict" in graft("keys", "list", tenant["id"], env=env).stdout


def test_settings_from_the_config_file(server, tmp_path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'url = "{server.url}"\napi_key = "{new_key(server, "cli-config")}"\n')
    assert ok_json(graft("tasks", "list", "--json", config=config)) == []
    flag_wins = graft("tasks", "list", "--api-key", "wrong", config=config)
    assert flag_wins.returncode == cli.EXIT_AUTH
    config.write_text("url = [broken")
    assert graft("tasks", "list", config=config).returncode == cli.EXIT_USAGE


def test_the_entry_point_is_declared() -> None:
    scripts = tomllib.loads((ROOT / "client" / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"graft": "graft.cli:main"} and callable(cli.main)


def test_exit_codes_by_error_class() -> None:
    """The mapping behind the exit codes above, for the errors a live server is not asked to make here
    (a failed training job, 5xx, 429 after the client's retries)."""
    cases = {
        errors.JobFailed(None, "training failed"): cli.EXIT_JOB_FAILED,
        errors.ServerError("boom", status=500): cli.EXIT_SERVER,
        errors.Unavailable("later", status=503): cli.EXIT_SERVER,
        errors.RateLimited("slow down", status=429): cli.EXIT_SERVER,
        errors.ConnectionFailed("refused", code="connect_error"): cli.EXIT_SERVER,
        errors.Forbidden("no", status=403): cli.EXIT_AUTH,
        errors.QuotaExceeded("too many tasks", code="quota_exceeded", status=403): cli.EXIT_REJECTED,
        errors.TooLarge("big", status=413): cli.EXIT_REJECTED,
        errors.UnsupportedMediaType("type", status=415): cli.EXIT_REJECTED,
        errors.BadRequest("json", status=400): cli.EXIT_REJECTED,
        errors.GraftError("odd"): cli.EXIT_ERROR,
    }
    assert {type(e).__name__: cli.exit_code(e) for e in cases} == {type(e).__name__: code for e, code in cases.items()}
