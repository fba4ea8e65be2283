"""The span heads' ONNX graphs on bare ONNX Runtime + ``tokenizers`` + the shipped ``span_decode.py``: an
entities tagger (the encoder + the head's per-token logit parts, adapters/export.py ``token_graph``), an
answers pointer, and the word baselines of both (``word_graph``: no encoder, the word features computed by
the shipped decoder): the same entities and answers as the served heads, on short, non-ASCII, empty and
longer-than-the-window texts."""

from __future__ import annotations

import importlib.util
import json
import sys
from types import SimpleNamespace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from tokenizers import Tokenizer

from adapters.export import (
    FEATURE_NAMES,
    FEATURE_VALUES,
    SPAN_LOG_PROBS,
    TAG_LOGIT_PARTS,
    TAG_LOGITS,
    ExportError,
    span_decode_source,
    token_graph,
    token_head_problem,
    word_graph,
)
from adapters.kinds import KINDS
from adapters.spans import Span
from adapters.spans.heads import SpanPointer, TokenTagger, WordPointer, WordTagger
from benchmarks.spansets import answer_rows, entity_rows

LABELS = ["PER", "ORG", "LOC"]
ENTITIES = KINDS["entities"]


def spans_of(row: dict) -> list[Span]:
    return [Span(s["start"], s["end"], s["label"]) for s in row["label"]]


@pytest.fixture(scope="module")
def decoder(tmp_path_factory):  # type: ignore[no-untyped-def]
    """The shipped decoder, loaded from its bytes as a consumer would (no Graft import)."""
    path = tmp_path_factory.mktemp("zip") / "span_decode.py"
    path.write_bytes(span_decode_source())
    spec = importlib.util.spec_from_file_location("shipped_span_decode", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_tagger_graph_and_shipped_decoder_give_the_served_entities(minilm, decoder) -> None:  # type: ignore[no-untyped-def]
    train = entity_rows(60, 0, seed=1)
    texts, gold = [r["input"] for r in train], [spans_of(r) for r in train]
    head = TokenTagger(LABELS).fit(texts, gold, minilm.token_states(texts))
    model = token_graph(head, minilm.export_spec())
    onnx.checker.check_model(model)
    assert [o.name for o in model.graph.output] == [TAG_LOGIT_PARTS]
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    tokenizer = Tokenizer.from_str(minilm.preprocessing_files()["tokenizer.json"].decode())
    manifest = json.loads(
        json.dumps(
            {  # what the service writes (service/application/exports.py)
                "model": {"inputs": [i.name for i in model.graph.input], "output": TAG_LOGIT_PARTS},
                "preprocessing": {"windows": minilm.token_windows()},
            }
            | ENTITIES.manifest(head)
        )
    )
    test = [r["input"] for r in entity_rows(8, 1, seed=2)]
    long_text = " \n".join(r["input"] for r in entity_rows(40, 1, seed=3))  # several windows, stride between
    tests = [*test, long_text, "Łukasz Nowak-Kowalski 🎉 met 李小龍 at Médecins Sans Frontières in Kraków.", ""]
    assert len(minilm.tokenizer(long_text, add_special_tokens=False)["input_ids"]) > 2 * minilm.max_length
    served = [p.as_json() for p in ENTITIES.predict_tokens(head, tests, minilm.token_states(tests))]
    assert sum(len(s["entities"]) for s in served) > 10
    for text, want in zip(tests, served, strict=True):
        got = decoder.predict_entities(session, tokenizer, text, manifest)
        strip = [{k: v for k, v in e.items() if k != "score"} for e in want["entities"]]
        assert [{k: v for k, v in e.items() if k != "score"} for e in got["entities"]] == strip, text[:60]
        scores = [e["score"] for e in got["entities"]]
        assert np.allclose(scores, [e["score"] for e in want["entities"]], atol=1e-4, rtol=0)


def test_heads_without_an_onnx_form_are_refused_naming_the_head(minilm) -> None:  # type: ignore[no-untyped-def]
    assert "'finetune'" in (token_head_problem(SimpleNamespace(kind="finetune-tagger")) or "")
    rows = entity_rows(20, 0, seed=1)
    baseline = WordTagger(LABELS).fit([r["input"] for r in rows], [spans_of(r) for r in rows])
    assert token_head_problem(baseline) is None  # exported by word_graph, with no encoder
    with pytest.raises(ExportError, match="'word-tagger' head reads no encoder"):
        token_graph(baseline, minilm.export_spec())
    with pytest.raises(ExportError, match="not word baselines"):
        word_graph(TokenTagger(LABELS))


def bare_session(model: onnx.ModelProto) -> ort.InferenceSession:
    onnx.checker.check_model(model)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def test_word_tagger_graph_and_shipped_decoder_give_the_served_entities(decoder) -> None:  # type: ignore[no-untyped-def]
    train = entity_rows(60, 0, seed=1)
    head = WordTagger(LABELS).fit([r["input"] for r in train], [spans_of(r) for r in train])
    model = word_graph(head)
    assert [o.name for o in model.graph.output] == [TAG_LOGITS]
    assert [i.name for i in model.graph.input] == [FEATURE_NAMES, FEATURE_VALUES]
    session = bare_session(model)
    manifest = json.loads(json.dumps({"model": {"output": TAG_LOGITS}} | ENTITIES.manifest(head)))
    assert manifest["decode"]["features"] == "words"
    test = [r["input"] for r in entity_rows(12, 1, seed=2)]  # names never seen in training
    long_text = " \n".join(r["input"] for r in entity_rows(60, 1, seed=3))  # no window: every word in one call
    tests = [
        *test, long_text, "",
        "Łukasz Nowak-Kowalski 🎉 met 李小龍 at Médecins Sans Frontières in Kraków.",
        "ÉMILE ZOLA and Ǆemal Ⅻ visited İstanbul, ΣΊΣΥΦΟΣ in Αθήνα; the ﬁrm Straße GmbH paid 1½ ¥.",
        "no capital letters here at all, just words.",  # likely no entity at all
        "Zoë\u0301 e\u0301 Anna\t\n\r  Berg  ",  # combining marks, control whitespace
    ]
    served = [p.as_json() for p in ENTITIES.predict_tokens(head, tests, None)]
    assert sum(len(s["entities"]) for s in served) > 10 and any(not s["entities"] for s in served)
    for text, want in zip(tests, served, strict=True):
        got = decoder.predict_entities(session, None, text, manifest)
        strip = [{k: v for k, v in e.items() if k != "score"} for e in want["entities"]]
        assert [{k: v for k, v in e.items() if k != "score"} for e in got["entities"]] == strip, text[:60]
        scores = [e["score"] for e in got["entities"]]
        assert np.allclose(scores, [e["score"] for e in want["entities"]], atol=1e-4, rtol=0)
        rows, _ = decoder.word_rows(text)
        if rows:  # the graph's logits are the head's sparse product
            (logits,) = session.run([TAG_LOGITS], decoder.word_feeds(rows))
            assert np.allclose(logits, head.model.logits(head.vocab.transform(rows)), atol=1e-4)


def test_word_pointer_graph_and_shipped_decoder_give_the_served_answers(decoder) -> None:  # type: ignore[no-untyped-def]
    answers_kind = KINDS["answers"]
    rows = answer_rows(60, 0, seed=1, unanswerable=0.3)
    head = WordPointer(threshold=0.05).fit(
        [r["input"]["question"] for r in rows],
        [r["input"]["context"] for r in rows],
        [None if r["label"] is None else (r["label"]["start"], r["label"]["end"]) for r in rows],
    )
    model = word_graph(head)
    assert [o.name for o in model.graph.output] == [SPAN_LOG_PROBS]
    session = bare_session(model)
    manifest = json.loads(json.dumps({"model": {"output": SPAN_LOG_PROBS}} | answers_kind.manifest(head)))
    test = [r["input"] for r in answer_rows(12, 1, seed=2, unanswerable=0.3)]
    long_context = " ".join(r["input"]["context"] for r in answer_rows(40, 1, seed=3))
    test += [
        {"question": test[0]["question"], "context": long_context},
        {"question": "Wo wohnt Zoë Müller?", "context": "Zoë Müller wohnt in Kraków 🎉, nicht in 東京."},
        {"question": "", "context": "Maria Lopez works at Siemens."},
        {"question": "Where does Maria live?", "context": ""},
        {"question": "Who?", "context": "🎉 … ‽"},
    ]
    served = [p.as_json() for p in answers_kind.predict_tokens(head, test, None)]
    assert any(s["answer"] is not None for s in served) and any(s["answer"] is None for s in served)
    for value, want in zip(test, served, strict=True):
        got = decoder.predict_answer(session, None, value, manifest)
        assert (got["answer"], got["start"], got["end"]) == (want["answer"], want["start"], want["end"])
        assert abs(got["score"] - want["score"]) <= 1e-4, (got, want)


def test_pointer_graph_and_shipped_decoder_give_the_served_answers(minilm, decoder) -> None:  # type: ignore[no-untyped-def]
    answers_kind = KINDS["answers"]
    rows = answer_rows(50, 0, seed=1, unanswerable=0.3)
    questions = [r["input"]["question"] for r in rows]
    contexts = [r["input"]["context"] for r in rows]
    spans = [None if r["label"] is None else (r["label"]["start"], r["label"]["end"]) for r in rows]
    head = SpanPointer(epochs=60, threshold=0.05).fit(
        questions, contexts, spans, minilm.token_states(contexts, questions)
    )
    model = token_graph(head, minilm.export_spec())
    onnx.checker.check_model(model)
    assert [o.name for o in model.graph.output] == [SPAN_LOG_PROBS]
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    tokenizer = Tokenizer.from_str(minilm.preprocessing_files()["tokenizer.json"].decode())
    manifest = json.loads(
        json.dumps(
            {
                "model": {"inputs": [i.name for i in model.graph.input], "output": SPAN_LOG_PROBS},
                "preprocessing": {"windows": minilm.token_windows(pair=True)},
            }
            | answers_kind.manifest(head)
        )
    )
    test = [r["input"] for r in answer_rows(10, 1, seed=2, unanswerable=0.3)]
    long_context = " ".join(r["input"]["context"] for r in answer_rows(40, 1, seed=3))
    test += [
        {"question": test[0]["question"], "context": long_context},
        {"question": "Wo wohnt Zoë Müller?", "context": "Zoë Müller wohnt in Kraków 🎉, nicht in 東京."},
    ]
    assert len(minilm.tokenizer(long_context, add_special_tokens=False)["input_ids"]) > 2 * minilm.max_length
    encoded = minilm.token_states([t["context"] for t in test], [t["question"] for t in test])
    served = [p.as_json() for p in answers_kind.predict_tokens(head, test, encoded)]
    assert any(s["answer"] is not None for s in served)
    for value, want in zip(test, served, strict=True):
        got = decoder.predict_answer(session, tokenizer, value, manifest)
        assert (got["answer"], got["start"], got["end"]) == (want["answer"], want["start"], want["end"])
        assert abs(got["score"] - want["score"]) <= 1e-4, (got, want)
