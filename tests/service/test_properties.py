"""Property tests (hypothesis): what the API accepts, the store and the head format round-trip
exactly; what they cannot hold, the API refuses with 422 — never a 500.

Labels and inputs are arbitrary unicode: empty, whitespace, very long, control characters, lone
surrogates, and duplicates that differ only by case or whitespace (distinct labels to Graft).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from adapters import heads
from graft import schemas as s
from service.store.repository import Store

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

text = st.text(st.characters(codec=None), max_size=40) | st.sampled_from(
    ["", " ", "a", "A", " a", "a ", "\t", "x" * 300]
)
# near-duplicates of one another: case, surrounding whitespace, unicode normalisation forms
near_duplicates = st.sampled_from(["label", "Label", "LABEL", " label", "label ", "labe\u0301l", "ǆ", "Ǆ", "ǅ"])
labels = st.lists(text | near_duplicates, min_size=2, max_size=6)


_names = iter(range(10**9))


def accepted(body: dict) -> s.TaskCreate | None:
    """What the API does with the body: the parsed request, or None for a 4xx (422, or 400 for JSON
    it cannot decode)."""
    raw = json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")
    try:
        request = s.TaskCreate.model_validate_json(raw)
    except ValidationError:
        return None
    if any(s.label_problem(request.kind, e.label) for e in request.examples):  # checked by the route, by kind
        return None
    return request


@SETTINGS
@given(labels=labels, inputs=st.lists(text, min_size=2, max_size=6))
@example(labels=["a\x00b", "b"], inputs=["x", "y"])  # NUL: PostgreSQL text cannot hold it
@example(labels=["\ud800", "b"], inputs=["x\udfff", "y"])  # lone surrogates: not encodable as UTF-8
@example(labels=["label", "Label", " label"], inputs=["x", "y", "z"])
def test_examples_and_labels_round_trip_through_the_store_or_are_refused(store: Store, labels, inputs) -> None:
    examples = [{"input": i, "label": lbl} for i, lbl in zip(inputs, labels, strict=False)]
    assume(len(examples) >= 2)
    request = accepted({"name": "t", "examples": examples})
    if request is None:
        return  # refused with 422 before anything is stored
    pairs = [(e.input, e.label) for e in request.examples]
    tenant, _ = store.create_tenant(f"p{next(_names)}")
    task, _ = store.create_task(tenant.id, "t", modality="text", backbone="minilm", head="linear", examples=pairs)
    assert store.examples(task.id) == pairs  # exact: no normalisation, no trimming, no case folding
    counts = store.label_counts(task.id)
    assert counts == {lbl: sum(1 for _, x in pairs if x == lbl) for _, lbl in pairs}


@settings(max_examples=100, deadline=None, database=None, derandomize=True)
@given(
    labels=st.lists(text | near_duplicates, min_size=2, max_size=8, unique=True),
    kind=st.sampled_from(["linear", "prototype"]),
)
def test_heads_round_trip_exactly_with_any_labels(labels, kind) -> None:
    rng = np.random.default_rng(len(labels))
    x = rng.normal(size=(len(labels) * 2, 8)).astype(np.float32)
    y = np.repeat(np.arange(len(labels)), 2)
    head = heads.HEADS[kind](list(labels)).fit(x, y)
    blob = heads.to_bytes(head, backbone="minilm")
    again = heads.from_bytes(blob)
    assert again.labels == list(labels) and type(again) is type(head)
    np.testing.assert_array_equal(again.predict_proba(x), head.predict_proba(x))
    assert heads.to_bytes(again, backbone="minilm") == blob


@settings(max_examples=200, deadline=None, database=None, derandomize=True)
@given(blob=st.binary(max_size=300))
def test_arbitrary_bytes_never_load_as_a_head(blob) -> None:
    """The head format is safetensors + JSON metadata: garbage is a HeadFormatError (→ the version
    is marked failed), never code execution, never another exception type."""
    with pytest.raises(heads.HeadFormatError):
        heads.from_bytes(blob)


def test_dataset_rows_that_cannot_be_stored_are_refused_with_422(store: Store) -> None:
    """Uploaded files skip the request schema: the quota check refuses what the store cannot hold."""
    from service.application.quotas import QuotaExceeded, check_new_examples
    from service.config import Settings

    tenant, _ = store.create_tenant("files")
    for bad in [("a\x00", "x"), ("a", "x\x00"), ("\ud800", "x")]:
        with pytest.raises(QuotaExceeded, match="example 1") as refused:
            check_new_examples(store, Settings.from_env({}), tenant.id, None, [("ok", "y"), bad])
        assert refused.value.code == "validation_error"
