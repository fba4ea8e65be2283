"""How example labels of each task kind are stored: the store keeps one string per example.

- classification: the label itself;
- multilabel: the sorted label list as JSON (``["business","money"]``);
- regression: the number as Python's shortest round-tripping ``repr`` of a float (``"3.5"``).

Labels are validated per kind at the API edge (:func:`graft.schemas.label_problem`) before they are
encoded, so decoding trusts the store.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

CLASSIFICATION, MULTILABEL, REGRESSION = "classification", "multilabel", "regression"


def encode(kind: str, label: Any) -> str:
    if kind == MULTILABEL:
        return json.dumps(sorted(label), ensure_ascii=False)
    if kind == REGRESSION:
        return repr(float(label))
    return label


def decode(kind: str, stored: str) -> Any:
    if kind == MULTILABEL:
        return json.loads(stored)
    if kind == REGRESSION:
        return float(stored)
    return stored


def decode_all(kind: str, stored: Sequence[str]) -> list[Any]:
    return [decode(kind, s) for s in stored]


def names(kind: str, stored: Sequence[str]) -> list[str]:
    """The label names in stored labels (none for regression, whose targets are numbers)."""
    if kind == MULTILABEL:
        return [label for one in stored for label in json.loads(one)]
    return [] if kind == REGRESSION else list(stored)


def per_label(kind: str, counts: dict[str, int]) -> dict[str, int]:
    """Examples per label from stored-label counts (a multilabel example counts once for each of its
    labels); regression has no labels, so all examples count under ``"value"``."""
    if kind == MULTILABEL:
        out: Counter[str] = Counter()
        for stored, n in counts.items():
            for label in json.loads(stored):
                out[label] += n
        return dict(sorted(out.items()))
    if kind == REGRESSION:
        return {"value": sum(counts.values())} if counts else {}
    return counts
