"""docs/api.md is generated from the OpenAPI spec and kept up to date."""

from __future__ import annotations

from service.api import apidoc
from service.api.app import create


def test_api_reference_is_current() -> None:
    spec = create().openapi()
    assert apidoc.DOC.read_text(encoding="utf-8") == apidoc.render(spec), (
        "docs/api.md is stale: run python -m service.api.apidoc"
    )


def test_api_reference_covers_every_endpoint_and_schema() -> None:
    spec = create().openapi()
    text = apidoc.render(spec)
    for path, item in spec["paths"].items():
        for method in item:
            assert f"### `{method.upper()} {path}`" in text
            assert f"(#{apidoc.anchor(f'{method} {path}')})" in text
    for name in spec["components"]["schemas"]:
        assert f"### {name}\n" in text and f"(#{name.lower()})" in text
