"""Public text classification sets for the fine-tuning benchmarks, beside BBC News (shared/data).

``fortunes``: Debian's ``fortunes`` and ``fortunes-min`` packages (fortune-mod's cookie files,
the files' own topic as the label). Short texts (median ≈ 19 words) of 8 topics. Not committed
(generated data): unpack the packages once and pass the folder::

    mkdir -p /tmp/fortunes && cd /tmp/fortunes && apt-get download fortunes fortunes-min \\
        && for f in *.deb; do dpkg-deb -x "$f" .; done

``debian``: Debian bookworm's package descriptions (the one-line description of each binary package in
the machine's apt lists, ``apt-cache dumpavail``; median 6 words) labelled by the archive section its
maintainers gave it, 18 topical sections (games, sound, graphics, science, mail, …; language and library
sections left out: a package's name would give them away). A description repeated across packages
(``-dev``/``-doc`` twins) is kept once. Needs a Debian machine whose apt lists are present
(``apt-get update``); 18 labels × few examples is the many-labels case.

Split like shared/data: one stratified 50/50 split with seed 42; the train half is the pool that
few-shot draws come from, the test half is scored (capped per label with a seed, for time).
"""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path

FORTUNE_TOPICS = ("art", "computers", "education", "food", "law", "politics", "science", "work")


def _split(rows: list[dict], seed: int = 42) -> tuple[list[dict], list[dict]]:
    by: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by[r["label"]].append(r)
    rng = random.Random(seed)
    train, test = [], []
    for label in sorted(by):
        members = by[label][:]
        rng.shuffle(members)
        half = len(members) // 2
        train += members[:half]
        test += members[half:]
    return train, test


def fortunes(root: str | Path) -> tuple[list[dict], list[dict]]:
    """(train pool, test) rows ``{"input", "label"}`` from the unpacked fortunes packages."""
    folder = Path(root) / "usr" / "share" / "games" / "fortunes"
    rows = []
    for topic in FORTUNE_TOPICS:
        text = (folder / topic).read_text(encoding="utf-8", errors="replace")
        seen = set()
        for cookie in text.split("\n%\n"):
            cookie = " ".join(cookie.split())
            if cookie and cookie != "%" and cookie not in seen:
                seen.add(cookie)
                rows.append({"input": cookie, "label": topic})
    return _split(rows)


DEBIAN_SECTIONS = (
    "admin", "database", "editors", "electronics", "fonts", "games", "gnome", "graphics", "hamradio", "kde",
    "mail", "math", "net", "science", "sound", "tex", "video", "web",
)


def debian(dump: str | None = None, per_section: int = 400) -> tuple[list[dict], list[dict]]:
    """(train pool, test) rows from ``apt-cache dumpavail`` (or its saved output ``dump``): at most
    ``per_section`` packages per section, a seeded sample, so the classes stay comparable in size."""
    import subprocess

    text = Path(dump).read_text(encoding="utf-8") if dump else subprocess.run(
        ["apt-cache", "dumpavail"], check=True, capture_output=True, text=True).stdout
    by: dict[str, list[dict]] = defaultdict(list)
    seen: set[str] = set()
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        key = ""
        for line in stanza.splitlines():
            if line.startswith(" ") and key:
                fields[key] += " " + ("" if line.strip() == "." else line.strip())
            elif ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        section = fields.get("Section", "").rsplit("/", 1)[-1]
        description = " ".join(fields.get("Description", "").split())
        if section not in DEBIAN_SECTIONS or not description or description in seen:  # Description: short only
            continue
        seen.add(description)
        by[section].append({"input": description, "label": section})
    rng = random.Random(42)
    rows = []
    for section in sorted(by):
        members = sorted(by[section], key=lambda r: r["input"])
        rng.shuffle(members)
        rows += members[:per_section]
    return _split(rows)


def cap_per_label(rows: list[dict], n: int, seed: int = 0) -> list[dict]:
    by: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by[r["label"]].append(r)
    rng = random.Random(seed)
    out = []
    for label in sorted(by):
        members = by[label][:]
        rng.shuffle(members)
        out += members[:n]
    return out


def load(name: str, fortunes_dir: str | None = None) -> tuple[list[dict], list[dict]]:
    """``bbc_news`` (shared/data), ``bbc_short`` (its articles' first 24 words: a headline-sized
    task), ``fortunes`` (needs ``fortunes_dir``) or ``debian`` (package descriptions by section)."""
    from tests.conftest import load_jsonl

    if name == "fortunes":
        if not fortunes_dir:
            raise SystemExit("--fortunes DIR is needed for the fortunes set (see benchmarks/textsets.py)")
        return fortunes(fortunes_dir)
    if name == "debian":
        return debian()
    train, test = load_jsonl("bbc_news.train.jsonl"), load_jsonl("bbc_news.test.jsonl")
    if name == "bbc_short":
        cut = lambda rows: [{"input": " ".join(r["input"].split()[:24]), "label": r["label"]} for r in rows]  # noqa: E731
        return cut(train), cut(test)
    if name == "bbc_news":
        return train, test
    raise SystemExit(f"unknown text set {name!r}")
