"""Task kinds register themselves (adapters/kinds/base.py ``register_kind``): the client's list of kinds is
the registry's, and a kind defined outside adapters/kinds — with structured labels and predictions that
are not a top-k label list — is looked up and asked like the built-in ones."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any, get_args

import numpy as np
import pytest

from adapters.heads import Head
from adapters.kinds import KINDS, TaskKind, UnknownKind, kind_of, register_kind
from adapters.kinds.base import label_set_problem
from adapters.selection import Decision, unconditional
from adapters.training import FitResult
from graft import schemas


def test_the_clients_kinds_are_the_registry() -> None:
    assert set(get_args(schemas.TaskKind)) == set(KINDS)
    assert schemas.TaskCreate.model_fields["kind"].default in KINDS


def test_unknown_kinds_are_refused_by_name() -> None:
    with pytest.raises(UnknownKind, match="unknown task kind 'nope'"):
        kind_of("nope")


def test_new_task_rules_come_from_the_kind() -> None:
    assert kind_of("classification").new_task_problem("text", "auto", "finetune") is None
    assert kind_of("classification").new_task_problem("image", None, "linear") is None
    refused = kind_of("multilabel").new_task_problem("text", None, "linear")
    assert refused == "head 'linear' is for classification tasks; a multilabel task takes head 'auto' (or none)"
    refused = kind_of("regression").new_task_problem("image", "auto", "auto")
    assert refused == "backbone 'auto' is for classification tasks; name a image backbone for a regression task"


@pytest.mark.parametrize(
    ("kind", "labels", "declared", "fragment"),
    [
        ("classification", ["a", "a"], None, "at least 2 distinct labels"),
        ("classification", ["a", "b"], ["a", "b", "c"], "none for ['c']"),
        ("multilabel", [["a", "b"], ["b"]], ["a"], "not in 'labels': ['b']"),
        ("regression", [1.0, 1.0], None, "at least 2 distinct target values"),
    ],
)
def test_a_new_tasks_labels_are_checked_by_its_kind(
    kind: str, labels: list, declared: list | None, fragment: str
) -> None:
    assert fragment in (kind_of(kind).examples_problem(labels, declared) or "")
    distinct = {"classification": ["a", "b"], "multilabel": [["a"], ["a", "b"]], "regression": [1.0, 2.5]}[kind]
    assert kind_of(kind).examples_problem(distinct, None) is None


class Spans:
    """A prediction that is not a label list: character spans."""

    def __init__(self, spans: list[dict[str, Any]]) -> None:
        self.spans = spans

    def as_json(self) -> dict[str, Any]:
        return {"spans": self.spans}


class SpanKind(TaskKind):
    """A kind whose label is a list of ``{start, end, label}`` dicts (as entity tasks will be)."""

    name = "test-spans"
    modalities = ("text",)

    def problem(self, label: Any) -> str | None:
        keys = {"start", "end", "label"}
        if not isinstance(label, list) or not all(isinstance(x, dict) and keys <= set(x) for x in label):
            return "a test-spans task takes a list of {start, end, label}"
        return None

    def encode(self, label: Any) -> str:
        return json.dumps(sorted(label, key=lambda x: (x["start"], x["end"])), sort_keys=True)

    def decode(self, stored: str) -> Any:
        return json.loads(stored)

    def names(self, stored: Sequence[str]) -> list[str]:
        return [span["label"] for one in stored for span in json.loads(one)]

    def examples_problem(self, labels: Sequence[Any], declared: Sequence[str] | None) -> str | None:
        return label_set_problem({span["label"] for one in labels for span in one}, declared)

    def fit(
        self,
        x: np.ndarray,
        labels: Sequence[Any],
        *,
        head: str,
        raw: Sequence[str] | None,
        modality: str,
        folds: int,
        seed: int,
    ) -> FitResult:
        raise NotImplementedError

    def comparable(self, result: FitResult) -> bool:
        return False

    def compare(
        self,
        active: Head,
        vectors: np.ndarray | None,
        raw: Sequence[str],
        truth: Sequence[str],
        result: FitResult,
        unseen: np.ndarray,
        active_number: int,
    ) -> Decision:
        return unconditional("no comparison")

    def format(self, head: Head, output: np.ndarray, top_k: int | None) -> list[Any]:
        return [Spans([{"start": 0, "end": int(v), "label": "x"}]) for v in output[:, 0]]


@pytest.fixture
def span_kind() -> Iterator[TaskKind]:
    register_kind(SpanKind)
    try:
        yield kind_of("test-spans")
    finally:
        del KINDS["test-spans"]


def test_a_kind_with_structured_labels_plugs_in(span_kind: TaskKind) -> None:
    label = [{"start": 4, "end": 9, "label": "ORG"}, {"start": 0, "end": 3, "label": "PER"}]
    assert span_kind.problem(label) is None and span_kind.problem("PER") is not None
    stored = span_kind.encode(label)
    assert span_kind.decode(stored)[0]["label"] == "PER" and span_kind.names([stored]) == ["PER", "ORG"]
    assert span_kind.new_task_problem("image", None, "auto") == "a test-spans task takes modality 'text', not 'image'"
    assert "for classification tasks" in (span_kind.new_task_problem("text", None, "linear") or "")
    answer = span_kind.format(None, np.array([[5.0]]), None)  # type: ignore[arg-type]
    assert answer[0].as_json() == {"spans": [{"start": 0, "end": 5, "label": "x"}]}
    assert span_kind.manifest(None) == {}  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="already registered"):
        register_kind(type("Other", (SpanKind,), {}))
