from __future__ import annotations

import pytest


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
