"""Answers (extractive question answering): an input ``{"question", "context"}`` per example, labelled with
the answer's character offsets into the context ``{"start", "end"}``, or ``null`` when the context does not
answer the question; a start/end pointer on the text backbone's token states of question + context against
a word-feature baseline (adapters/spans/); a prediction is the answer's text and offsets, or ``null`` when
the best span scores under the "no answer" threshold tuned by cross-validation."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..span_decode import FILE as SPAN_DECODE_FILE
from ..spans import Encoded, fit_answers
from ..spans.heads import MAX_ANSWER_TOKENS
from ..spans.metrics import normalize_answer
from ..training import FitResult
from .base import register_kind, shape, unstorable
from .tokens import AUTO, Finetuning, TokenKind, compact, exact_int

INPUT_KEYS = ("question", "context")
NO_ANSWER = "\x00no answer"  # an outcome no answer text normalises to


@dataclass(frozen=True)
class AnswerPrediction:
    answer: str | None
    start: int | None
    end: int | None
    score: float

    def as_json(self) -> dict[str, Any]:
        return {"answer": self.answer, "start": self.start, "end": self.end, "score": self.score}


def input_problem(value: Any) -> str | None:
    """Why an answers input is not ``{"question": text, "context": text}`` (None when it is)."""
    if not isinstance(value, dict):
        return f'an answers task takes {{"question": text, "context": text}} per input, got {shape(value)}'
    if set(value) != set(INPUT_KEYS):
        return f"an answers input has exactly the keys question and context, got {sorted(value)}"
    for key in INPUT_KEYS:
        text = value[key]
        if not isinstance(text, str) or not text.strip():
            return f"{key} must be a non-empty string, got {shape(text)}"
        problem = unstorable(text)
        if problem:
            return f"{key} {problem}"
    return None


@register_kind
class Answers(TokenKind):
    name = "answers"
    pinnable_heads = ("pointer", "word-pointer")
    declares_labels = False
    takes_objects = True
    structured_uploads = True  # JSON Lines rows with a structured label (dataset uploads)
    pairs = True

    def input_problem(self, value: Any) -> str | None:
        return input_problem(value)

    def input_chars(self, value: Any) -> int:
        return len(value["question"]) + len(value["context"])

    def encode_input(self, value: Any) -> Any:
        return compact({"question": value["question"], "context": value["context"]})

    def decode_input(self, stored: str) -> Any:
        return json.loads(stored)

    def problem(self, label: Any) -> str | None:
        if label is None:
            return None  # the context does not answer the question
        if not isinstance(label, dict):
            return f"an answers task takes {{start, end}} (offsets into the context) or null, got {shape(label)}"
        if set(label) != {"start", "end"}:
            return f"an answer label has exactly the keys start and end, got {sorted(label)}"
        start, end = label["start"], label["end"]
        if not exact_int(start) or not exact_int(end):
            return f"start and end are integer character offsets into the context, got {start!r} and {end!r}"
        if not 0 <= start < end:
            return f"need 0 <= start < end (end exclusive), got start {start}, end {end}"
        return None

    def example_problem(self, value: Any, label: Any) -> str | None:
        if label is None:
            return None
        context = value["context"]
        if label["end"] > len(context):
            return f"the answer {label['start']}-{label['end']} ends past the context's {len(context)} characters"
        if not context[label["start"] : label["end"]].strip():
            return f"the answer {label['start']}-{label['end']} covers only whitespace in the context"
        return None

    def encode(self, label: Any) -> str:
        return "null" if label is None else compact([label["start"], label["end"]])

    def decode(self, stored: str) -> Any:
        value = json.loads(stored)
        return None if value is None else {"start": value[0], "end": value[1]}

    def names(self, stored: Sequence[str]) -> list[str]:
        return []  # answers are offsets, not label names

    def per_label(self, counts: dict[str, int]) -> dict[str, int]:
        out = {"answer": 0, "no answer": 0}
        for stored, n in counts.items():
            out["no answer" if stored == "null" else "answer"] += n
        return {k: v for k, v in out.items() if v}

    def examples_problem(self, labels: Sequence[Any], declared: Sequence[str] | None) -> str | None:
        if len(labels) < 2:
            return f"an answers task needs at least 2 examples to cross-validate; got {len(labels)}"
        if all(label is None for label in labels):
            return "every example is 'no answer' (null): label at least one answer {start, end}"
        return None

    def token_inputs(self, inputs: Sequence[Any]) -> tuple[list[str], list[str] | None]:
        return [v["context"] for v in inputs], [v["question"] for v in inputs]

    def fit_tokens(
        self,
        encoded: Sequence[Encoded],
        inputs: Sequence[Any],
        labels: Sequence[Any],
        *,
        head: str,
        folds: int,
        seed: int,
        finetuning: Finetuning | None = None,
    ) -> FitResult:
        contexts, questions = self.token_inputs(inputs)
        assert questions is not None
        answers = [None if a is None else (a["start"], a["end"]) for a in labels]
        pinned = None if head == AUTO else head
        fit = fit_answers(questions, contexts, answers, encoded, folds=folds, seed=seed, pinned=pinned)
        served = fit.metrics[fit.chosen]
        keys = ("exact_match", "f1", "threshold", "cv_seconds")
        metrics: dict[str, Any] = {
            "kind": self.name,
            "head": fit.chosen,
            "selection": "auto" if head == AUTO else "pinned",
            "evaluation": "cv",
            "folds": max(2, min(folds, len(inputs))),
            "exact_match": served["exact_match"],
            "f1": served["f1"],
            "threshold": served["threshold"],
            "answerable": served["answerable"],
            "unanswerable": served["unanswerable"],
            "heads": {k: {m: v[m] for m in keys} for k, v in fit.metrics.items()},
            "baseline": {"head": "word-pointer", **{m: fit.metrics["word-pointer"][m] for m in ("exact_match", "f1")}},
            "examples_per_label": {"answer": served["answerable"], "no answer": served["unanswerable"]},
            "warnings": list(fit.warnings),
        }
        outcomes = np.array([self._key(text) for text in fit.oof], dtype=object)
        return FitResult(fit.head, metrics, oof_pred=outcomes)

    def predict_tokens(self, head: Any, inputs: Sequence[Any], encoded: Sequence[Encoded] | None) -> list[Any]:
        contexts, questions = self.token_inputs(inputs)
        out = []
        for answer, context in zip(head.predict(questions, contexts, encoded), contexts, strict=True):
            out.append(AnswerPrediction(answer.text(context), answer.start, answer.end, answer.score))
        return out

    @staticmethod
    def _key(text: str | None) -> str:
        return NO_ANSWER if text is None else normalize_answer(text)

    def export_problem(self) -> str | None:
        return None  # 'pointer' (token_graph) and 'word-pointer' (word_graph) in adapters/export.py

    def manifest(self, head: Any) -> dict[str, Any]:
        """How a consumer turns the graph's start/end log-probabilities into Graft's answer (docs/spans.md#export)."""
        rule = (
            "the (start, end) token pair, start <= end < start + max_answer_tokens, of highest start + end "
            "log-probability; its probability is the score; under `threshold` the answer is null"
        )
        if head.kind == "word-pointer":  # the word baseline: per-word log-probabilities of the words' features
            return {
                "decode": {
                    "file": SPAN_DECODE_FILE,
                    "function": "predict_answer",
                    "features": "words",
                    "inputs": "feature_names, feature_values: span_decode.word_feeds(span_decode.word_rows({question, "
                    "context})); no tokenizer, no windows; one question + context per call",
                    "threshold": float(head.threshold),
                    "max_answer_tokens": MAX_ANSWER_TOKENS,
                    "rule": rule.replace("token pair", "word pair"),
                }
            }
        return {
            "decode": {
                "file": SPAN_DECODE_FILE,
                "function": "predict_answer",
                "inputs": "besides the encoder's: token_window, token_position (each context token's max-context "
                "window and position there), query_positions (the question's positions in a window), exact_match "
                "(span_decode.exact_match); one question + context per call",
                "threshold": float(head.threshold),
                "max_answer_tokens": MAX_ANSWER_TOKENS,
                "rule": rule,
            }
        }

    def outcome(self, prediction: Any, label: Any, value: Any) -> str:
        if prediction is not None:
            return self._key(prediction.answer)
        return self._key(None if label is None else value["context"][label["start"] : label["end"]])
