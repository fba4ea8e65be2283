from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from service.store.repository import Store
from tests.postgres import temp_schema


@pytest.fixture(scope="session")
def minilm():
    """The real packaged MiniLM backbone, loaded once for the unit tests that need embeddings."""
    from service.backbones.registry import BUILTIN, Registry

    return Registry({"minilm": BUILTIN["minilm"]}, "cpu").load("minilm")


@pytest.fixture(scope="session")
def onnx_cache_dir(tmp_path_factory):
    """A fresh export cache: the session's first ONNX test pays for the export, as a server would."""
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="session")
def onnx_fp32(minilm, onnx_cache_dir):
    from service.backbones.runtimes import RuntimeConfig

    return RuntimeConfig("onnx", onnx_cache_dir).wrap(minilm, "onnx")


@pytest.fixture(scope="session")
def onnx_int8(minilm, onnx_cache_dir):
    from service.backbones.runtimes import RuntimeConfig

    return RuntimeConfig("onnx-int8", onnx_cache_dir).wrap(minilm, "onnx-int8")


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each store test runs on both backends: a fresh SQLite file, and a fresh schema in the real
    PostgreSQL (dropped afterwards)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'graft.db'}"
        return
    with temp_schema() as url:
        yield url


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh schema in the real PostgreSQL, for behaviour only PostgreSQL has (row locks)."""
    with temp_schema() as url:
        yield url


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = Store(store_url)
    s.migrate()
    yield s
    s.close()
