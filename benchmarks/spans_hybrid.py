"""Experiment (issue 18, docs/spans.md "A hybrid tagger, measured"): a hybrid entities tagger — the frozen token
states (with neighbours', standardised, times ``dense``) next to the word-shape baseline's features of the word
each token starts (a word's later pieces read only "continues a word"), in one logistic regression (C = 0.5) —
against the frozen ``tagger`` and the ``word-tagger`` on benchmarks/spans.py's draws and 200 test rows. Not a
served head: it did not beat the baseline.

    PYTHONPATH=. .venv/bin/python -m benchmarks.spans_hybrid 50,200 3 0.1,0.03   # sizes, draws, dense factors
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import numpy as np

from adapters.spans import words as wf
from adapters.spans.codec import Span, encode_bio, scored_spans, tag_names
from adapters.spans.heads import Encoded, TokenTagger, WordTagger, _context_states, _Linear, _log_softmax, _Vocabulary
from adapters.spans.metrics import entity_scores
from benchmarks.spans import LABELS, _spans
from benchmarks.spansets import entity_rows
from service.backbones.registry import BUILTIN, Registry

Parts = tuple[np.ndarray, list[dict[str, float]], np.ndarray, np.ndarray]


def word_of(offsets: np.ndarray, words: np.ndarray) -> np.ndarray:
    """Each token's word (the first it overlaps), -1 for none."""
    out = np.full(len(offsets), -1)
    for t, (start, end) in enumerate(offsets):
        hit = np.flatnonzero((words[:, 0] < end) & (words[:, 1] > start))
        if len(hit):
            out[t] = hit[0]
    return out


class HybridTagger:
    def __init__(self, labels: list[str], c: float = 0.5, dense: float = 1.0) -> None:
        self.labels, self.c, self.dense = labels, c, dense

    def _parts(self, text: str, enc: Encoded) -> Parts:
        feats, words = wf.word_rows(text)
        owner = word_of(enc.offsets, words)
        first = np.array([o >= 0 and enc.offsets[t, 0] == words[o, 0] for t, o in enumerate(owner)], np.float32)
        return _context_states(enc), feats, owner, first

    def _x(self, parts: Parts) -> np.ndarray:
        states, feats, owner, first = parts
        z = (states - self.mean) / self.scale * self.dense
        sparse = np.asarray(self.vocab.transform(feats or [{}]).todense(), np.float32)
        sparse = np.vstack([sparse, np.zeros((1, sparse.shape[1]), np.float32)])  # the row of "no word"
        piece = sparse[np.where(owner < 0, len(sparse) - 1, owner)]
        return np.hstack([z, piece * first[:, None], (1 - first)[:, None]])

    def fit(self, texts: list[str], spans: list[list[Span]], encoded: list[Encoded]) -> HybridTagger:
        parts = [self._parts(t, e) for t, e in zip(texts, encoded, strict=True)]
        self.vocab = _Vocabulary.fit([f for p in parts for f in p[1]])
        states = np.vstack([p[0] for p in parts])
        self.mean, self.scale = states.mean(0), states.std(0) + 1e-6
        x = np.vstack([self._x(p) for p in parts])
        y = np.concatenate([encode_bio(e.offsets, s, self.labels) for e, s in zip(encoded, spans, strict=True)])
        self.model = _Linear.fit(x, y, len(tag_names(self.labels)), self.c, dense=False)
        return self

    def predict(self, texts: list[str], encoded: list[Encoded]) -> list[list[tuple[Span, float]]]:
        out: list[list[tuple[Span, float]]] = []
        for text, enc in zip(texts, encoded, strict=True):
            if not len(enc.offsets):
                out.append([])
                continue
            probs = np.exp(_log_softmax(self.model.logits(self._x(self._parts(text, enc)))))
            out.append(scored_spans(probs, enc.offsets, self.labels))
        return out


def main() -> None:
    sizes = [int(a) for a in sys.argv[1].split(",")]
    draws = int(sys.argv[2])
    factors = [float(w) for w in sys.argv[3].split(",")]
    backbone = Registry({"minilm": BUILTIN["minilm"]}, "cpu").load("minilm")
    test = entity_rows(200, 1, seed=10_000)
    texts, gold = [r["input"] for r in test], [_spans(r) for r in test]
    test_enc = backbone.token_states(texts)
    for size in sizes:
        for draw in range(draws):
            train = entity_rows(size, 0, seed=draw)
            t_texts, t_gold = [r["input"] for r in train], [_spans(r) for r in train]
            enc = backbone.token_states(t_texts)
            row: dict[str, Any] = {"examples": size, "draw": draw}
            heads: dict[str, Any] = {"tagger": TokenTagger(LABELS), "word-tagger": WordTagger(LABELS)}
            heads |= {f"hybrid dense={w}": HybridTagger(LABELS, dense=w) for w in factors}
            for name, head in heads.items():
                began = time.perf_counter()
                head.fit(t_texts, t_gold, enc)
                found = head.predict(texts, test_enc)
                row[name] = round(entity_scores(gold, [[s for s, _ in f] for f in found])["f1"], 4)
                row[f"{name} s"] = round(time.perf_counter() - began, 1)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
