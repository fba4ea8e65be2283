"""Short real texts for load benchmarks, built from the shared BBC News test file.

The issue's reference load is short product reviews (~36 tokens, a few up to 256). No review
corpus ships in a package here, so the stand-in is real news text with the same shape: the first
sentence of each BBC article (27 tokens on average), and every 32nd text a whole article (which
the backbone truncates at 256 tokens). Mean ≈ 35 tokens.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LONG_EVERY = 32


def data_dir() -> Path:
    for candidate in (os.environ.get("GRAFT_SHARED_DATA"), ROOT.parent / "shared" / "data", "/work/shared/data"):
        if candidate and (Path(candidate) / "bbc_news.test.jsonl").is_file():
            return Path(candidate)
    raise FileNotFoundError("shared data not found: set GRAFT_SHARED_DATA to the folder holding bbc_news.*.jsonl")


def first_sentence(article: str) -> str:
    body = article.split("\n", 1)[1].strip() if "\n" in article else article
    paragraph = body.split("\n")[0].strip()
    match = re.match(r"(.+?[.!?])(\s|$)", paragraph)
    return match.group(1) if match else paragraph


def rows(split: str = "test") -> list[dict]:
    with (data_dir() / f"bbc_news.{split}.jsonl").open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def short_texts(n: int | None = None, split: str = "test") -> list[str]:
    """Review-shaped real texts: first sentences, every ``LONG_EVERY``-th a whole article."""
    out = [r["input"] if i % LONG_EVERY == 0 else first_sentence(r["input"]) for i, r in enumerate(rows(split))]
    return out if n is None else [out[i % len(out)] for i in range(n)]


def labelled_sentences(split: str = "train") -> list[tuple[str, str]]:
    """(first sentence, topic) pairs, for training benchmark heads on real embeddings."""
    return [(first_sentence(r["input"]), r["label"]) for r in rows(split)]
