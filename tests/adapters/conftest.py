from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def minilm():
    """The real packaged MiniLM backbone, loaded once for the unit tests that need embeddings."""
    from service.backbones.registry import BUILTIN, Registry

    return Registry({"minilm": BUILTIN["minilm"]}, "cpu").load("minilm")
