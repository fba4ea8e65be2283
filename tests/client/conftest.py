"""Fixtures for the client and CLI tests: tenants on the session's real server, real data on disk."""

from __future__ import annotations

import base64
import itertools
import json
from pathlib import Path

import pytest

from graft import Graft
from tests.conftest import Server, load_jsonl, per_label

_names = itertools.count()


def new_key(server: Server, prefix: str) -> str:
    """A fresh tenant's API key, created through the client with the admin token."""
    with Graft(server.url, server.admin_token) as admin:
        return admin.create_tenant(f"{prefix}-{next(_names)}").api_key


@pytest.fixture
def key(server: Server, request: pytest.FixtureRequest) -> str:
    return new_key(server, request.node.name[:40].replace("[", "-").replace("]", ""))


@pytest.fixture(scope="session")
def news_train() -> list[dict]:
    return per_label(load_jsonl("bbc_news.train.jsonl"), 8, seed=0)


@pytest.fixture(scope="session")
def news_test() -> list[dict]:
    return per_label(load_jsonl("bbc_news.test.jsonl"), 6, seed=1)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_image_folder(root: Path, rows: list[dict]) -> Path:
    """Image-folder layout ``<label>/<n>.png`` from digits rows (base64 PNGs)."""
    for i, row in enumerate(rows):
        folder = root / row["label"]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i}.png").write_bytes(base64.b64decode(row["input"]))
    return root
