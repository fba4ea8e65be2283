"""Dataset uploads: a whole labeled dataset in one file creates a task or extends it.

``POST /v1/tasks/{name}/dataset`` takes a zip in image-folder layout (``<label>/<file>``) or a
CSV / JSON Lines file with ``input,label`` columns, as the raw body or as the one ``file`` part of
a multipart form. When the task does not exist, query parameters ``modality`` (default: image
for a zip, text otherwise), ``backbone`` and ``head`` (default ``auto``) create it, by the same rules as
``POST /v1/tasks`` (service/task_rules.py). Everything is validated before
anything is stored; the answer is a queued training job whose ``progress`` covers embedding.
"""

from __future__ import annotations

from typing import Annotated, cast

import anyio.to_thread
from fastapi import APIRouter, Path, Request

from adapters import kinds
from graft import schemas as s

from ... import datasets, quotas, task_rules
from ...backbones.base import ImageBackbone
from ...runtime import Runtime
from ...store.models import Task, Tenant
from ...store.repository import NotFound
from ..errors import ApiError
from ..inputs import pixel_budget, stored_examples, stored_image
from ..uploads import Upload, is_multipart, one_upload, read_body, read_form
from .deps import ERRORS, RuntimeDep, WriterDep, check_labels, job_out, task_out

router = APIRouter(prefix="/v1")

UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "description": "The dataset file as the raw body (`Content-Type: application/zip`, `text/csv` or "
        "`application/jsonl`), or as the `file` part of a multipart form.",
        "content": {
            "application/zip": {"schema": {"type": "string", "format": "binary"}},
            "text/csv": {"schema": {"type": "string"}},
            "application/jsonl": {"schema": {"type": "string"}},
            "multipart/form-data": {"schema": {
                "type": "object", "required": ["file"], "properties": {"file": {"type": "string", "format": "binary"}},
            }},
        },
    }
}


@router.post(
    "/tasks/{name}/dataset", status_code=202, response_model=s.DatasetAccepted, responses=ERRORS, openapi_extra=UPLOAD_BODY
)
async def upload_dataset(
    name: Annotated[str, Path(pattern=s.NAME_PATTERN)],
    request: Request,
    rt: RuntimeDep,
    me: WriterDep,
    modality: s.Modality | None = None,
    backbone: str | None = None,
    head: s.HeadKind | None = None,
) -> s.DatasetAccepted:
    with one_upload(me.id):  # one upload per tenant at a time: the spool holds at most one of its bodies
        limit = rt.settings.max_upload_bytes
        form = None
        if is_multipart(request):
            files, form = await read_form(request, limit, max_files=1)
            if len(files) != 1 or {key for key, _ in form.multi_items()} != {"file"}:
                await form.close()
                raise ApiError(422, "validation_error", "send the dataset as a multipart form with one 'file' part")
            upload = files[0]
        else:
            upload = await read_body(request, limit)
        try:
            accepted = await anyio.to_thread.run_sync(_ingest, rt, me, name, upload, modality, backbone, head)
        finally:
            if form is not None:
                await form.close()
            upload.file.close()
    rt.jobs.notify()
    return accepted


def _existing(rt: Runtime, tenant: Tenant, name: str) -> Task | None:
    try:
        return rt.store.get_task(tenant.id, name)
    except NotFound:
        return None


def _target(
    rt: Runtime, name: str, task: Task | None, kind: datasets.Kind, modality: str | None, backbone: str | None, head: str | None
) -> tuple[str, str, str]:
    """The modality, backbone and head the upload goes to: the existing task's, or the new task's (by the
    same rules and defaults as ``POST /v1/tasks``, service/task_rules.py)."""
    if task is not None:
        given = {"modality": (modality, task.modality), "backbone": (backbone, task.backbone), "head": (head, task.head)}
        for param, (value, actual) in given.items():
            if value is not None and value != actual:
                raise ApiError(422, "validation_error", f"task {name!r} exists with {param} {actual!r}; "
                               f"omit '{param}' to extend it, or upload to a new task name")
    target = task.modality if task else modality or ("image" if kind == "zip" else "text")
    if kind == "zip" and target != "image":
        raise ApiError(422, "validation_error", "a zip (image-folder layout) is for image tasks; "
                       "text tasks take CSV or JSON Lines with input,label columns")
    if task is not None:
        return target, task.backbone, task.head
    new = task_rules.new_task(rt, target, kinds.DEFAULT, backbone, head)
    return target, new.backbone, new.head


def _read(
    rt: Runtime, upload: Upload, kind: datasets.Kind, modality: str, backbone: str
) -> tuple[datasets.Dataset, list[tuple[str, str]]]:
    """The parsed file and its examples as the store keeps them."""
    settings = rt.settings
    if kind == "zip":  # each image is checked and normalised as it is extracted
        preprocessing = cast(ImageBackbone, rt.backbones.get(backbone)).preprocessing  # an image task's backbone
        budget = pixel_budget(rt)
        data = datasets.read_image_folder(
            upload.file, max_files=settings.max_examples_per_request,
            max_total_bytes=settings.max_upload_uncompressed_bytes, max_file_bytes=settings.max_image_bytes,
            convert=lambda raw, where: stored_image(rt, preprocessing, raw, where, budget),
        )
        return data, list(zip(data.inputs, data.labels, strict=True))  # type: ignore[arg-type]
    field_chars = settings.max_image_bytes * 4 // 3 + 64 if modality == "image" else settings.max_text_chars
    data = datasets.read_table(upload.file, kind, max_rows=settings.max_examples_per_request, max_field_chars=field_chars)
    return data, stored_examples(rt, modality, backbone, data.inputs, data.labels, data.names)


def _ingest(
    rt: Runtime, me: Tenant, name: str, upload: Upload, modality: str | None, backbone: str | None, head: str | None
) -> s.DatasetAccepted:
    task = _existing(rt, me, name)
    if task is not None and not kinds.kind_of(task.kind).dataset_uploads:
        raise ApiError(422, "validation_error", f"task {name!r} is a {task.kind} task; dataset uploads hold {kinds.DEFAULT} "
                       f"labels (one per row or folder): add its examples with POST /v1/tasks/{name}/examples")
    kind = datasets.detect_kind(upload.file.read(8), upload.content_type, upload.filename)  # DatasetError → errors.py
    upload.file.seek(0)
    target, backbone_name, head_name = _target(rt, name, task, kind, modality, backbone, head)
    data, examples = _read(rt, upload, kind, target, backbone_name)
    guard = quotas.examples_guard(rt.settings, me.id, task, examples)  # checked in the write's transaction
    if task is None:
        check_labels([label for _, label in examples], None, kinds.DEFAULT)
        created, (task, job) = True, rt.store.create_task(
            me.id, name, modality=target, backbone=backbone_name, head=head_name, examples=examples, guard=guard
        )
    else:
        created, (task, job) = False, rt.store.add_examples(me.id, name, examples, guard=guard)
    return s.DatasetAccepted(
        task=task_out(task), job=job_out(job), created=created, examples=len(examples), warnings=data.warnings,
    )
