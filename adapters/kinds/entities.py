"""Entities (named-entity recognition): a text per example, labelled with its entity spans
``[{"start", "end", "label"}]`` (character offsets, end exclusive, no overlaps); a BIO token tagger on the
text backbone's per-token states against a word-feature baseline (adapters/spans/); a prediction is the
entities found, with their text and score."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..span_decode import FILE as SPAN_DECODE_FILE
from ..spans import Encoded, Span, SpanError, check_spans, fit_entities
from ..spans.codec import tag_names
from ..spans.finetune import fit_finetune_tagger
from ..training import FitResult
from .base import STRUCTURED_LABEL_CHARS, register_kind, shape, string_problem
from .tokens import AUTO, Finetuning, TokenKind, compact, exact_int

SPAN_KEYS = ("start", "end", "label")


@dataclass(frozen=True)
class Entity:
    start: int
    end: int
    label: str
    text: str
    score: float

    def as_json(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "label": self.label, "text": self.text, "score": self.score}


@dataclass(frozen=True)
class EntitiesPrediction:
    entities: list[Entity]

    def as_json(self) -> dict[str, Any]:
        return {"entities": [e.as_json() for e in self.entities]}


def spans_of(label: Sequence[dict[str, Any]]) -> list[Span]:
    return sorted(Span(int(s["start"]), int(s["end"]), str(s["label"])) for s in label)


def span_problem(i: int, item: Any) -> str | None:
    """Why the ``i``-th item of an entities label is not a span ``{start, end, label}``."""
    if not isinstance(item, dict):
        return f"label[{i}] must be an object {{start, end, label}}, got {shape(item)}"
    keys = set(item)
    if keys != set(SPAN_KEYS):
        missing, extra = sorted(set(SPAN_KEYS) - keys), sorted(keys - set(SPAN_KEYS))
        return (
            f"label[{i}] must have exactly start, end and label"
            + (f"; missing {missing}" if missing else "")
            + (f"; unknown {extra}" if extra else "")
        )
    start, end = item["start"], item["end"]
    if not exact_int(start) or not exact_int(end):
        return f"label[{i}]: start and end are integer character offsets, got {start!r} and {end!r}"
    if not 0 <= start < end:
        return f"label[{i}]: need 0 <= start < end (end exclusive), got start {start}, end {end}"
    problem = string_problem(item["label"])
    return f"label[{i}]: {problem}" if problem else None


@register_kind
class Entities(TokenKind):
    name = "entities"
    pinnable_heads = ("tagger", "word-tagger", "finetune")
    structured_uploads = True  # JSON Lines rows with a structured label (dataset uploads)

    def problem(self, label: Any) -> str | None:
        if not isinstance(label, list):
            return f"an entities task takes a list of spans [{{start, end, label}}], got {shape(label)}"
        problem = next(filter(None, (span_problem(i, item) for i, item in enumerate(label))), None)
        if problem:
            return problem
        ordered = spans_of(label)
        for left, right in zip(ordered, ordered[1:], strict=False):
            if right.start < left.end:
                return f"spans {left.describe()} and {right.describe()} overlap; entities may not overlap"
        stored = self.encode(label)
        if len(stored) > STRUCTURED_LABEL_CHARS:
            return (
                f"the spans take {len(stored)} characters as stored ([[start,end,label],...]); the limit is "
                f"{STRUCTURED_LABEL_CHARS}: split the text into shorter examples"
            )
        return None

    def example_problem(self, value: Any, label: Any) -> str | None:
        try:
            check_spans(value, spans_of(label))
        except SpanError as exc:
            return str(exc)
        return None

    def encode(self, label: Any) -> str:
        return compact([[s.start, s.end, s.label] for s in spans_of(label)])  # [[0,11,"PER"],[19,26,"ORG"]]

    def decode(self, stored: str) -> Any:
        return [dict(zip(SPAN_KEYS, item, strict=True)) for item in json.loads(stored)]

    def names(self, stored: Sequence[str]) -> list[str]:
        return [span["label"] for one in stored for span in self.decode(one)]

    def per_label(self, counts: dict[str, int]) -> dict[str, int]:
        out: Counter[str] = Counter()  # examples holding each label (once per example)
        for stored, n in counts.items():
            for label in {span["label"] for span in self.decode(stored)}:
                out[label] += n
        return dict(sorted(out.items()))

    def examples_problem(self, labels: Sequence[Any], declared: Sequence[str] | None) -> str | None:
        present = {span["label"] for label in labels for span in label}
        if len(labels) < 2:
            return f"an entities task needs at least 2 examples to cross-validate; got {len(labels)}"
        if not present:
            return "no example has an entity: label at least one span"
        if declared is not None:
            unknown, missing = sorted(present - set(declared)), sorted(set(declared) - present)
            if unknown:
                return f"examples use entity labels not in 'labels': {unknown[:10]}"
            if missing:
                return f"every declared label needs at least one span; none for {missing[:10]}"
        return None

    def token_inputs(self, inputs: Sequence[Any]) -> tuple[list[str], list[str] | None]:
        return list(inputs), None

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
        spans = [spans_of(label) for label in labels]
        names = sorted({s.label for row in spans for s in row})
        if head == "finetune":
            if finetuning is None:
                raise ValueError("head 'finetune' needs the backbone's torch model (Finetuning)")
            return self._fit_finetune(encoded, list(inputs), spans, names, finetuning, seed)
        pinned = None if head == AUTO else head
        fit = fit_entities(list(inputs), spans, names, encoded, folds=folds, seed=seed, pinned=pinned)
        served = fit.metrics[fit.chosen]
        keys = ("precision", "recall", "f1", "support", "f1_seen", "cv_seconds")
        metrics: dict[str, Any] = {
            "kind": self.name,
            "head": fit.chosen,
            "selection": "auto" if head == AUTO else "pinned",
            "evaluation": "cv",
            "folds": max(2, min(folds, len(inputs))),
            # which folds (grouped / names-held-out / examples) and which mentions the F1s score
            "cv": fit.cv,
            "precision": served["precision"],
            "recall": served["recall"],
            "f1": served["f1"],
            "support": served["support"],
            "per_label": served["per_label"],
            "heads": {k: {m: v[m] for m in keys if m in v} for k, v in fit.metrics.items()},
            "baseline": {"head": "word-tagger", "f1": fit.metrics["word-tagger"]["f1"]},
            "examples_per_label": dict(sorted(Counter(s.label for row in spans for s in row).items())),
            "warnings": list(fit.warnings),
        }
        outcomes = np.array([self._key(found) for found in fit.oof], dtype=object)
        return FitResult(fit.head, metrics, oof_pred=outcomes)

    def _fit_finetune(
        self,
        encoded: Sequence[Encoded],
        texts: list[str],
        spans: list[list[Span]],
        names: list[str],
        finetuning: Finetuning,
        seed: int,
    ) -> FitResult:
        """LoRA on the backbone's top layers as a BIO tagger (adapters/spans/finetune.py), compared with the
        frozen tagger and the word baseline on the same held-out examples; no out-of-fold answers."""
        fit = fit_finetune_tagger(
            finetuning.source,
            texts,
            spans,
            names,
            encoded,
            finetuning.cfg,
            max_seconds=finetuning.max_seconds,
            seed=seed,
            progress=finetuning.progress,
            between_steps=finetuning.between_steps,
        )
        held = fit.metrics["held_out"]
        metrics: dict[str, Any] = {
            "kind": self.name,
            "head": "finetune",
            "selection": "pinned",
            "evaluation": fit.metrics["evaluation"],
            "precision": held.get("precision"),
            "recall": held.get("recall"),
            "f1": held.get("f1"),
            "support": held.get("support", 0),
            "per_label": held.get("per_label", {}),
            "heads": fit.metrics["heads"],
            "baseline": {"head": "word-tagger", "f1": fit.metrics["heads"].get("word-tagger", {}).get("f1")},
            "finetune": fit.metrics["finetune"],
            "examples_per_label": dict(sorted(Counter(s.label for row in spans for s in row).items())),
            "warnings": list(fit.warnings),
        }
        head: Any = fit.head  # a span head, stored with the span codec (to_bytes)
        return FitResult(head, metrics, oof_pred=None)

    def predict_tokens(self, head: Any, inputs: Sequence[Any], encoded: Sequence[Encoded] | None) -> list[Any]:
        texts = list(inputs)
        found = head.predict(texts, encoded)
        return [
            EntitiesPrediction([Entity(s.start, s.end, s.label, s.text(text), score) for s, score in row])
            for text, row in zip(texts, found, strict=True)
        ]

    def export_problem(self) -> str | None:
        return None  # 'tagger' (token_graph) and 'word-tagger' (word_graph) in adapters/export.py; 'finetune' refused

    def manifest(self, head: Any) -> dict[str, Any]:
        """How a consumer turns the graph's per-token logit parts into Graft's answer (docs/spans.md#export):
        the shipped ``span_decode.py`` merges the windows, sums the parts and runs the BIO Viterbi pass."""
        if head.kind == "word-tagger":  # the word baseline: per-word logits of the words' features
            return {
                "decode": {
                    "file": SPAN_DECODE_FILE,
                    "function": "predict_entities",
                    "features": "words",
                    "labels": list(head.labels),
                    "tags": tag_names(head.labels),
                    "scheme": "BIO over the text's words (span_decode.words); Viterbi over valid BIO sequences; an "
                    "entity's score is the geometric mean of its words' chosen-tag probabilities",
                    "logits": "the graph's tag_logits (words, tags) of span_decode.word_feeds(span_decode.word_rows"
                    "(text)); no tokenizer, no windows",
                }
            }
        return {
            "decode": {
                "file": SPAN_DECODE_FILE,
                "function": "predict_entities",
                "labels": list(head.labels),
                "tags": tag_names(head.labels),
                "scheme": "BIO (conlleval: an I after O or another label starts an entity); Viterbi over valid "
                "BIO sequences; an entity's score is the geometric mean of its tokens' chosen-tag probabilities",
                "logits": "logits[t] = parts[t, 0] + parts[t - 1, 1] + parts[t + 1, 2] over the text's tokens "
                "after the windows are merged (max context); absent neighbours add nothing",
            }
        }

    @staticmethod
    def _key(spans: Sequence[Span]) -> str:
        return compact(sorted([s.start, s.end, s.label] for s in spans))

    def outcome(self, prediction: Any, label: Any, value: Any) -> str:
        if prediction is not None:
            return self._key([Span(e.start, e.end, e.label) for e in prediction.entities])
        return self._key(spans_of(label))
