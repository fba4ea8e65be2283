"""What a new task may be: which kinds, heads and backbones go together. One function for every route
that creates a task (``POST /v1/tasks`` and a dataset upload to a new name), so their guards and
defaults cannot drift apart. Raises :class:`InvalidTask` (code ``validation_error``; the API answers 422).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from . import labels

if TYPE_CHECKING:
    from .runtime import Runtime

AUTO = "auto"
FINETUNE_MODALITIES = ("text",)  # the fine-tuned head trains the text backbone's top layers


class InvalidTask(ValueError):
    """The requested combination of modality, kind, backbone and head is not one Graft can train."""

    code: ClassVar[str] = "validation_error"


@dataclass(frozen=True)
class NewTask:
    modality: str
    kind: str
    backbone: str  # a configured backbone of the modality, or "auto"
    head: str  # a head kind, or "auto"


def new_task(rt: Runtime, modality: str, kind: str = labels.CLASSIFICATION, backbone: str | None = None,
             head: str | None = None) -> NewTask:
    """The task to create from what the request named (``None``: not named), or :class:`InvalidTask`.
    Defaults: head ``auto``, the modality's default backbone."""
    head = head or AUTO
    if head == "finetune" and (modality not in FINETUNE_MODALITIES or kind != labels.CLASSIFICATION):
        raise InvalidTask("head 'finetune' is available for text tasks only, of kind classification")
    if kind != labels.CLASSIFICATION and head != AUTO:
        raise InvalidTask(f"head {head!r} is for classification tasks; a {kind} task takes head 'auto' (or none)")
    if kind != labels.CLASSIFICATION and backbone == AUTO:
        raise InvalidTask(f"backbone 'auto' is for classification tasks; name a {modality} backbone for a {kind} task")
    return NewTask(modality, kind, choose_backbone(rt, modality, backbone), head)


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
            f"backbone {name!r} embeds {spec.modality}, not {modality}; {modality} backbones: {rt.backbones.names(modality)}"
        )
    return name
