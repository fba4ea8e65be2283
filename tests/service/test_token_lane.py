"""The token lane (service/batching.py ``TokenBatcher``): per-token states of texts and question +
context pairs from several tenants in shared passes, each request's head step on its own rows, results
equal to running the backbone and the head directly; a broken head fails only its own request."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from adapters.kinds import kind_of
from adapters.kinds.entities import spans_of
from adapters.spans.heads import TokenTagger
from benchmarks.spansets import answer_rows, entity_rows
from service.batching import TokenBatcher, TokenInput


@pytest.fixture(scope="module")
def lane(minilm):
    batcher = TokenBatcher(minilm, 16, 0.002, 4096)
    yield batcher
    batcher.close()


def test_tenants_share_token_passes_and_get_what_the_head_answers_alone(lane, minilm) -> None:
    entities = kind_of("entities")
    train = entity_rows(30, half=0, seed=1)
    texts = [row["input"] for row in train]
    spans = [spans_of(row["label"]) for row in train]
    head = TokenTagger(["LOC", "ORG", "PER"]).fit(texts, spans, minilm.token_states(texts))
    test = [row["input"] for row in entity_rows(12, half=1, seed=2)]
    test[0] = test[0] + " and more words." * 100  # longer than the backbone's window: strided windows
    expected = entities.predict_tokens(head, test, minilm.token_states(test))

    def apply(part: Any, encoded: Any) -> list[Any]:
        return entities.predict_tokens(head, [item.value for item in part], encoded)

    def broken(part: Any, encoded: Any) -> list[Any]:
        raise RuntimeError("this head is broken")

    qa = answer_rows(4, half=1, seed=3)
    pairs = [TokenInput(r["input"]["context"], r["input"]["question"], r["input"]) for r in qa]

    async def run() -> list[Any]:
        items = [TokenInput(text, None, text) for text in test]
        return await asyncio.gather(
            lane.run(items[:6], apply, "tenant-a"),
            lane.run(items[6:], apply, "tenant-b"),
            lane.run(items[:2], broken, "tenant-c"),
            asyncio.wrap_future(lane.submit_tokens(pairs, tenant="tenant-d")),
            return_exceptions=True,
        )

    first, second, failed, states = asyncio.run(run())
    assert [p.as_json() for p in first + second] == [p.as_json() for p in expected]
    assert any(p.entities for p in first + second)
    for p, text in zip(first + second, test, strict=True):
        assert all(text[e.start : e.end] == e.text for e in p.entities)
    assert isinstance(failed, RuntimeError)
    direct = minilm.token_states([p.text for p in pairs], [p.question for p in pairs])
    for got, want in zip(states, direct, strict=True):
        assert got.states.shape == want.states.shape and got.query is not None
        assert abs(got.states - want.states).max() < 1e-4  # the same states, batched with other tenants' texts


def test_the_router_runs_token_kinds_through_the_lane_or_without_the_backbone(lane, minilm) -> None:
    from adapters.spans.heads import WordTagger
    from service.router import Router, TaskRef

    train = entity_rows(30, half=0, seed=5)
    texts, spans = [r["input"] for r in train], [spans_of(r["label"]) for r in train]
    tagger = TokenTagger(["LOC", "ORG", "PER"]).fit(texts, spans, minilm.token_states(texts))
    words = WordTagger(["LOC", "ORG", "PER"]).fit(texts, spans)
    used: list[str] = []

    def token_batchers(name: str) -> TokenBatcher:
        used.append(name)
        return lane

    router = Router(None, lambda _: None, None, token_batchers=token_batchers)  # type: ignore[arg-type]
    ref = TaskRef("t1", "tenant", "ner", "text", "minilm", "auto", 1, kind="entities")
    test = [r["input"] for r in entity_rows(5, half=1, seed=6)]
    entities = kind_of("entities")
    for head, lane_used in ((tagger, ["minilm"]), (words, [])):
        used.clear()
        got = asyncio.run(router.run(ref, head, test, test))
        want = entities.predict_tokens(head, test, minilm.token_states(test) if head is tagger else None)
        assert [p.prediction.as_json() for p in got] == [p.as_json() for p in want] and used == lane_used


def test_fine_tuned_taggers_share_the_lower_layers_in_a_lane_pass(lane, minilm) -> None:
    """Two tenants' fine-tuned entities heads (different split points) and a frozen tagger in one lane: each
    answer is what its head answers alone; the fine-tuned rows take no last-layer states."""
    from dataclasses import replace

    from adapters.spans.finetune import TAGGER_RECIPE, Tagged, fit_finetune_tagger, tag_shared
    from service.batching import OwnLayers

    entities = kind_of("entities")
    train = entity_rows(12, half=0, seed=5)
    texts, spans = [r["input"] for r in train], [spans_of(r["label"]) for r in train]
    labels = ["LOC", "ORG", "PER"]
    one = fit_finetune_tagger(minilm, texts, spans, labels, None, replace(TAGGER_RECIPE, max_epochs=1), seed=1).head
    two = fit_finetune_tagger(minilm, texts, spans, labels, None, replace(TAGGER_RECIPE, layers=2, max_epochs=1),
                              seed=2).head
    assert (one.split, two.split) == (5, 4)
    tagger = TokenTagger(labels).fit(texts, spans, minilm.token_states(texts))
    test = [row["input"] for row in entity_rows(8, half=1, seed=6)]
    test[0] = test[0] + " and more words." * 100  # longer than one window
    alone = {id(h): entities.predict_tokens(h, test, None) for h in (one, two)}
    # the shared pass gives each row what its head gives alone
    mixed = tag_shared(minilm, test + test, [one] * len(test) + [two] * len(test))
    for head, rows in ((one, mixed[: len(test)]), (two, mixed[len(test) :])):
        own, _ = head.log_probs(test)
        assert all(isinstance(t, Tagged) and abs(t.log_probs - o).max() < 1e-4 for t, o in zip(rows, own, strict=True))

    def step(head: Any) -> Any:
        return lambda part, found: entities.predict_tokens(head, [item.value for item in part], found)

    async def run() -> list[Any]:
        items = [TokenInput(text, None, text) for text in test]
        return await asyncio.gather(
            lane.run(items, OwnLayers(one, step(one)), "tenant-a"),
            lane.run(items, OwnLayers(two, step(two)), "tenant-b"),
            lane.run(items, step(tagger), "tenant-c"),
        )

    first, second, frozen = asyncio.run(run())

    def same(got: list[Any], want: list[Any]) -> bool:  # spans exact, scores to float noise (other padding)
        pairs = [(a, b) for g, w in zip(got, want, strict=True) for a, b in zip(g.entities, w.entities, strict=True)]
        spans_of_ = [[(e.start, e.end, e.label) for e in p.entities] for p in (*got, *want)]
        return spans_of_[: len(got)] == spans_of_[len(got) :] and all(abs(a.score - b.score) < 1e-4 for a, b in pairs)

    assert same(first, alone[id(one)]) and same(second, alone[id(two)])
    assert same(frozen, entities.predict_tokens(tagger, test, minilm.token_states(test)))
    assert any(p.entities for p in first)
