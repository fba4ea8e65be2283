"""The entities and answers task kinds: label and input checks (the server's and the client's copy agree),
the store codec, label-vs-input checks, and their promotion outcomes."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.kinds import kind_of
from graft.schemas import TaskCreate, label_problem

SPAN = {"start": 0, "end": 11, "label": "PER"}


@pytest.mark.parametrize(
    ("kind", "label", "fragment"),
    [
        ("entities", "PER", "a list of spans"),
        ("entities", [SPAN, {"start": 6, "end": 20, "label": "ORG"}], "spans 0-11 (PER) and 6-20 (ORG) overlap"),
        ("entities", [{"start": 0, "end": 5}], "missing ['label']"),
        ("entities", [{**SPAN, "kind": "x"}], "unknown ['kind']"),
        ("entities", [{"start": 3, "end": 3, "label": "PER"}], "0 <= start < end"),
        ("entities", [{"start": 0.0, "end": 3, "label": "PER"}], "integer character offsets"),
        ("entities", [{"start": True, "end": 3, "label": "PER"}], "integer character offsets"),
        ("entities", [{"start": 0, "end": 3, "label": ""}], "non-empty"),
        (
            "entities",
            [{"start": 10 * i, "end": 10 * i + 5, "label": "LOCATION"} for i in range(500)],
            "the limit is 8192",
        ),
        ("entities", ["PER"], "must be an object"),
        ("answers", "Lyon", "or null"),
        ("answers", {"start": 1}, "exactly the keys start and end"),
        ("answers", {"start": 4, "end": 2}, "0 <= start < end"),
        ("answers", [1, 2], "or null"),
    ],
)
def test_bad_labels_are_refused_with_the_same_reason_by_server_and_client(kind: str, label: Any, fragment: str) -> None:
    assert fragment in (label_problem(kind, label) or ""), label_problem(kind, label)
    assert kind_of(kind).problem(label) == label_problem(kind, label)


@pytest.mark.parametrize(
    ("kind", "label"),
    [
        ("entities", []),
        ("entities", [{"start": 19, "end": 26, "label": "ORG"}, SPAN]),
        ("answers", None),
        ("answers", {"start": 12, "end": 16}),
    ],
)
def test_good_labels_round_trip_through_the_store_encoding(kind: str, label: Any) -> None:
    task_kind = kind_of(kind)
    assert task_kind.problem(label) is None and label_problem(kind, label) is None
    stored = task_kind.encode(label)
    assert len(stored) <= 256
    decoded = task_kind.decode(stored)
    assert decoded == (sorted(label, key=lambda s: s["start"]) if isinstance(label, list) else label)


def test_spans_must_lie_in_their_text_and_answers_in_their_context() -> None:
    entities, answers = kind_of("entities"), kind_of("answers")
    assert entities.example_problem("Maria Lopez", [SPAN]) is None
    assert "0-30 (PER) is not inside the text of 11 characters" in (
        entities.example_problem("Maria Lopez", [{"start": 0, "end": 30, "label": "PER"}]) or ""
    )
    assert "only whitespace" in (entities.example_problem("a    b", [{"start": 1, "end": 4, "label": "X"}]) or "")
    qa = {"question": "Where?", "context": "In Lyon."}
    assert answers.example_problem(qa, {"start": 3, "end": 7}) is None
    assert "past the context's 8 characters" in (answers.example_problem(qa, {"start": 3, "end": 9}) or "")
    assert answers.example_problem(qa, None) is None


def test_inputs_are_strings_except_for_answers_which_take_question_and_context() -> None:
    qa = {"question": "Where?", "context": "In Lyon."}
    assert kind_of("answers").input_problem(qa) is None
    assert "question and context" in (kind_of("answers").input_problem({"question": "x"}) or "")
    assert "non-empty" in (kind_of("answers").input_problem({"question": " ", "context": "x"}) or "")
    assert "objects are for answers tasks" in (kind_of("entities").input_problem(qa) or "")
    assert kind_of("classification").input_problem("text") is None
    assert kind_of("answers").input_chars(qa) == len("Where?") + len("In Lyon.")
    stored = kind_of("answers").encode_input(qa)
    assert kind_of("answers").decode_input(stored) == qa
    with pytest.raises(ValueError, match="takes an object"):
        TaskCreate.model_validate({"name": "qa", "kind": "answers", "examples": [{"input": "x", "label": None}]})
    with pytest.raises(ValueError, match="takes a string"):
        TaskCreate.model_validate({"name": "n", "kind": "entities", "examples": [{"input": qa, "label": []}]})


def test_new_tasks_need_two_examples_and_an_entity_or_an_answer() -> None:
    entities, answers = kind_of("entities"), kind_of("answers")
    assert "at least 2 examples" in (entities.examples_problem([[SPAN]], None) or "")
    assert "no example has an entity" in (entities.examples_problem([[], []], None) or "")
    assert entities.examples_problem([[SPAN], []], None) is None
    assert "none for ['ORG']" in (entities.examples_problem([[SPAN], []], ["PER", "ORG"]) or "")
    assert "every example is 'no answer'" in (answers.examples_problem([None, None], None) or "")
    assert entities.new_task_problem("image", None, "auto") is not None
    # both kinds export their transfer heads (token_head_problem refuses the others: test_span_export.py)
    assert kind_of("answers").export_problem() is None and kind_of("entities").export_problem() is None


def test_examples_per_label_count_examples_per_entity_label_and_answers() -> None:
    entities, answers = kind_of("entities"), kind_of("answers")
    two = entities.encode([SPAN, {"start": 12, "end": 20, "label": "PER"}])
    counts = {two: 3, entities.encode([]): 2, entities.encode([{"start": 0, "end": 4, "label": "LOC"}]): 1}
    assert entities.per_label(counts) == {"LOC": 1, "PER": 3}
    assert entities.names([two]) == ["PER", "PER"]
    assert answers.per_label({"null": 2, answers.encode({"start": 0, "end": 3}): 5}) == {"answer": 5, "no answer": 2}


def test_the_clients_pinnable_heads_are_the_kinds() -> None:
    from adapters.kinds import KINDS
    from graft.schemas import KIND_HEADS

    assert {name: set(kind.pinnable_heads) for name, kind in KINDS.items()} == {
        name: set(heads) for name, heads in KIND_HEADS.items()
    }
    refused = kind_of("entities").new_task_problem("text", None, "pointer")
    assert (
        refused == "head 'pointer' is for answers tasks; a entities task takes head 'auto' or 'tagger' or "
        "'word-tagger' or 'finetune' (or none)"
    )
    with pytest.raises(ValueError, match="head 'pointer' is for answers tasks"):
        TaskCreate.model_validate(
            {"name": "n", "kind": "entities", "head": "pointer", "examples": [{"input": "x", "label": []}]}
        )
