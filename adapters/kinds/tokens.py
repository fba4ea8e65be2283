"""What the token-level text kinds (entities, answers) share: they read the text backbone's per-token states
(``TaskKind.reads_token_states``) instead of pooled embeddings, store their heads with the span heads'
codec (adapters/spans/heads.py) and answer with per-input objects built while the head runs.

The contract with the service: when a kind ``reads_token_states``, the training pipeline asks the
backbone for ``token_states(texts, questions)`` of :meth:`TokenKind.token_inputs` and calls
:meth:`TokenKind.fit_tokens`; predict runs the states through :meth:`TokenKind.predict_tokens`
(in the batcher's token lane when the head reads states, :meth:`TokenKind.reads_states`).
"""

from __future__ import annotations

import json
from abc import abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..heads import Head, read_metadata
from ..heads import from_bytes as heads_from_bytes
from ..heads.finetune import FinetuneConfig
from ..selection import Decision, compare_on_unseen
from ..spans import SPAN_HEADS, Encoded
from ..spans import from_bytes as span_from_bytes
from ..spans import to_bytes as span_to_bytes
from ..training import FitResult
from .base import TaskKind

AUTO_ONLY: tuple[str, ...] = ()
AUTO = "auto"


@dataclass(frozen=True)
class Finetuning:
    """What a token kind's ``head: "finetune"`` needs beyond the token states: the text backbone's torch
    model and tokenizer (``source``: ``model``, ``tokenizer``, ``max_length``), the recipe, the seconds its
    epochs may take, and the job's progress and step hooks."""

    source: Any
    cfg: FinetuneConfig
    max_seconds: float | None = None
    progress: Callable[[float], None] | None = None
    between_steps: Callable[[], None] | None = None


def exact_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class TokenKind(TaskKind):
    """A text kind whose head reads per-token states (see the module docstring)."""

    modalities: ClassVar[tuple[str, ...]] = ("text",)
    # the transfer head and the word-feature baseline; "auto": whichever cross-validates better
    pinnable_heads = AUTO_ONLY
    reads_token_states: ClassVar[bool] = True
    pairs: ClassVar[bool] = False  # each input is a question + a text, windowed as a pair (answers)
    scores_ood: ClassVar[bool] = False  # per-token states, no pooled embedding to measure (adapters/ood.py)

    # -- inputs -------------------------------------------------------------------------------

    @abstractmethod
    def token_inputs(self, inputs: Sequence[Any]) -> tuple[list[str], list[str] | None]:
        """Decoded inputs as the backbone's ``token_states`` takes them: the texts whose tokens are labelled
        (an answer's context) and, for question-answering, the questions (None otherwise)."""

    def decode_inputs(self, stored: Sequence[str]) -> list[Any]:
        return [self.decode_input(one) for one in stored]

    # -- fitting --------------------------------------------------------------------------------

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
        raise TypeError(f"a {self.name} task is fitted on token states: call fit_tokens")

    @abstractmethod
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
        """Cross-validate the kind's heads on the token states ``encoded`` of the decoded ``inputs`` against
        the no-transfer baseline and refit the better one (``head`` ``auto``) or the pinned one; out-of-fold
        answers (as :meth:`outcome` strings) in ``FitResult.oof_pred`` for the promotion comparison. ``head``
        ``finetune`` (kinds that pin it) trains with ``finetuning`` instead, compared on a held-out part (no
        out-of-fold answers)."""

    # -- predicting ---------------------------------------------------------------------------

    def reads_states(self, head: Any) -> bool:
        """Whether ``head`` reads the encoder's token states (else only the raw text: no backbone pass)."""
        return bool(getattr(head, "transfer", False))

    @abstractmethod
    def predict_tokens(self, head: Any, inputs: Sequence[Any], encoded: Sequence[Encoded] | None) -> list[Any]:
        """One prediction object (with ``as_json()``) per decoded input."""

    def format(self, head: Head, output: Any, top_k: int | None) -> list[Any]:
        return list(output)  # predict_tokens already built the answers

    # -- storing and promotion -----------------------------------------------------------------

    def to_bytes(self, head: Any, **provenance: Any) -> bytes:
        return span_to_bytes(head, **provenance)

    def export_problem(self) -> str | None:
        return (
            f"a {self.name} task's head decodes spans outside a tensor graph: there is no ONNX export of it yet; "
            "predict through POST /v1/tasks/{name}/predict"
        )

    @abstractmethod
    def outcome(self, prediction: Any, label: Any, value: Any) -> str:
        """A canonical string of a prediction (``prediction``) or a decoded label (``label``) for the input
        ``value``: two are equal when the prediction is exactly right."""

    def comparable(self, result: FitResult) -> bool:
        return result.oof_pred is not None

    def compare(
        self,
        active: Head,
        vectors: Any,
        raw: Sequence[str],
        truth: Sequence[str],
        result: FitResult,
        unseen: np.ndarray,
        active_number: int,
    ) -> Decision:
        inputs = self.decode_inputs(raw)
        found = self.predict_tokens(active, inputs, vectors if self.reads_states(active) else None)
        active_pred = [self.outcome(p, None, v) for p, v in zip(found, inputs, strict=True)]
        gold = [self.outcome(None, self.decode(t), v) for t, v in zip(truth, inputs, strict=True)]
        assert result.oof_pred is not None  # comparable()
        return compare_on_unseen(gold, [str(p) for p in result.oof_pred[unseen]], active_pred, active_number)


def compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def head_from_bytes(blob: bytes) -> Any:
    """Any version's head from its blob: a span head (their own registry, adapters/spans/heads.py) or one of
    the pooled-embedding heads (adapters/heads/), by the head kind the blob's metadata names."""
    meta = read_metadata(blob)
    if meta.get("kind") not in SPAN_HEADS:
        return heads_from_bytes(blob)
    head = span_from_bytes(blob)
    head.backbone = (meta.get("provenance") or {}).get("backbone")  # what it was trained on
    return head
