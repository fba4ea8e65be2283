"""Character-offset spans ↔ BIO tags over a tokenizer's offset mapping.

A span is ``(start, end, label)`` in characters of the caller's string, ``end`` exclusive. A token is
``(start, end)`` in the same string (a fast tokenizer's ``return_offsets_mapping``; special tokens are
left out by the caller). Tags are integers over :func:`tag_names`: ``0`` is ``O``, ``1 + 2k`` is ``B-``
of label ``k`` and ``2 + 2k`` its ``I-``. A token takes a span's tag when it overlaps the span; decoding
gives a span from its first token's start to its last token's end, so a span whose ends fall on token
boundaries (the usual case: a tokenizer splits at whitespace and punctuation) comes back exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

OUTSIDE = 0


class SpanError(ValueError):
    """Spans that cannot label a text: out of range, empty, blank or overlapping (the message says which)."""


@dataclass(frozen=True, order=True)
class Span:
    start: int
    end: int
    label: str

    def text(self, source: str) -> str:
        return source[self.start : self.end]

    def describe(self) -> str:
        return f"{self.start}-{self.end} ({self.label})"


def check_spans(text: str, spans: Iterable[Span]) -> list[Span]:
    """The spans sorted by start; :class:`SpanError` naming the first span out of ``text``, empty,
    covering only whitespace, or overlapping another."""
    ordered = sorted(spans)
    for span in ordered:
        if not span.label:
            raise SpanError(f"span {span.start}-{span.end} has an empty label")
        if not 0 <= span.start < span.end <= len(text):
            raise SpanError(
                f"span {span.describe()} is not inside the text of {len(text)} characters (0 <= start < end <= length)"
            )
        if not text[span.start : span.end].strip():
            raise SpanError(f"span {span.describe()} covers only whitespace")
    for left, right in zip(ordered, ordered[1:], strict=False):
        if right.start < left.end:
            raise SpanError(f"spans {left.describe()} and {right.describe()} overlap")
    return ordered


def tag_names(labels: Sequence[str]) -> list[str]:
    """``["O", "B-<label 0>", "I-<label 0>", "B-<label 1>", …]``."""
    names = ["O"]
    for label in labels:
        names += [f"B-{label}", f"I-{label}"]
    return names


def encode_bio(offsets: np.ndarray, spans: Sequence[Span], labels: Sequence[str]) -> np.ndarray:
    """Tag ids (n_tokens,) for tokens at ``offsets`` (n_tokens, 2): B on the first token overlapping a
    span, I on the next ones, O elsewhere. Tokens of zero width never take a span's tag."""
    index = {label: k for k, label in enumerate(labels)}
    tags = np.zeros(len(offsets), dtype=np.int64)
    starts, ends = offsets[:, 0], offsets[:, 1]
    for span in spans:
        if span.label not in index:
            raise SpanError(f"span {span.describe()} has a label outside {list(labels)}")
        inside = np.flatnonzero((starts < span.end) & (ends > span.start) & (ends > starts))
        if len(inside):
            k = index[span.label]
            tags[inside] = 2 + 2 * k
            tags[inside[0]] = 1 + 2 * k
    return tags


def decode_bio(tags: Sequence[int] | np.ndarray, offsets: np.ndarray, labels: Sequence[str]) -> list[Span]:
    """Spans from tag ids, conlleval-style: an entity starts at a B, or at an I whose label differs from
    the previous token's (an I after O starts one too), and runs over the following I of its label."""
    spans: list[Span] = []
    current: tuple[int, int, int] | None = None  # (label index, first token, last token)
    for i, tag in enumerate(int(t) for t in tags):
        if tag == OUTSIDE:
            if current is not None:
                spans.append(_span(current, offsets, labels))
            current = None
            continue
        k, begins = (tag - 1) // 2, tag % 2 == 1
        if current is not None and not begins and current[0] == k:
            current = (k, current[1], i)
            continue
        if current is not None:
            spans.append(_span(current, offsets, labels))
        current = (k, i, i)
    if current is not None:
        spans.append(_span(current, offsets, labels))
    return spans


def _span(current: tuple[int, int, int], offsets: np.ndarray, labels: Sequence[str]) -> Span:
    k, first, last = current
    return Span(int(offsets[first, 0]), int(offsets[last, 1]), labels[k])


def allowed_transitions(n_labels: int) -> np.ndarray:
    """(n_tags, n_tags) booleans: may tag ``j`` follow tag ``i``? ``I-X`` only after ``B-X`` or ``I-X``."""
    n = 1 + 2 * n_labels
    allowed = np.ones((n, n), dtype=bool)
    for k in range(n_labels):
        inside = 2 + 2 * k
        allowed[:, inside] = False
        allowed[1 + 2 * k, inside] = allowed[inside, inside] = True
    return allowed


def viterbi_bio(log_probs: np.ndarray, n_labels: int) -> np.ndarray:
    """The most probable tag sequence (n_tokens,) under per-token ``log_probs`` (n_tokens, n_tags) that
    is valid BIO: no ``I-X`` at the start or after anything but ``B-X``/``I-X``."""
    n = len(log_probs)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    allowed = allowed_transitions(n_labels)
    penalty = np.where(allowed, 0.0, -np.inf)
    first_ok = ~np.isin(np.arange(allowed.shape[0]), 2 + 2 * np.arange(n_labels))
    score = np.where(first_ok, log_probs[0], -np.inf)
    back = np.zeros((n, allowed.shape[0]), dtype=np.int64)
    for t in range(1, n):
        total = score[:, None] + penalty  # previous tag × next tag
        back[t] = total.argmax(axis=0)
        score = total.max(axis=0) + log_probs[t]
    tags = np.zeros(n, dtype=np.int64)
    tags[-1] = int(score.argmax())
    for t in range(n - 1, 0, -1):
        tags[t - 1] = back[t, tags[t]]
    return tags


def scored_spans(
    probs: np.ndarray, offsets: np.ndarray, labels: Sequence[str]
) -> list[tuple[Span, float]]:
    """BIO-consistent decoding of per-token tag probabilities (n_tokens, n_tags): the Viterbi path's
    spans, each scored by the geometric mean of its tokens' probabilities of the chosen tags."""
    log_probs = np.log(np.clip(probs, 1e-12, 1.0))
    tags = viterbi_bio(log_probs, len(labels))
    out: list[tuple[Span, float]] = []
    chosen = log_probs[np.arange(len(tags)), tags]
    for span in decode_bio(tags, offsets, labels):
        inside = (offsets[:, 0] < span.end) & (offsets[:, 1] > span.start) & (tags != OUTSIDE)
        out.append((span, float(np.exp(chosen[inside].mean()))))
    return out


def token_span(offsets: np.ndarray, start: int, end: int) -> tuple[int, int] | None:
    """The first and last token overlapping characters ``[start, end)``; None when no token does."""
    inside = np.flatnonzero((offsets[:, 0] < end) & (offsets[:, 1] > start) & (offsets[:, 1] > offsets[:, 0]))
    if not len(inside):
        return None
    return int(inside[0]), int(inside[-1])


def windows(n_tokens: int, size: int, overlap: int) -> list[tuple[int, int]]:
    """Token windows ``[start, end)`` of at most ``size`` tokens covering ``0..n_tokens``, consecutive
    windows sharing ``overlap`` tokens (the stride over texts longer than the backbone's window)."""
    if size < 1:
        raise ValueError(f"window size must be positive, got {size}")
    if n_tokens <= size:
        return [(0, n_tokens)]
    step = max(1, size - min(overlap, size - 1))
    out = []
    start = 0
    while True:
        end = min(start + size, n_tokens)
        out.append((start, end))
        if end == n_tokens:
            return out
        start = min(start + step, n_tokens - size)


def window_owners(spans: Sequence[tuple[int, int]], n_tokens: int) -> np.ndarray:
    """For each token, the window whose state it takes: the one where it has the most context on its
    shorter side (SQuAD's "max context" rule), the first on ties."""
    best = np.full(n_tokens, -1.0)
    owner = np.zeros(n_tokens, dtype=np.int64)
    for w, (start, end) in enumerate(spans):
        positions = np.arange(start, end)
        context = np.minimum(positions - start, end - 1 - positions) + 0.01 * (end - start)
        better = context > best[start:end]
        best[start:end] = np.where(better, context, best[start:end])
        owner[start:end] = np.where(better, w, owner[start:end])
    return owner
