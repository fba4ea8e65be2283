"""Public text classification sets for the fine-tuning benchmarks, beside BBC News (shared/data).

``fortunes``: Debian's ``fortunes`` and ``fortunes-min`` packages (fortune-mod's cookie files,
the files' own topic as the label). Short texts (median ≈ 19 words) of 8 topics. Not committed
(generated data): unpack the packages once and pass the folder::

    mkdir -p /tmp/fortunes && cd /tmp/fortunes && apt-get download fortunes fortunes-min \\
        && for f in *.deb; do dpkg-deb -x "$f" .; done

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
    task) or ``fortunes`` (needs ``fortunes_dir``)."""
    from tests.conftest import load_jsonl

    if name == "fortunes":
        if not fortunes_dir:
            raise SystemExit("--fortunes DIR is needed for the fortunes set (see benchmarks/textsets.py)")
        return fortunes(fortunes_dir)
    train, test = load_jsonl("bbc_news.train.jsonl"), load_jsonl("bbc_news.test.jsonl")
    if name == "bbc_short":
        cut = lambda rows: [{"input": " ".join(r["input"].split()[:24]), "label": r["label"]} for r in rows]  # noqa: E731
        return cut(train), cut(test)
    if name == "bbc_news":
        return train, test
    raise SystemExit(f"unknown text set {name!r}")
