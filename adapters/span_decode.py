"""How a consumer of an exported token-level graph (an ``entities`` or ``answers`` task) gets Graft's answers.

This file is shipped as is in the export zip of such a task (``span_decode.py``): it needs only numpy (and, for the
encoder's heads, the ``tokenizers`` package), no Graft code. It does what Graft does around the encoder (docs/spans.md):

1. :func:`encode`: tokenise the text with ``tokenizer.json`` into windows of at most ``window`` tokens
   (special tokens included) sharing ``stride`` tokens, as the model's feeds, and the text's own tokens
   with their character offsets;
2. run the graph on the feeds (one row per window);
3. :func:`merge`: give each of the text's tokens its output from the window where it has the most
   context on its shorter side (SQuAD's "max context" rule, the first window on ties);
4. :func:`entities`: sum each token's logit parts (itself, its neighbours'), softmax, take the
   BIO-consistent Viterbi path and read its spans, each scored by the geometric mean of its tokens'
   probabilities of the chosen tags: ``{"entities": [{start, end, label, text, score}, ...]}``.

:func:`predict_entities` does all four with an ONNX Runtime session and the manifest
(``graft-export.json``): ``predict_entities(session, tokenizer, text, manifest)``.

An answers task's graph reads the windows of one question + context (:func:`encode_pair`) and does the
max-context merge itself (:func:`gather` says where each context token takes its state), with the
word-level :func:`exact_match` feature as an input; :func:`best_answer` searches its start/end
log-probabilities for the answer. All in one call: ``predict_answer(session, tokenizer, {"question": ...,
"context": ...}, manifest)`` → ``{"answer", "start", "end", "score"}``.

The word baselines (``word-tagger``, ``word-pointer``; the manifest's ``decode.features`` is ``words``) read
no encoder: :func:`word_rows` splits the text into words and builds each word's feature dict (the very
functions Graft's heads call), :func:`word_feeds` turns them into the graph's ``feature_names`` and
``feature_values``, and the graph's per-word logits are decoded as above, over words instead of tokens.
The same two calls serve them, ``tokenizer`` unused (None will do).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

FILE = "span_decode.py"  # this file's name in the export zip
OUTSIDE = 0


@dataclass(frozen=True)
class Layout:
    """Where the text's tokens lie in the windows: ``offsets`` (n_tokens, 2) character offsets of the text's
    tokens (special tokens left out); per window, ``positions`` of its text tokens in its row and the index
    of its first text token among the text's tokens (``first``)."""

    offsets: np.ndarray
    positions: list[np.ndarray]
    first: list[int]


def encode(
    tokenizer: Any, text: str, window: int, stride: int, inputs: list[str]
) -> tuple[dict[str, np.ndarray], Layout]:
    """The graph's feeds (``inputs``: the names the manifest lists, ``model.inputs``) for the windows of
    ``text`` and their :class:`Layout`. ``tokenizer``: a ``tokenizers.Tokenizer`` from ``tokenizer.json``."""
    tokenizer.no_padding()
    tokenizer.no_truncation()
    full = tokenizer.encode(text, add_special_tokens=False)
    offsets = np.asarray(full.offsets, dtype=np.int64).reshape(-1, 2)
    tokenizer.enable_truncation(window, stride=stride)
    first_encoding = tokenizer.encode(text)
    encodings = [first_encoding, *first_encoding.overflowing]
    rows, positions, first = [], [], []
    start = 0
    for enc in encodings:
        mine = np.array([p for p, s in enumerate(enc.sequence_ids) if s == 0], dtype=np.int64)
        if len(mine):  # the window's first text token, found among the text's tokens from the last one on
            wanted = tuple(enc.offsets[mine[0]])
            start = next((i for i in range(start, len(offsets)) if tuple(offsets[i]) == wanted), start)
        rows.append(enc)
        positions.append(mine)
        first.append(start)
    tokenizer.no_truncation()
    return _feeds(rows, inputs), Layout(offsets, positions, first)


def encode_pair(
    tokenizer: Any, question: str, context: str, window: int, stride: int, inputs: list[str]
) -> tuple[dict[str, np.ndarray], Layout, np.ndarray]:
    """As :func:`encode` for an answers input: windows of question + context (the question cut to half the
    window, the context truncated with the stride), the context's tokens' :class:`Layout` and the question's
    positions in every window."""
    tokenizer.no_padding()
    tokenizer.no_truncation()
    cut = tokenizer.encode(question, add_special_tokens=False).offsets
    if len(cut) > window // 2:
        question = question[: cut[window // 2 - 1][1]]
    full = tokenizer.encode(context, add_special_tokens=False)
    offsets = np.asarray(full.offsets, dtype=np.int64).reshape(-1, 2)
    tokenizer.enable_truncation(window, stride=stride, strategy="only_second")
    first_encoding = tokenizer.encode(question, context)
    rows = [first_encoding, *first_encoding.overflowing]
    positions, first = [], []
    start = 0
    for enc in rows:
        mine = np.array([p for p, s in enumerate(enc.sequence_ids) if s == 1], dtype=np.int64)
        if len(mine):
            wanted = tuple(enc.offsets[mine[0]])
            start = next((i for i in range(start, len(offsets)) if tuple(offsets[i]) == wanted), start)
        positions.append(mine)
        first.append(start)
    query = np.array([p for p, s in enumerate(rows[0].sequence_ids) if s == 0], dtype=np.int64)
    tokenizer.no_truncation()
    return _feeds(rows, inputs), Layout(offsets, positions, first), query


def _feeds(rows: list[Any], inputs: list[str]) -> dict[str, np.ndarray]:
    width = max(len(e.ids) for e in rows)
    feeds = {name: np.zeros((len(rows), width), dtype=np.int64) for name in inputs}
    for r, enc in enumerate(rows):
        values = {"input_ids": enc.ids, "attention_mask": enc.attention_mask, "token_type_ids": enc.type_ids}
        for name in inputs:
            feeds[name][r, : len(enc.ids)] = values[name]
    return feeds


def owners(layout: Layout) -> np.ndarray:
    """For each of the text's tokens, the window whose output it takes (max context, first on ties)."""
    n = len(layout.offsets)
    best = np.full(n, -1.0)
    owner = np.zeros(n, dtype=np.int64)
    for w, (mine, start) in enumerate(zip(layout.positions, layout.first, strict=True)):
        end = start + len(mine)
        positions = np.arange(start, end)
        context = np.minimum(positions - start, end - 1 - positions) + 0.01 * (end - start)
        better = context > best[start:end]
        best[start:end] = np.where(better, context, best[start:end])
        owner[start:end] = np.where(better, w, owner[start:end])
    return owner


def merge(output: np.ndarray, layout: Layout) -> np.ndarray:
    """The graph's per-window output (windows, seq, ...) as one row per text token (n_tokens, ...)."""
    merged = np.zeros((len(layout.offsets), *output.shape[2:]), dtype=output.dtype)
    owner = owners(layout)
    for w, (mine, start) in enumerate(zip(layout.positions, layout.first, strict=True)):
        keep = np.flatnonzero(owner[start : start + len(mine)] == w)
        merged[start + keep] = output[w, mine[keep]]
    return merged


def gather(layout: Layout) -> tuple[np.ndarray, np.ndarray]:
    """Each context token's (window, position) by the max-context rule: the pointer graph's ``token_window``
    and ``token_position``."""
    owner = owners(layout)
    position = np.zeros(len(owner), dtype=np.int64)
    for w, (mine, start) in enumerate(zip(layout.positions, layout.first, strict=True)):
        keep = np.flatnonzero(owner[start : start + len(mine)] == w)
        position[start + keep] = mine[keep]
    return owner, position


WORD = re.compile(r"\w+|[^\w\s]")
WH_WORDS = ("who", "whom", "whose", "what", "which", "where", "when", "why", "how")
STOP = frozenset(
    "a an the of in on at to for from by with and or is was were are be been did does do has have had "
    "what which who whom whose where when why how that this".split()
)


# -- word features: what the word baselines (``word-tagger``, ``word-pointer``) read -----------------------
# Graft's own heads import these functions (adapters/spans/words.py), so the export cannot drift from them.


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


def tagger_features(tokens: list[str], i: int) -> dict[str, float]:
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


def answer_features(tokens: list[str], i: int, wh: str, content: set[str]) -> dict[str, float]:
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


def word_rows(value: Any) -> tuple[list[dict[str, float]], np.ndarray]:
    """Per word of an entities text (a string) or of an answers context (``{"question", "context"}``): its
    feature dict (name → value) and the words' character offsets (n, 2)."""
    if isinstance(value, str):
        tokens, offsets = words(value)
        return [tagger_features(tokens, i) for i in range(len(tokens))], offsets
    tokens, offsets = words(value["context"])
    wh, content = question_features(value["question"])
    return [answer_features(tokens, i, wh, content) for i in range(len(tokens))], offsets


PAD = ""  # never a feature name: pads the rows of ``feature_names`` to one width


def word_feeds(rows: list[dict[str, float]]) -> dict[str, np.ndarray]:
    """A word head's graph inputs from :func:`word_rows`: ``feature_names`` (words, width) str, rows padded
    with ``""``, and ``feature_values`` (words, width) float32 (0 where padded)."""
    width = max([1, *map(len, rows)])
    names = np.full((len(rows), width), PAD, dtype=object)
    values = np.zeros((len(rows), width), dtype=np.float32)
    for r, row in enumerate(rows):
        names[r, : len(row)] = list(row)
        values[r, : len(row)] = list(row.values())
    return {"feature_names": names, "feature_values": values}


MATCH_RADII = (0, 1, 2, 4, 8)


def exact_match(question: str, context: str, offsets: np.ndarray) -> np.ndarray:
    """DrQA's exact-match feature per context token (the pointer graph's ``exact_match``, (tokens, 5)): does
    the word it lies in occur among the question's content words (lower case, stop words aside)? Maxed over
    0, 1, 2, 4 and 8 tokens either side."""
    _, content = question_features(question)
    hit = np.zeros(len(offsets), np.float32)
    for m in WORD.finditer(context):
        if m.group().lower() in content:
            start, end = m.span()
            hit[(offsets[:, 0] < end) & (offsets[:, 1] > start)] = 1.0
    if not len(offsets):
        return np.zeros((0, len(MATCH_RADII)), np.float32)
    near = [np.lib.stride_tricks.sliding_window_view(np.pad(hit, r), 2 * r + 1).max(axis=1) for r in MATCH_RADII]
    return np.stack(near, axis=1).astype(np.float32)


def best_answer(
    log_probs: np.ndarray, offsets: np.ndarray, context: str, max_tokens: int, threshold: float
) -> dict[str, Any]:
    """Graft's answer from the pointer's (tokens, 2) start/end log-probabilities: the best span of at most
    ``max_tokens`` tokens, ``answer`` null when its probability is under ``threshold``."""
    if not len(offsets):
        return {"answer": None, "start": None, "end": None, "score": 0.0}
    n = len(log_probs)
    total = log_probs[:, 0, None] + log_probs[None, :, 1]
    i, j = np.indices((n, n))
    total = np.where((j >= i) & (j < i + max_tokens), total, -np.inf)
    s, e = np.unravel_index(int(np.argmax(total)), total.shape)
    score = float(np.exp(total[s, e]))
    if score < threshold:
        return {"answer": None, "start": None, "end": None, "score": score}
    start, end = int(offsets[s, 0]), int(offsets[e, 1])
    return {"answer": context[start:end], "start": start, "end": end, "score": score}


def predict_answer(session: Any, tokenizer: Any, value: dict[str, str], manifest: dict[str, Any]) -> dict[str, Any]:
    """An answers task's answer for ``{"question", "context"}`` with an ONNX Runtime ``session`` (``tokenizer``
    is not read for a word baseline's graph, ``decode.features`` ``words``: it may be None)."""
    decode = manifest["decode"]
    if decode.get("features") == "words":
        rows, offsets = word_rows(value)
        if not rows:
            return best_answer(np.zeros((0, 2)), offsets, value["context"], 1, 0.0)
        (log_probs,) = session.run([manifest["model"]["output"]], word_feeds(rows))
        return best_answer(log_probs, offsets, value["context"], decode["max_answer_tokens"], decode["threshold"])
    windows, model, decode = manifest["preprocessing"]["windows"], manifest["model"], manifest["decode"]
    encoder = [name for name in model["inputs"] if name in ("input_ids", "attention_mask", "token_type_ids")]
    feeds, layout, query = encode_pair(
        tokenizer, value["question"], value["context"], windows["window"], windows["stride"], encoder
    )
    if not len(layout.offsets):
        return best_answer(np.zeros((0, 2)), layout.offsets, value["context"], 1, 0.0)
    window, position = gather(layout)
    feeds |= {
        "token_window": window,
        "token_position": position,
        "query_positions": query,
        "exact_match": exact_match(value["question"], value["context"], layout.offsets),
    }
    (log_probs,) = session.run([model["output"]], feeds)
    return best_answer(log_probs, layout.offsets, value["context"], decode["max_answer_tokens"], decode["threshold"])


def tag_logits(parts: np.ndarray) -> np.ndarray:
    """A tagger's logits (n_tokens, tags) from its merged parts (n_tokens, 3, tags): the token's own part,
    plus its left neighbour's part as a left neighbour, plus its right neighbour's as a right neighbour."""
    logits = parts[:, 0].astype(np.float64)
    logits[1:] += parts[:-1, 1]
    logits[:-1] += parts[1:, 2]
    return logits


def viterbi_bio(log_probs: np.ndarray, n_labels: int) -> np.ndarray:
    """The most probable valid BIO tag sequence: ``I-X`` only after ``B-X`` or ``I-X``, never first."""
    n_tags = 1 + 2 * n_labels
    allowed = np.ones((n_tags, n_tags), dtype=bool)
    for k in range(n_labels):
        inside = 2 + 2 * k
        allowed[:, inside] = False
        allowed[1 + 2 * k, inside] = allowed[inside, inside] = True
    penalty = np.where(allowed, 0.0, -np.inf)
    first_ok = ~np.isin(np.arange(n_tags), 2 + 2 * np.arange(n_labels))
    score = np.where(first_ok, log_probs[0], -np.inf)
    back = np.zeros((len(log_probs), n_tags), dtype=np.int64)
    for t in range(1, len(log_probs)):
        total = score[:, None] + penalty
        back[t] = total.argmax(axis=0)
        score = total.max(axis=0) + log_probs[t]
    tags = np.zeros(len(log_probs), dtype=np.int64)
    tags[-1] = int(score.argmax())
    for t in range(len(log_probs) - 1, 0, -1):
        tags[t - 1] = back[t, tags[t]]
    return tags


def entities(parts: np.ndarray, offsets: np.ndarray, text: str, labels: list[str]) -> dict[str, Any]:
    """Graft's answer for ``text`` from the tagger's merged parts (:func:`merge`) and the tokens' offsets."""
    if not len(offsets):
        return {"entities": []}
    return tagged_entities(tag_logits(parts), offsets, text, labels)


def tagged_entities(logits: np.ndarray, offsets: np.ndarray, text: str, labels: list[str]) -> dict[str, Any]:
    """Graft's answer for ``text`` from BIO logits (n_tokens, tags) of its tokens (or words) at ``offsets``."""
    if not len(offsets):
        return {"entities": []}
    logits = logits.astype(np.float64)
    z = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(z - np.log(np.exp(z).sum(axis=1, keepdims=True)))
    log_probs = np.log(np.clip(probs, 1e-12, 1.0))
    tags = viterbi_bio(log_probs, len(labels))
    chosen = log_probs[np.arange(len(tags)), tags]
    found: list[dict[str, Any]] = []
    current: tuple[int, int, int] | None = None  # (label index, first token, last token)

    def close(span: tuple[int, int, int]) -> None:
        k, a, b = span
        start, end = int(offsets[a, 0]), int(offsets[b, 1])
        inside = (offsets[:, 0] < end) & (offsets[:, 1] > start) & (tags != OUTSIDE)
        found.append(
            {
                "start": start,
                "end": end,
                "label": labels[k],
                "text": text[start:end],
                "score": float(np.exp(chosen[inside].mean())),
            }
        )

    for i, tag in enumerate(int(t) for t in tags):  # conlleval: a B, or an I of another label, starts one
        if tag == OUTSIDE:
            if current is not None:
                close(current)
            current = None
            continue
        k, begins = (tag - 1) // 2, tag % 2 == 1
        if current is not None and not begins and current[0] == k:
            current = (k, current[1], i)
            continue
        if current is not None:
            close(current)
        current = (k, i, i)
    if current is not None:
        close(current)
    return {"entities": found}


def predict_entities(session: Any, tokenizer: Any, text: str, manifest: dict[str, Any]) -> dict[str, Any]:
    """An entities task's answer for ``text`` with an ONNX Runtime ``session`` of the exported graph
    (``tokenizer`` is not read for a word baseline's graph, ``decode.features`` ``words``: it may be None)."""
    if manifest["decode"].get("features") == "words":
        rows, offsets = word_rows(text)
        if not rows:
            return {"entities": []}
        (logits,) = session.run([manifest["model"]["output"]], word_feeds(rows))
        return tagged_entities(logits, offsets, text, manifest["decode"]["labels"])
    windows = manifest["preprocessing"]["windows"]
    model = manifest["model"]
    feeds, layout = encode(tokenizer, text, windows["window"], windows["stride"], model["inputs"])
    if not len(layout.offsets):
        return {"entities": []}
    (output,) = session.run([model["output"]], feeds)
    return entities(merge(output, layout), layout.offsets, text, manifest["decode"]["labels"])
