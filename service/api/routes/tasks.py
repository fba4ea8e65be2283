"""Tasks and their examples: create, list, show, extend, delete."""

from __future__ import annotations

from fastapi import APIRouter, Response

from adapters import kinds
from graft import schemas as s

from ... import quotas, task_rules
from ..errors import ApiError
from ..inputs import stored_examples
from .deps import (
    ERRORS,
    RuntimeDep,
    TenantDep,
    WriterDep,
    check_labels,
    job_out,
    task_out,
    version_out,
)
from .export import forget_exports

router = APIRouter(prefix="/v1")


@router.post("/tasks", status_code=202, response_model=s.TaskCreated, responses=ERRORS)
def create_task(body: s.TaskCreate, rt: RuntimeDep, me: WriterDep) -> s.TaskCreated:
    new = task_rules.new_task(rt, body.modality, body.kind, body.backbone, body.head)
    backbone = new.backbone
    quotas.check_labels(rt.settings, body.labels or [], "declared label")
    check_labels([e.label for e in body.examples], body.labels, body.kind)
    examples = _examples(rt, body.modality, body.kind, backbone, body.examples)
    task, job = rt.store.create_task(
        me.id, body.name, modality=new.modality, kind=new.kind, backbone=backbone, head=new.head, examples=examples,
        guard=quotas.examples_guard(rt.settings, me.id, None, examples, new.kind),  # quota check, in the write's transaction
    )
    rt.jobs.notify()
    return s.TaskCreated(task=task_out(task), job=job_out(job))


@router.get("/tasks", response_model=s.TaskList, responses=ERRORS)
def list_tasks(rt: RuntimeDep, me: TenantDep) -> s.TaskList:
    return s.TaskList(tasks=[task_out(t) for t in rt.store.list_tasks(me.id)])


@router.get("/tasks/{name}", response_model=s.TaskDetail, responses=ERRORS)
def get_task(name: str, rt: RuntimeDep, me: TenantDep) -> s.TaskDetail:
    task = rt.store.get_task(me.id, name)
    versions = rt.store.versions(task.id)
    active = next((v for v in versions if v.number == task.active_version), None)
    return s.TaskDetail(
        **task_out(task).model_dump(),
        labels=active.labels if active else [],
        examples_per_label=kinds.kind_of(task.kind).per_label(rt.store.label_counts(task.id)),
        versions=[version_out(v, task.active_version) for v in versions],
    )


@router.delete("/tasks/{name}", status_code=204, responses=ERRORS)
def delete_task(name: str, rt: RuntimeDep, me: WriterDep) -> Response:
    task = rt.store.get_task(me.id, name)
    rt.store.delete_task(me.id, name)
    rt.router.forget(me.id, name)
    forget_exports(rt, me.id, task.id)
    return Response(status_code=204)


@router.post("/tasks/{name}/examples", status_code=202, response_model=s.TaskCreated, responses=ERRORS)
def add_examples(name: str, body: s.ExamplesAppend, rt: RuntimeDep, me: WriterDep) -> s.TaskCreated:
    task = rt.store.get_task(me.id, name)
    task_kind = kinds.kind_of(task.kind)
    for i, example in enumerate(body.examples):
        problem = task_kind.problem(example.label)
        if problem:
            raise ApiError(422, "validation_error", f"examples[{i}].label: {problem} (task {name!r} is a {task.kind} task)")
    examples = _examples(rt, task.modality, task.kind, task.backbone, body.examples)
    task, job = rt.store.add_examples(me.id, name, examples, guard=quotas.examples_guard(rt.settings, me.id, task, examples, task.kind))
    rt.jobs.notify()
    return s.TaskCreated(task=task_out(task), job=job_out(job))


def _examples(rt: RuntimeDep, modality: str, kind: str, backbone: str, examples: list[s.ExampleIn]) -> list[tuple[str, str]]:
    """Examples as the store keeps them (labels encoded by their kind, see adapters/kinds/)."""
    task_kind = kinds.kind_of(kind)
    return stored_examples(
        rt, modality, backbone, [e.input for e in examples], [task_kind.encode(e.label) for e in examples],
        [f"examples[{i}].input" for i in range(len(examples))],
    )
