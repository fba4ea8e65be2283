"""Generation: an example is a prompt and its completion (a string); training fits a per-tenant LoRA adapter
on one shared causal LM (adapters/generation/, docs/generation.md) instead of a head on embeddings, and the
task answers ``POST /v1/tasks/{name}/generate`` instead of predict.

The kind says what its examples are and how its adapter is fitted (:meth:`Generation.fit_adapter`); the
service's training pipeline and generation engine do the rest (a kind that ``generates`` reads no backbone
embeddings, keeps no head, has no OOD model and no ONNX export: its export is the adapter in peft's format,
``format=peft``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..generation import Example, LoraFit, LoraTrainConfig, LoraWeights, fit_lora
from ..generation.training import adapter_example_losses, heldout_split
from ..heads import Head
from ..selection import Decision, compare_losses_on_heldout, first_version, unconditional
from ..training import FitResult, TrainingDataError
from .base import STRUCTURED_LABEL_CHARS, TaskKind, register_kind, shape, unstorable

COMPLETION_CHARS = STRUCTURED_LABEL_CHARS  # a completion is stored as the example's label


@dataclass(frozen=True)
class ActiveAdapter:
    """The task's active adapter, for a retrain's comparison with it."""

    number: int
    seen: int  # the task's first ``seen`` examples are those it was fitted on (examples are append-only)
    weights: LoraWeights
    heldout: frozenset[int]  # of those, the ones it held out (never trained on)


@register_kind
class Generation(TaskKind):
    name = "generation"
    modalities = ("text",)
    declares_labels = False
    dataset_uploads = True  # CSV / JSON Lines rows carry one string label: the completion
    scores_ood = False
    generates = True
    export_formats = ("peft",)  # the adapter as a PEFT adapter directory (adapters/generation/peft_export.py)

    def problem(self, label: Any) -> str | None:
        if not isinstance(label, str):
            return f"a generation task takes the completion (a string), got {shape(label)}"
        if not label.strip():
            return "a completion must be a non-empty string"
        if len(label) > COMPLETION_CHARS:
            return f"a completion has at most {COMPLETION_CHARS} characters, got {len(label)}"
        problem = unstorable(label)
        return f"a completion {problem}" if problem else None

    def encode(self, label: Any) -> str:
        return str(label)

    def decode(self, stored: str) -> Any:
        return stored

    def names(self, stored: Sequence[str]) -> list[str]:
        return []  # completions are free text, not label names

    def per_label(self, counts: dict[str, int]) -> dict[str, int]:
        return {"completions": sum(counts.values())} if counts else {}

    def examples_problem(self, labels: Sequence[Any], declared: Sequence[str] | None) -> str | None:
        if len(labels) < 2:
            return (
                f"a generation task needs at least 2 examples (one is held out to score the adapter); got {len(labels)}"
            )
        return None

    def new_task_problem(self, modality: str, backbone: str | None, head: str) -> str | None:
        if modality != "text":
            return f"a generation task takes modality 'text', not {modality!r}"
        if head != "auto":
            return f"a generation task trains a LoRA adapter on the server's language model; omit 'head' (got {head!r})"
        if backbone is not None:
            return "a generation task runs on the server's language model (GRAFT_GENERATION_MODEL); omit 'backbone'"
        return None

    # -- fitting ----------------------------------------------------------------------------------------

    def fit_adapter(
        self,
        model: Any,
        tokenizer: Any,
        prompts: Sequence[str],
        completions: Sequence[str],
        config: LoraTrainConfig,
        on_step: Any = None,
    ) -> LoraFit:
        """A LoRA adapter on (prompt, completion) examples, trained in place on ``model`` (a private copy
        the caller loaded for this job) and compared with the base model on held-out examples."""
        examples = [Example(p, c) for p, c in zip(prompts, completions, strict=True)]
        return fit_lora(model, tokenizer, examples, config, copy=False, on_step=on_step)

    def promotion(
        self,
        model: Any,
        tokenizer: Any,
        prompts: Sequence[str],
        completions: Sequence[str],
        fit: LoraFit,
        config: LoraTrainConfig,
        active: ActiveAdapter | None,
    ) -> Decision:
        """Whether the new adapter replaces the active one. Not unless it beats the base model on its held-out
        examples (``fit.promotable``, the negative-transfer guard). With an active adapter: every held-out example
        of the new one that the active one was not trained on either (added since it, or held out by it too:
        :func:`heldout_split` keeps a task's held-out examples nearly the same from version to version) is scored
        with both adapters on ``model`` (the plain base model), and the new one stays a candidate when the active
        one's loss is lower on more of them beyond noise (a sign test, as the other kinds' promotion:
        :func:`compare_losses_on_heldout`); with no such example it is promoted on the base comparison alone, and
        the reason says so."""
        warnings = fit.metrics.get("warnings") or []
        if not fit.promotable:
            return Decision(False, warnings[0] if warnings else "the adapter is not better than the base model")
        if active is None:
            return first_version()
        number = active.number
        held = heldout_split(len(prompts), config)
        new = [i for i in held if i >= active.seen]
        shared = [i for i in held if i < active.seen and i in active.heldout]
        both = sorted([*new, *shared])
        if not both:
            return unconditional(
                f"promoted: better than the base model on held-out examples; none of them is unseen by version "
                f"{number} too, so the two adapters were not compared"
            )
        examples = [Example(prompts[i], completions[i]) for i in both]
        new_sums, counts = adapter_example_losses(model, tokenizer, examples, fit.weights, config.batch_size)
        old_sums, _ = adapter_example_losses(model, tokenizer, examples, active.weights, config.batch_size)
        about = (
            f"on the {len(both)} held-out examples neither adapter was trained on ({len(new)} added since version "
            f"{number}, {len(shared)} held out by both; token-weighted loss {sum(new_sums) / max(sum(counts), 1):.4f} "
            f"against version {number}'s {sum(old_sums) / max(sum(counts), 1):.4f})"
        )
        per_new = [x / max(n, 1) for x, n in zip(new_sums, counts, strict=True)]
        per_old = [x / max(n, 1) for x, n in zip(old_sums, counts, strict=True)]
        return compare_losses_on_heldout(per_new, per_old, number, about)

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
        raise TrainingDataError(
            "a generation task trains a LoRA adapter on the language model (fit_adapter), not a head"
        )

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
        return unconditional("a generation adapter is compared with the base model on its held-out examples")

    def format(self, head: Head, output: Any, top_k: int | None) -> list[Any]:
        raise TypeError("a generation task answers POST /v1/tasks/{name}/generate, not predict")

    def export_problem(self) -> str | None:
        return "a generation task's adapter has no ONNX export (it is a LoRA adapter on the server's language model)"

    def export_format_problem(self, fmt: str) -> str | None:
        if fmt in self.export_formats:
            return None
        return (
            f"a generation task has no {fmt!r} export: its LoRA adapter on the server's language model exports "
            "with format=peft (a PEFT adapter directory for peft.PeftModel.from_pretrained, in a zip)"
        )
