"""Use cases on tasks and their examples: create a task, add examples, describe a task, delete one."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from adapters import kinds

from ..runtime import Runtime
from ..store.models import Job, Task, Version
from . import quotas, task_rules
from .errors import Invalid
from .exports import forget_exports
from .inputs import Input, check_kind_inputs, stored_examples


@dataclass(frozen=True)
class Example:
    input: Input  # a string (text, base64 image) or bytes; an answers task's {question, context}
    label: Any  # a JSON value, checked against the task's kind


@dataclass(frozen=True)
class TaskView:
    task: Task
    labels: list[str]  # the active version's
    examples_per_label: dict[str, int]
    versions: list[Version]


def check_new_labels(kind: str, labels: Sequence[Any], declared: Sequence[str] | None) -> None:
    """A new task's labels (each already valid for its kind): enough distinct ones, and the declared set if any."""
    task_kind = kinds.kind_of(kind)
    if declared is not None and not task_kind.declares_labels:
        raise Invalid(f"a {kind} task has no label set: omit 'labels'")
    problem = task_kind.examples_problem(labels, declared)
    if problem:
        raise Invalid(problem)


def check_labels(kind: str, examples: Sequence[Example], task_name: str | None = None) -> None:
    """Each example's input and label fit the task's kind, and the label fits its input (e.g. spans inside
    the text): the kind's own checks, adapters/kinds/."""
    task_kind = kinds.kind_of(kind)
    about = f" (task {task_name!r} is a {kind} task)" if task_name is not None else ""
    for i, example in enumerate(examples):
        problem = task_kind.input_problem(example.input)
        if problem:
            raise Invalid(f"examples[{i}].input: {problem}{about}")
        problem = task_kind.problem(example.label)
        if problem:
            raise Invalid(f"examples[{i}].label: {problem}{about}")
        problem = task_kind.example_problem(example.input, example.label)
        if problem:
            raise Invalid(f"examples[{i}].label: {problem}")


def _stored(
    rt: Runtime,
    kind: str,
    modality: str,
    backbone: str,
    examples: Sequence[Example],
    names: Sequence[str] | None = None,
) -> list[tuple[str, str]]:
    """Examples as the store keeps them: labels (and structured inputs) encoded by the task's kind, inputs
    checked (text: characters as the kind counts them) or normalised (images, audio). ``names`` say where each
    input came from, for error messages (default ``examples[i].input``)."""
    task_kind = kinds.kind_of(kind)
    names = names if names is not None else [f"examples[{i}].input" for i in range(len(examples))]
    sizes = check_kind_inputs(rt, kind, [e.input for e in examples], names, text=modality == "text")
    return stored_examples(
        rt,
        modality,
        backbone,
        [task_kind.encode_input(e.input) for e in examples],
        [task_kind.encode_example(e.input, e.label) for e in examples],
        names,
        sizes or None,
    )


def stored_kind_examples(
    rt: Runtime, kind: str, modality: str, backbone: str, examples: Sequence[Example], names: Sequence[str]
) -> list[tuple[str, str]]:
    """Examples (each already checked by :func:`check_labels`' rules) of a task of ``kind`` as the store keeps
    them, ``names`` saying where each came from (a dataset file's line)."""
    return _stored(rt, kind, modality, backbone, examples, names)


def stored_examples_of(rt: Runtime, task: Task, examples: Sequence[Example]) -> list[tuple[str, str]]:
    """Examples of an existing task as the store keeps them (inputs checked, labels encoded)."""
    return _stored(rt, task.kind, task.modality, task.backbone, examples)


def create_task(
    rt: Runtime,
    tenant_id: str,
    name: str,
    *,
    modality: str,
    kind: str,
    backbone: str | None,
    head: str | None,
    declared: list[str] | None,
    examples: Sequence[Example],
) -> tuple[Task, Job]:
    """A new task with its examples and its first training job (queued), or a domain error."""
    new = task_rules.new_task(rt, modality, kind, backbone, head)
    quotas.check_labels(rt.settings, declared or [], "declared label")
    check_labels(new.kind, examples)
    check_new_labels(new.kind, [e.label for e in examples], declared)
    stored = _stored(rt, new.kind, new.modality, new.backbone, examples)
    task, job = rt.store.create_task(
        tenant_id,
        name,
        modality=new.modality,
        kind=new.kind,
        backbone=new.backbone,
        head=new.head,
        examples=stored,
        guard=quotas.examples_guard(rt.settings, tenant_id, None, stored, new.kind),  # in the write's transaction
    )
    rt.jobs.notify()
    return task, job


def add_examples(rt: Runtime, tenant_id: str, name: str, examples: Sequence[Example]) -> tuple[Task, Job]:
    """More examples for a task, and a training job queued for them (superseding a queued one)."""
    task = rt.store.get_task(tenant_id, name)
    check_labels(task.kind, examples, task_name=name)
    stored = _stored(rt, task.kind, task.modality, task.backbone, examples)
    guard = quotas.examples_guard(rt.settings, tenant_id, task, stored, task.kind)
    task, job = rt.store.add_examples(tenant_id, name, stored, guard=guard)
    rt.jobs.notify()
    return task, job


def describe_task(rt: Runtime, tenant_id: str, name: str) -> TaskView:
    task = rt.store.get_task(tenant_id, name)
    versions = rt.store.versions(task.id)
    active = next((v for v in versions if v.number == task.active_version), None)
    per_label = kinds.kind_of(task.kind).per_label(rt.store.label_counts(task.id))
    return TaskView(task, active.labels if active else [], per_label, versions)


def delete_task(rt: Runtime, tenant_id: str, name: str) -> None:
    task = rt.store.get_task(tenant_id, name)
    rt.store.delete_task(tenant_id, name)
    rt.router.forget(tenant_id, name)
    forget_exports(rt, tenant_id, task.id)
