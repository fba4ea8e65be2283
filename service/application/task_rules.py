"""What a new task may be: which kinds, heads and backbones go together. One function for every route
that creates a task (``POST /v1/tasks`` and a dataset upload to a new name), so their guards and
defaults cannot drift apart. What depends on the task's kind, the kind says (adapters/kinds/). Raises
:class:`InvalidTask` (code ``validation_error``; the API answers 422).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from adapters import kinds

if TYPE_CHECKING:
    from ..runtime import Runtime

AUTO = "auto"
FINETUNE_MODALITIES = ("text",)  # the fine-tuned head trains the text backbone's top layers (not detection's below)


class InvalidTask(ValueError):
    """The requested combination of modality, kind, backbone and head is not one Graft can train."""

    code: ClassVar[str] = "validation_error"


@dataclass(frozen=True)
class NewTask:
    modality: str
    kind: str
    backbone: str  # a configured backbone of the modality, or "auto"
    head: str  # a head kind, or "auto"


def new_task(
    rt: Runtime, modality: str, kind: str = kinds.DEFAULT, backbone: str | None = None, head: str | None = None
) -> NewTask:
    """The task to create from what the request named (``None``: not named), or :class:`InvalidTask`.
    Defaults: head ``auto``, the kind's default backbone (e.g. a speakers task's speaker encoder), else the
    modality's."""
    head = head or AUTO
    try:
        task_kind = kinds.kind_of(kind)
    except kinds.UnknownKind as exc:
        raise InvalidTask(str(exc)) from None
    # detection tunes the image CNN's top blocks (reads_feature_maps); the others the text backbone's top layers
    modalities = task_kind.modalities if task_kind.reads_feature_maps else FINETUNE_MODALITIES
    if head == "finetune" and (modality not in modalities or head not in task_kind.pinnable_heads):
        owners = " or ".join(
            k.name for k in kinds.KINDS.values() if head in k.pinnable_heads and not k.reads_feature_maps
        )
        raise InvalidTask(
            f"head 'finetune' is available for text tasks only, of kind {owners}, and for detection (image) tasks"
        )
    problem = task_kind.new_task_problem(modality, backbone, head)
    if problem:
        raise InvalidTask(problem)
    if task_kind.generates:  # the process's causal LM, not an embedding backbone
        return NewTask(modality, kind, rt.generation.name, head)
    chosen = choose_backbone(rt, modality, backbone or task_kind.default_backbone(modality))
    return NewTask(modality, kind, chosen, head)


def choose_backbone(rt: Runtime, modality: str, requested: str | None) -> str:
    """The backbone a task names: a configured one of its modality, or ``auto`` (chosen per training)."""
    if requested == AUTO:
        if not rt.backbones.names(modality):
            raise InvalidTask(f"no {modality} backbone is configured")
        return requested
    name = requested or rt.default_backbone(modality)
    spec = rt.backbones.specs.get(name)
    if spec is None:
        raise InvalidTask(f"unknown backbone {name!r}; available: {rt.backbones.names()}")
    if spec.modality != modality:
        raise InvalidTask(
            f"backbone {name!r} embeds {spec.modality}, not {modality}; {modality} backbones: "
            f"{rt.backbones.names(modality)}"
        )
    return name
