"""The head step of a backbone pass: each request's head applied to its rows, batched across tasks.

- Rows are grouped by head: all linear heads of the pass (those with ``softmax_affine``) are applied in
  one stacked matrix product, any other head once on all of its rows (:func:`apply_heads`).
- Rows of fine-tuned heads (``finetune``) skip the pooled embedding: the torch text model's frozen
  layers below the split run once for all of them, then each task's own top layers run on its rows
  (:func:`apply_trunk`, over :func:`adapters.heads.finetune.predict_shared`).

The batcher (service/batching.py) schedules passes and calls these; it does not know head math.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import numpy as np

from adapters.heads import TRUNK, Head, predict
from adapters.heads.finetune import predict_shared

from ..backbones.base import Backbone
from ..logs import get as get_logger

log = get_logger("batching")

STACK_LIMIT = 8_000_000  # most weight values gathered for one stacked product; beyond, heads go one by one


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def _stacked_linear(vectors: np.ndarray, heads: list[Head], row_head: np.ndarray) -> np.ndarray:
    """Probabilities (rows, max labels) of many linear heads in one gathered batched product.

    ``row_head[i]`` indexes ``heads`` for row ``i``; columns past a head's labels are 0.
    """
    affine = [head.softmax_affine() for head in heads]  # type: ignore[attr-defined]
    width = max(w.shape[0] for w, _ in affine)
    weights = np.zeros((len(heads), width, vectors.shape[1]), dtype=np.float32)
    biases = np.full((len(heads), width), -np.inf, dtype=np.float32)
    for h, (w, b) in enumerate(affine):
        weights[h, : w.shape[0]] = w
        biases[h, : b.shape[0]] = b
    logits = np.matmul(weights[row_head], vectors[:, :, None])[:, :, 0] + biases[row_head]
    return _softmax(logits)


def apply_heads(vectors: np.ndarray, parts: Sequence[tuple[Head | None, int, int]]) -> list[np.ndarray | Exception]:
    """Each part ``(head, start, stop)`` owns ``vectors[start:stop]``; returns its head's
    probabilities (or the rows themselves when head is None, or the head's error).

    Linear heads (those with ``softmax_affine``) are applied together: one stacked product for
    all their rows. Any other head runs once on all of its rows in the batch.
    """
    results: list[np.ndarray | Exception | None] = [None] * len(parts)
    groups: dict[int, list[int]] = {}
    for i, (head, start, stop) in enumerate(parts):
        if head is None:
            results[i] = vectors[start:stop]
        else:
            groups.setdefault(id(head), []).append(i)
    stack: list[Head] = []
    stack_parts: list[int] = []
    for members in groups.values():
        head = parts[members[0]][0]
        assert head is not None
        if hasattr(head, "softmax_affine"):
            stack.append(head)
            stack_parts.extend(members)
            continue
        rows = np.concatenate([np.arange(parts[i][1], parts[i][2]) for i in members])
        try:
            proba = predict(head, vectors[rows])  # a regression head's values (n,)
        except Exception as exc:  # a broken head fails its own requests only
            for i in members:
                results[i] = exc
            continue
        offset = 0
        for i in members:
            n = parts[i][2] - parts[i][1]
            results[i] = proba[offset : offset + n]
            offset += n
    if stack:
        _apply_stacked(vectors, parts, stack, stack_parts, results)
    return results  # type: ignore[return-value]


def _apply_stacked(
    vectors: np.ndarray,
    parts: Sequence[tuple[Head | None, int, int]],
    stack: list[Head],
    members: list[int],
    results: list[np.ndarray | Exception | None],
) -> None:
    index = {id(head): h for h, head in enumerate(stack)}
    starts = np.array([parts[i][1] for i in members])
    lengths = np.array([parts[i][2] - parts[i][1] for i in members])
    rows = np.arange(lengths.sum()) + np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
    row_head = np.repeat([index[id(parts[i][0])] for i in members], lengths)
    width = max(len(head.labels) for head in stack)
    try:
        if len(rows) * width * vectors.shape[1] > STACK_LIMIT:
            raise MemoryError("stack too large")  # fall back to one product per head below
        proba = _stacked_linear(vectors[rows], stack, row_head)
    except MemoryError:
        proba = None
    except Exception as exc:  # e.g. a head trained on another dimension: retry head by head
        log.warning("stacked head step failed; applying heads one by one", extra={"error": str(exc)})
        proba = None
    offset = 0
    for i in members:
        head, start, stop = parts[i]
        n = stop - start
        if proba is not None:
            results[i] = proba[offset : offset + n, : len(cast(Head, head).labels)]
        else:
            try:
                results[i] = head.predict_proba(vectors[start:stop])  # type: ignore[union-attr]
            except Exception as exc:
                results[i] = exc
        offset += n


def on_trunk(head: Head | None) -> bool:
    """Whether ``head`` reads the backbone's hidden states at a split layer (a fine-tuned head)."""
    return head is not None and TRUNK in head.consumes


def text_trunk(backbone: Backbone) -> object | None:
    """The torch text model under any runtime (an ONNX runtime wraps the torch backbone it was
    exported from), for the fine-tuned heads' shared trunk; None when the backbone has none."""
    source = getattr(backbone, "origin", backbone)
    is_text = getattr(source, "modality", "") == "text"
    return source if hasattr(source, "model") and hasattr(source, "batches") and is_text else None


def apply_trunk(backbone: Backbone, texts: Sequence[str], row_heads: Sequence[Head]) -> np.ndarray:
    """Probabilities (rows, max labels) of fine-tuned heads, one head per row: ``backbone``'s frozen lower
    layers once for all rows, then each head's merged top layers on its rows."""
    source = text_trunk(backbone)
    if source is None:
        raise ValueError(f"backbone {backbone.name!r} has no transformer trunk for fine-tuned heads")
    micro_batch = getattr(source, "micro_batch", 32)
    return predict_shared(source, list(texts), list(row_heads), micro_batch=micro_batch)  # type: ignore[arg-type]
