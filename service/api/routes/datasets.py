"""Dataset uploads: a whole labeled dataset in one file creates a task or extends it.

``POST /v1/tasks/{name}/dataset`` takes a zip in folder-per-label layout (``<label>/<file>``: images,
or .wav clips) or a CSV / JSON Lines file with ``input,label`` columns, as the raw body or as the one
``file`` part of a multipart form. When the task does not exist, query parameters ``modality``
(default: audio for a zip of .wav files, image for another zip, text otherwise), ``backbone`` and
``head`` (default ``auto``) and ``kind`` (default ``classification``) create it, by the same rules as
``POST /v1/tasks`` (service/application/task_rules.py). Kinds whose labels are JSON structures (entities, answers,
detection) take JSON Lines rows whose ``label`` is the kind's JSON label; detection also a zip of images with one
``annotations.jsonl`` (``{"file", "label"}`` per line) or ``labels.json`` (``{file: objects}``).
Everything is validated before anything is stored; the answer is a queued training job whose
``progress`` covers embedding.
"""

from __future__ import annotations

from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Path, Request

from graft import schemas as s

from ...application import datasets as use
from ..errors import ApiError
from ..uploads import is_multipart, one_upload, read_body, read_form
from .deps import ERRORS, RuntimeDep, WriterDep, job_out, task_out

router = APIRouter(prefix="/v1")

UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "description": "The dataset file as the raw body (`Content-Type: application/zip`, `text/csv` or "
        "`application/jsonl`), or as the `file` part of a multipart form. Entities, answers and detection tasks "
        "(`kind`) take JSON Lines rows whose `label` is the kind's JSON label; detection also a zip of images with "
        'one `annotations.jsonl` (`{"file", "label"}` per line) or `labels.json` (`{file: objects}`).',
        "content": {
            "application/zip": {"schema": {"type": "string", "format": "binary"}},
            "text/csv": {"schema": {"type": "string"}},
            "application/jsonl": {"schema": {"type": "string"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            },
        },
    }
}


@router.post(
    "/tasks/{name}/dataset",
    status_code=202,
    response_model=s.DatasetAccepted,
    responses=ERRORS,
    openapi_extra=UPLOAD_BODY,
)
async def upload_dataset(
    name: Annotated[str, Path(pattern=s.NAME_PATTERN)],
    request: Request,
    rt: RuntimeDep,
    me: WriterDep,
    modality: s.Modality | None = None,
    backbone: str | None = None,
    head: s.HeadKind | None = None,
    kind: s.TaskKind | None = None,
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
            done = await anyio.to_thread.run_sync(
                use.ingest,
                rt,
                me.id,
                name,
                upload.file,
                upload.content_type,
                upload.filename,
                modality,
                backbone,
                head,
                kind,
            )
        finally:
            if form is not None:
                await form.close()
            upload.file.close()
    return s.DatasetAccepted(
        task=task_out(done.task),
        job=job_out(done.job),
        created=done.created,
        examples=done.examples,
        warnings=done.warnings,
    )
