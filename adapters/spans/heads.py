"""Span heads and their registry: token taggers for entities, start/end pointers for answers.

``tagger`` and ``pointer`` read the shared frozen encoder's per-token states (:class:`Encoded`);
``word-tagger`` and ``word-pointer`` are the no-transfer baselines on word features of the raw text.
Every head registers itself (``@span_head``) and is stored like the classification heads: one
safetensors blob, arrays as tensors, everything else as JSON in the header's metadata; never pickled.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar

import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save
from sklearn.feature_extraction import DictVectorizer
from sklearn.linear_model import LogisticRegression

from adapters.heads.base import HeadFormatError, read_metadata

from . import words as wf
from .codec import Span, encode_bio, scored_spans, tag_names, token_span

ENTITIES = "entities"
ANSWERS = "answers"
MAX_ANSWER_TOKENS = 30  # the longest answer a pointer proposes, in tokens (words for the baseline)


@dataclass(frozen=True)
class Encoded:
    """One text as the encoder saw it: per-token states (n_tokens, dim) and character offsets (n_tokens, 2)
    into the text (special tokens left out, windows over a long text merged); for a question's context,
    ``query`` holds the question's token states (n_question_tokens, dim)."""

    states: np.ndarray
    offsets: np.ndarray
    query: np.ndarray | None = None


@dataclass(frozen=True)
class Answer:
    """A predicted answer: character offsets into the context, or None for "no answer"."""

    start: int | None
    end: int | None
    score: float  # the best span's probability, also when it fell under the threshold

    def text(self, context: str) -> str | None:
        return None if self.start is None or self.end is None else context[self.start : self.end]


class SpanHead(Protocol):
    kind: ClassVar[str]
    task_kind: ClassVar[str]
    transfer: ClassVar[bool]  # reads encoder states (else only the raw text)
    labels: list[str]

    def tensors(self) -> dict[str, np.ndarray]: ...

    def params(self) -> dict[str, Any]: ...


SPAN_HEADS: dict[str, type] = {}
T = TypeVar("T", bound=type)


def span_head(cls: T) -> T:
    """Class decorator: make a span head known under its ``kind`` (what :func:`from_bytes` reads back)."""
    kind = cls.kind  # type: ignore[attr-defined]
    if kind in SPAN_HEADS and SPAN_HEADS[kind] is not cls:
        raise ValueError(f"span head kind {kind!r} is already registered by {SPAN_HEADS[kind].__qualname__}")
    SPAN_HEADS[kind] = cls
    return cls


def heads_for(task_kind: str) -> dict[str, type]:
    return {kind: cls for kind, cls in SPAN_HEADS.items() if cls.task_kind == task_kind}  # type: ignore[attr-defined]


def to_bytes(head: SpanHead, **provenance: Any) -> bytes:
    meta = {
        "kind": head.kind, "task_kind": head.task_kind, "labels": head.labels, "params": head.params(),
        "provenance": provenance,
    }
    tensors = {k: np.ascontiguousarray(v) for k, v in head.tensors().items()}
    return st_save(tensors, metadata={"graft": json.dumps(meta, ensure_ascii=False)})


def from_bytes(blob: bytes) -> Any:
    meta = read_metadata(blob)
    cls: Any = SPAN_HEADS.get(meta.get("kind", ""))
    if cls is None:
        raise HeadFormatError(f"unknown span head kind {meta.get('kind')!r}")
    try:
        tensors = st_load(blob)
    except Exception as exc:  # safetensors raises its own error types for corrupt data
        raise HeadFormatError(f"corrupt safetensors data: {exc}") from None
    return cls.restore(meta["labels"], meta["params"], tensors)


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


class _Linear:
    """Multinomial logistic regression stored as arrays: standardisation, weights, bias."""

    def __init__(self, mean: np.ndarray, scale: np.ndarray, coef: np.ndarray, bias: np.ndarray) -> None:
        self.mean, self.scale, self.coef, self.bias = mean, scale, coef, bias

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, n_classes: int, c: float, dense: bool = True) -> _Linear:
        mean = x.mean(axis=0) if dense else np.zeros(x.shape[1], dtype=np.float32)
        scale = x.std(axis=0) + 1e-6 if dense else np.ones(x.shape[1], dtype=np.float32)
        z = (x - mean) / scale if dense else x
        present = np.unique(y)
        coef = np.zeros((n_classes, x.shape[1]), dtype=np.float32)
        bias = np.full(n_classes, -30.0, dtype=np.float32)  # classes never seen: never predicted
        if len(present) == 1:
            bias[present[0]] = 0.0
        else:
            model = LogisticRegression(C=c, max_iter=500).fit(z, y)
            rows = model.coef_ if len(present) > 2 else np.vstack([-model.coef_ / 2, model.coef_ / 2])
            half = model.intercept_[0] / 2
            icpt = model.intercept_ if len(present) > 2 else np.array([-half, half])
            coef[present] = rows
            bias[present] = icpt
        return cls(np.asarray(mean, np.float32), np.asarray(scale, np.float32), coef, bias)

    def logits(self, x: Any) -> np.ndarray:
        z = (x - self.mean) / self.scale if not hasattr(x, "tocsr") else x
        return np.asarray(z @ self.coef.T) + self.bias

    def tensors(self, prefix: str = "") -> dict[str, np.ndarray]:
        return {f"{prefix}mean": self.mean, f"{prefix}scale": self.scale, f"{prefix}coef": self.coef,
                f"{prefix}bias": self.bias}

    @classmethod
    def restore(cls, tensors: dict[str, np.ndarray], prefix: str = "") -> _Linear:
        return cls(*(tensors[f"{prefix}{k}"] for k in ("mean", "scale", "coef", "bias")))


def _context_states(enc: Encoded) -> np.ndarray:
    """Each token's state next to its neighbours' (zeros past the ends): (n_tokens, 3·dim)."""
    s = enc.states.astype(np.float32)
    pad = np.zeros((1, s.shape[1]), dtype=np.float32)
    return np.hstack([s, np.vstack([pad, s[:-1]]), np.vstack([s[1:], pad])])


@span_head
class TokenTagger:
    """BIO tags from the encoder's token states (each with its neighbours'): multinomial logistic
    regression, decoded with a BIO-consistent Viterbi pass."""

    kind: ClassVar[str] = "tagger"
    task_kind: ClassVar[str] = ENTITIES
    transfer: ClassVar[bool] = True

    def __init__(self, labels: list[str], c: float = 0.5) -> None:
        self.labels, self.c = list(labels), c
        self.model: _Linear | None = None

    def fit(self, texts: Sequence[str], spans: Sequence[Sequence[Span]], encoded: Sequence[Encoded]) -> TokenTagger:
        x = np.vstack([_context_states(e) for e in encoded])
        y = np.concatenate([encode_bio(e.offsets, s, self.labels) for e, s in zip(encoded, spans, strict=True)])
        self.model = _Linear.fit(x, y, len(tag_names(self.labels)), self.c)
        return self

    def predict(self, texts: Sequence[str], encoded: Sequence[Encoded]) -> list[list[tuple[Span, float]]]:
        assert self.model is not None, "fit the head first"
        out: list[list[tuple[Span, float]]] = []
        for e in encoded:
            if not len(e.offsets):
                out.append([])
                continue
            probs = np.exp(_log_softmax(self.model.logits(_context_states(e))))
            out.append(scored_spans(probs, e.offsets, self.labels))
        return out

    def tensors(self) -> dict[str, np.ndarray]:
        assert self.model is not None
        return self.model.tensors()

    def params(self) -> dict[str, Any]:
        return {"c": self.c}

    @classmethod
    def restore(cls, labels: list[str], params: dict[str, Any], tensors: dict[str, np.ndarray]) -> TokenTagger:
        head = cls(labels, **params)
        head.model = _Linear.restore(tensors)
        return head


class _Vocabulary:
    """Feature dicts → sparse rows over a vocabulary fixed at fit time (stored as JSON)."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.vectorizer = DictVectorizer(dtype=np.float32)
        self.vectorizer.fit([{name: 1.0 for name in names}])
        self.vectorizer.feature_names_ = names  # keep the stored order
        self.vectorizer.vocabulary_ = {name: i for i, name in enumerate(names)}

    @classmethod
    def fit(cls, rows: list[dict[str, float]]) -> _Vocabulary:
        return cls(sorted({name for row in rows for name in row}))

    def transform(self, rows: list[dict[str, float]]) -> Any:
        return self.vectorizer.transform(rows)

    def nbytes(self) -> int:
        """Python heap the vocabulary holds (its names list and index dict): about ``VOCAB_ENTRY_BYTES`` plus
        the name per entry, as benchmarks/spans_serving.py measures it with tracemalloc (115–122 bytes)."""
        return sum(VOCAB_ENTRY_BYTES + len(name.encode("utf-8")) for name in self.names)


VOCAB_ENTRY_BYTES = 120


@span_head
class WordTagger:
    """No-transfer baseline: BIO tags from word features (word, shape, affixes, neighbours) by
    multinomial logistic regression over the text's words, decoded like :class:`TokenTagger`."""

    kind: ClassVar[str] = "word-tagger"
    task_kind: ClassVar[str] = ENTITIES
    transfer: ClassVar[bool] = False

    def __init__(self, labels: list[str], c: float = 1.0, vocabulary: list[str] | None = None) -> None:
        self.labels, self.c = list(labels), c
        self.vocab = _Vocabulary(vocabulary) if vocabulary is not None else None
        self.model: _Linear | None = None

    def _rows(self, text: str) -> tuple[list[dict[str, float]], np.ndarray]:
        return wf.word_rows(text)  # what an export's span_decode.py computes (the same function)

    def fit(self, texts: Sequence[str], spans: Sequence[Sequence[Span]], encoded: Any = None) -> WordTagger:
        rows, tags = [], []
        for text, s in zip(texts, spans, strict=True):
            feats, offsets = self._rows(text)
            rows += feats
            tags.append(encode_bio(offsets, s, self.labels))
        self.vocab = _Vocabulary.fit(rows)
        self.model = _Linear.fit(self.vocab.transform(rows), np.concatenate(tags), len(tag_names(self.labels)),
                                 self.c, dense=False)
        return self

    def predict(self, texts: Sequence[str], encoded: Any = None) -> list[list[tuple[Span, float]]]:
        assert self.model is not None and self.vocab is not None, "fit the head first"
        out: list[list[tuple[Span, float]]] = []
        for text in texts:
            feats, offsets = self._rows(text)
            if not feats:
                out.append([])
                continue
            probs = np.exp(_log_softmax(self.model.logits(self.vocab.transform(feats))))
            out.append(scored_spans(probs, offsets, self.labels))
        return out

    def tensors(self) -> dict[str, np.ndarray]:
        assert self.model is not None
        return {k: v for k, v in self.model.tensors().items() if k in ("coef", "bias")}

    def resident_nbytes(self) -> int:
        """What a loaded head holds: its tensors and its vocabulary (the head cache charges this)."""
        assert self.vocab is not None
        return sum(int(t.nbytes) for t in self.tensors().values()) + self.vocab.nbytes()

    def params(self) -> dict[str, Any]:
        assert self.vocab is not None
        return {"c": self.c, "vocabulary": self.vocab.names}

    @classmethod
    def restore(cls, labels: list[str], params: dict[str, Any], tensors: dict[str, np.ndarray]) -> WordTagger:
        head = cls(labels, **params)
        dim = tensors["coef"].shape[1]
        head.model = _Linear(np.zeros(dim, np.float32), np.ones(dim, np.float32), tensors["coef"], tensors["bias"])
        return head


def best_span(start_logp: np.ndarray, end_logp: np.ndarray, max_len: int) -> tuple[int, int, float]:
    """The (start, end) token pair, start <= end < start + max_len, of highest start+end log-probability,
    and that pair's probability."""
    n = len(start_logp)
    total = start_logp[:, None] + end_logp[None, :]
    i, j = np.indices((n, n))
    total = np.where((j >= i) & (j < i + max_len), total, -np.inf)
    s, e = np.unravel_index(int(np.argmax(total)), total.shape)
    return int(s), int(e), float(np.exp(total[s, e]))


def _threshold_answer(score: float, threshold: float, start: int, end: int) -> Answer:
    return Answer(start, end, score) if score >= threshold else Answer(None, None, score)


MATCH_RADII = (0, 1, 2, 4, 8)
POOL_RADII = (2, 4, 8, 16)
N_CLOSENESS = len(MATCH_RADII) + len(POOL_RADII)  # state closeness; then as many exact-match columns


def _exact_matches(question: str, context: str, offsets: np.ndarray) -> np.ndarray:
    """DrQA's exact-match feature per context token: does the word it lies in occur among the question's
    content words (lower case, stop words aside)? Maxed over the ``MATCH_RADII`` tokens either side."""
    _, content = wf.question_features(question)
    tokens, spans = wf.words(context)
    hit = np.zeros(len(offsets), np.float32)
    for word, (start, end) in zip(tokens, spans, strict=True):
        if word.lower() in content:
            hit[(offsets[:, 0] < end) & (offsets[:, 1] > start)] = 1.0
    near = []
    for r in MATCH_RADII:
        padded = np.pad(hit, r)
        near.append(np.lib.stride_tricks.sliding_window_view(padded, 2 * r + 1).max(axis=1))
    return np.stack(near, axis=1) if len(offsets) else np.zeros((0, len(MATCH_RADII)), np.float32)


def _pointer_features(
    enc: Encoded, basis: np.ndarray, center: np.ndarray, question: str, context: str
) -> np.ndarray:
    """Per context token: its state projected on ``basis`` (rank, dim) after subtracting ``center``, that
    projection times the question's mean state's, and how close the token is to the question: the highest
    cosine between its state and any question token's, maxed over the ``MATCH_RADII`` tokens either side
    ((n_tokens, 2·rank + len(MATCH_RADII)))."""
    s = enc.states.astype(np.float32)
    n = len(s)
    p = (s - center) @ basis.T
    if enc.query is None or not len(enc.query):
        return np.hstack([p, np.zeros_like(p), np.zeros((n, N_CLOSENESS), np.float32),
                          _exact_matches(question, context, enc.offsets)])
    q = enc.query.astype(np.float32)
    unit = s / (np.linalg.norm(s, axis=1, keepdims=True) + 1e-6)
    q_unit = q / (np.linalg.norm(q, axis=1, keepdims=True) + 1e-6)
    match = (unit @ q_unit.T).max(axis=1)
    near = []
    for r in MATCH_RADII:
        padded = np.pad(match, r, constant_values=-1.0)
        near.append(np.lib.stride_tricks.sliding_window_view(padded, 2 * r + 1).max(axis=1))
    q_mean = q.mean(axis=0)
    q_mean /= np.linalg.norm(q_mean) + 1e-6
    cumulative = np.vstack([np.zeros((1, s.shape[1]), np.float32), np.cumsum(s, axis=0)])
    for r in POOL_RADII:  # the question against the mean state of the tokens around this one
        lo, hi = np.clip(np.arange(n) - r, 0, n), np.clip(np.arange(n) + r + 1, 0, n)
        pooled = cumulative[hi] - cumulative[lo]
        near.append(pooled @ q_mean / (np.linalg.norm(pooled, axis=1) + 1e-6))
    pq = (q.mean(axis=0) - center) @ basis.T
    lexical = _exact_matches(question, context, enc.offsets)
    return np.hstack([p, p * pq[None, :], np.stack(near, axis=1), lexical]).astype(np.float32)


@span_head
class SpanPointer:
    """Answer start and end from the encoder's states of question + context: a linear score per context
    token for "starts here" and "ends here", softmax over the context's tokens, trained by cross-entropy
    (plus an L2 penalty) on the answer's first and last token. A token's features: its state on the
    training states' top ``rank`` principal axes, that times the question's mean state (a diagonal
    bilinear match), and its closeness to the question's tokens (:func:`_pointer_features`). The best
    span scoring under ``threshold`` (tuned by CV) is "no answer"."""

    kind: ClassVar[str] = "pointer"
    task_kind: ClassVar[str] = ANSWERS
    transfer: ClassVar[bool] = True

    def __init__(self, labels: list[str] | None = None, rank: int = 32, l2: float = 1e-2, epochs: int = 200,
                 threshold: float = 0.0, seed: int = 0) -> None:
        self.labels = list(labels or [])
        self.rank, self.l2, self.epochs, self.threshold, self.seed = rank, l2, epochs, threshold, seed
        self.arrays: dict[str, np.ndarray] = {}

    def _features(self, enc: Encoded, question: str, context: str) -> np.ndarray:
        a = self.arrays
        return (_pointer_features(enc, a["basis"], a["center"], question, context) - a["mean"]) / a["scale"]

    def fit(self, questions: Sequence[str], contexts: Sequence[str], answers: Sequence[tuple[int, int] | None],
            encoded: Sequence[Encoded]) -> SpanPointer:
        import torch

        answered, targets = [], []
        for enc, answer, question, context in zip(encoded, answers, questions, contexts, strict=True):
            tokens = None if answer is None else token_span(enc.offsets, *answer)
            if tokens is not None:  # unanswerable questions only tune the threshold
                answered.append((enc, question, context))
                targets.append(tokens)
        states = np.vstack([e.states for e in encoded]).astype(np.float32)
        center = states.mean(axis=0)
        rank = max(1, min(self.rank, len(states) - 1, states.shape[1]))
        # the top principal axes from the (dim, dim) scatter matrix: the same axes as an SVD of the centred
        # states (up to sign), without computing its (n_tokens, dim) left factor
        centred = (states - center).astype(np.float64)
        eigenvalues, vectors = np.linalg.eigh(centred.T @ centred)
        basis = vectors[:, np.argsort(-eigenvalues, kind="stable")[:rank]].T.astype(np.float32)
        dim = 2 * rank + N_CLOSENESS + len(MATCH_RADII)
        self.arrays = {"center": center, "basis": basis, "mean": np.zeros(dim, np.float32),
                       "scale": np.ones(dim, np.float32), "weight": np.zeros((2, dim), np.float32),
                       "bias": np.zeros(2, np.float32)}
        if not answered:
            return self
        feats = [_pointer_features(e, basis, center, q, c) for e, q, c in answered]
        stacked = np.vstack(feats)
        self.arrays["mean"], self.arrays["scale"] = stacked.mean(axis=0), stacked.std(axis=0) + 1e-6
        width = max(len(f) for f in feats)
        x = np.zeros((len(feats), width, dim), np.float32)
        mask = np.zeros((len(feats), width), bool)
        for row, f in enumerate(feats):
            x[row, : len(f)] = (f - self.arrays["mean"]) / self.arrays["scale"]
            mask[row, : len(f)] = True
        torch.manual_seed(self.seed)
        xt, mt = torch.from_numpy(x), torch.from_numpy(mask)
        yt = torch.tensor(targets, dtype=torch.long)
        layer = torch.nn.Linear(dim, 2)
        optimiser = torch.optim.Adam(layer.parameters(), lr=2e-2)
        cross_entropy = torch.nn.functional.cross_entropy
        for _ in range(self.epochs):
            optimiser.zero_grad()
            logits = layer(xt).masked_fill(~mt[..., None], -1e4)  # (batch, width, 2)
            loss = cross_entropy(logits[..., 0], yt[:, 0]) + cross_entropy(logits[..., 1], yt[:, 1])
            (loss + self.l2 * layer.weight.pow(2).sum()).backward()
            optimiser.step()
        self.arrays["weight"] = layer.weight.detach().numpy().astype(np.float32)
        self.arrays["bias"] = layer.bias.detach().numpy().astype(np.float32)
        return self

    def predict(self, questions: Sequence[str], contexts: Sequence[str], encoded: Sequence[Encoded]) -> list[Answer]:
        assert self.arrays, "fit the head first"
        out = []
        for enc, question, context in zip(encoded, questions, contexts, strict=True):
            if not len(enc.offsets):
                out.append(Answer(None, None, 0.0))
                continue
            logits = self._features(enc, question, context) @ self.arrays["weight"].T + self.arrays["bias"]
            s, e, score = best_span(_log_softmax(logits[:, 0]), _log_softmax(logits[:, 1]), MAX_ANSWER_TOKENS)
            out.append(_threshold_answer(score, self.threshold, int(enc.offsets[s, 0]), int(enc.offsets[e, 1])))
        return out

    def tensors(self) -> dict[str, np.ndarray]:
        assert self.arrays, "fit the head first"
        return dict(self.arrays)

    def params(self) -> dict[str, Any]:
        return {"rank": self.rank, "l2": self.l2, "epochs": self.epochs, "threshold": self.threshold,
                "seed": self.seed}

    @classmethod
    def restore(cls, labels: list[str], params: dict[str, Any], tensors: dict[str, np.ndarray]) -> SpanPointer:
        head = cls(labels, **params)
        head.arrays = dict(tensors)
        return head


@span_head
class WordPointer:
    """No-transfer baseline: logistic regressions for "answer starts / ends at this word" on lexical
    features (the word, its shape, its and its neighbours' overlap with the question, distance to the
    nearest question word, each crossed with the question's wh-word), normalised over the context."""

    kind: ClassVar[str] = "word-pointer"
    task_kind: ClassVar[str] = ANSWERS
    transfer: ClassVar[bool] = False

    def __init__(self, labels: list[str] | None = None, c: float = 1.0, threshold: float = 0.0,
                 vocabulary: list[str] | None = None) -> None:
        self.labels, self.c, self.threshold = list(labels or []), c, threshold
        self.vocab = _Vocabulary(vocabulary) if vocabulary is not None else None
        self.start: _Linear | None = None
        self.end: _Linear | None = None

    @staticmethod
    def _rows(question: str, context: str) -> tuple[list[dict[str, float]], np.ndarray]:
        return wf.word_rows({"question": question, "context": context})  # as an export's span_decode.py

    def fit(self, questions: Sequence[str], contexts: Sequence[str], answers: Sequence[tuple[int, int] | None],
            encoded: Any = None) -> WordPointer:
        rows: list[dict[str, float]] = []
        starts, ends = [], []
        for question, context, answer in zip(questions, contexts, answers, strict=True):
            feats, offsets = self._rows(question, context)
            tokens = None if answer is None else token_span(offsets, *answer)
            if tokens is None:
                continue
            rows += feats
            starts.append(np.arange(len(feats)) == tokens[0])
            ends.append(np.arange(len(feats)) == tokens[1])
        self.vocab = _Vocabulary.fit(rows or [{"bias": 1.0}])
        x = self.vocab.transform(rows or [{"bias": 1.0}])
        y_start = np.concatenate(starts).astype(np.int64) if starts else np.zeros(1, np.int64)
        y_end = np.concatenate(ends).astype(np.int64) if ends else np.zeros(1, np.int64)
        self.start = _Linear.fit(x, y_start, 2, self.c, dense=False)
        self.end = _Linear.fit(x, y_end, 2, self.c, dense=False)
        return self

    def predict(self, questions: Sequence[str], contexts: Sequence[str], encoded: Any = None) -> list[Answer]:
        assert self.vocab is not None and self.start is not None and self.end is not None, "fit the head first"
        out = []
        for question, context in zip(questions, contexts, strict=True):
            feats, offsets = self._rows(question, context)
            if not feats:
                out.append(Answer(None, None, 0.0))
                continue
            x = self.vocab.transform(feats)
            start = self.start.logits(x)
            end = self.end.logits(x)
            s, e, score = best_span(_log_softmax(start[:, 1] - start[:, 0]), _log_softmax(end[:, 1] - end[:, 0]),
                                    MAX_ANSWER_TOKENS)
            out.append(_threshold_answer(score, self.threshold, int(offsets[s, 0]), int(offsets[e, 1])))
        return out

    def tensors(self) -> dict[str, np.ndarray]:
        assert self.start is not None and self.end is not None
        return {"start_coef": self.start.coef, "start_bias": self.start.bias, "end_coef": self.end.coef,
                "end_bias": self.end.bias}

    def resident_nbytes(self) -> int:
        """What a loaded head holds: its tensors and its vocabulary (the head cache charges this)."""
        assert self.vocab is not None
        return sum(int(t.nbytes) for t in self.tensors().values()) + self.vocab.nbytes()

    def params(self) -> dict[str, Any]:
        assert self.vocab is not None
        return {"c": self.c, "threshold": self.threshold, "vocabulary": self.vocab.names}

    @classmethod
    def restore(cls, labels: list[str], params: dict[str, Any], tensors: dict[str, np.ndarray]) -> WordPointer:
        head = cls(labels, **params)
        dim = tensors["start_coef"].shape[1]
        zeros, ones = np.zeros(dim, np.float32), np.ones(dim, np.float32)
        head.start = _Linear(zeros, ones, tensors["start_coef"], tensors["start_bias"])
        head.end = _Linear(zeros, ones, tensors["end_coef"], tensors["end_bias"])
        return head


