"""Tasks and their examples: create, list, show, extend, delete (use cases: service/application/tasks.py)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from graft import schemas as s

from ...application import loop
from ...application import tasks as use
from .deps import (
    ERRORS,
    RuntimeDep,
    TenantDep,
    WriterDep,
    job_out,
    task_out,
    version_out,
)

router = APIRouter(prefix="/v1")


@router.post("/tasks", status_code=202, response_model=s.TaskCreated, responses=ERRORS)
def create_task(body: s.TaskCreate, rt: RuntimeDep, me: WriterDep) -> s.TaskCreated:
    task, job = use.create_task(
        rt,
        me.id,
        body.name,
        modality=body.modality,
        kind=body.kind,
        backbone=body.backbone,
        head=body.head,
        declared=body.labels,
        examples=_examples(body.examples),
    )
    return s.TaskCreated(task=task_out(task), job=job_out(job))


@router.get("/tasks", response_model=s.TaskList, responses=ERRORS)
def list_tasks(rt: RuntimeDep, me: TenantDep) -> s.TaskList:
    return s.TaskList(tasks=[task_out(t) for t in rt.store.list_tasks(me.id)])


@router.get("/tasks/{name}", response_model=s.TaskDetail, responses=ERRORS)
def get_task(name: str, rt: RuntimeDep, me: TenantDep) -> s.TaskDetail:
    view = use.describe_task(rt, me.id, name)
    return s.TaskDetail(
        **task_out(view.task).model_dump(),
        labels=view.labels,
        examples_per_label=view.examples_per_label,
        examples_per_source=rt.store.examples_per_source(view.task.id),
        versions=[version_out(v, view.task.active_version) for v in view.versions],
    )


@router.patch("/tasks/{name}", response_model=s.TaskOut, responses=ERRORS)
def update_task(name: str, body: s.TaskSettings, rt: RuntimeDep, me: WriterDep) -> s.TaskOut:
    """Change a task's settings: its retrain policy (`retrain_after_feedback`; null: the service default)."""
    task = rt.store.get_task(me.id, name)
    if "retrain_after_feedback" in body.model_fields_set:
        task = loop.set_policy(rt, me.id, name, body.retrain_after_feedback)
    return task_out(task)


@router.delete("/tasks/{name}", status_code=204, responses=ERRORS)
def delete_task(name: str, rt: RuntimeDep, me: WriterDep) -> Response:
    use.delete_task(rt, me.id, name)
    return Response(status_code=204)


@router.post("/tasks/{name}/examples", status_code=202, response_model=s.TaskCreated, responses=ERRORS)
def add_examples(name: str, body: s.ExamplesAppend, rt: RuntimeDep, me: WriterDep) -> s.TaskCreated:
    task, job = use.add_examples(rt, me.id, name, _examples(body.examples))
    return s.TaskCreated(task=task_out(task), job=job_out(job))


def _examples(examples: list[s.ExampleIn]) -> list[use.Example]:
    return [use.Example(s.input_value(e.input), e.label) for e in examples]
