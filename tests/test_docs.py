"""Docs that must not drift from the code."""

from pathlib import Path

from service.config import SETTINGS, markdown_table

ROOT = Path(__file__).resolve().parents[1]


def test_readme_configuration_table_is_current() -> None:
    readme = (ROOT / "README.md").read_text()
    start, end = "<!-- config-table:start -->\n", "\n<!-- config-table:end -->"
    table = readme[readme.index(start) + len(start) : readme.index(end)]
    assert table.strip() == markdown_table().strip(), "regenerate with: python -m service.config"
    for var in SETTINGS.values():
        assert f"`{var.env}`" in table
