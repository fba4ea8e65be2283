"""Word features for the no-transfer baselines: words with their character offsets, word shapes, and
the feature dicts a token classifier reads (the word, its shape, affixes, neighbours; for answers, its
overlap with the question)."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

WORD = re.compile(r"\w+|[^\w\s]")
WH_WORDS = ("who", "whom", "whose", "what", "which", "where", "when", "why", "how")
STOP = frozenset(
    "a an the of in on at to for from by with and or is was were are be been did does do has have had "
    "what which who whom whose where when why how that this".split()
)


def words(text: str) -> tuple[list[str], np.ndarray]:
    """The text's words (runs of word characters, or single punctuation marks) and their character
    offsets (n, 2) into ``text``."""
    found = list(WORD.finditer(text))
    offsets = np.array([m.span() for m in found], dtype=np.int64).reshape(-1, 2)
    return [m.group() for m in found], offsets


def shape(word: str) -> str:
    """``Xxxx``-style shape, repeats collapsed: "Lyon" → "Xx", "B2B" → "XdX", "é" → "x"."""
    out: list[str] = []
    for ch in word:
        c = "X" if ch.isupper() else "x" if ch.islower() else "d" if ch.isdigit() else ch
        if not out or out[-1] != c:
            out.append(c)
    return "".join(out)


def _basic(word: str, prefix: str) -> dict[str, float]:
    lower = word.lower()
    return {
        f"{prefix}w={lower}": 1.0,
        f"{prefix}shape={shape(word)}": 1.0,
        f"{prefix}suf3={lower[-3:]}": 1.0,
        f"{prefix}title": float(word[:1].isupper()),
    }


def tagger_features(tokens: Sequence[str], i: int) -> dict[str, float]:
    """A word's features for tagging: itself (word, shape, prefix, suffixes, case) and its neighbours
    (word, shape) two either side."""
    word = tokens[i]
    feats = _basic(word, "")
    feats.update({f"pre3={word[:3].lower()}": 1.0, f"suf2={word[-2:].lower()}": 1.0, "bias": 1.0})
    feats["upper"] = float(word.isupper())
    feats["first"] = float(i == 0)
    for d in (-2, -1, 1, 2):
        j = i + d
        if 0 <= j < len(tokens):
            feats[f"{d}w={tokens[j].lower()}"] = 1.0
            feats[f"{d}shape={shape(tokens[j])}"] = 1.0
        else:
            feats[f"{d}edge"] = 1.0
    return feats


def question_features(question: str) -> tuple[str, set[str]]:
    """The question's wh-word ("other" when none) and its content words (lower case, no stop words)."""
    q_words = [w.lower() for w in words(question)[0]]
    wh = next((w for w in q_words if w in WH_WORDS), "other")
    return wh, {w for w in q_words if w not in STOP and w.isalnum()}


def answer_features(tokens: Sequence[str], i: int, wh: str, content: set[str]) -> dict[str, float]:
    """A context word's features for pointing at an answer: the word itself, whether it and its
    neighbours occur in the question, how far the nearest question word is, each crossed with the
    question's wh-word."""
    word = tokens[i]
    feats = _basic(word, "")
    feats["bias"] = 1.0
    in_q = [tok.lower() in content for tok in tokens]
    feats["in_q"] = float(in_q[i])
    hits = np.flatnonzero(in_q)
    distance = int(np.abs(hits - i).min()) if len(hits) else 99
    bucket = str(min(distance, 8)) if distance < 99 else "none"
    for name in (f"dist={bucket}", f"shape={shape(word)}", f"title={word[:1].isupper()}"):
        feats[name] = 1.0
        feats[f"{wh}|{name}"] = 1.0
    for d in (-2, -1, 1, 2):
        j = i + d
        if 0 <= j < len(tokens):
            feats[f"{d}in_q"] = float(in_q[j])
            feats[f"{wh}|{d}w={tokens[j].lower()}"] = 1.0
            feats[f"{wh}|{d}shape={shape(tokens[j])}"] = 1.0
    return feats
