"""The dataset-ingest use case: a whole labeled dataset in one file (a folder-per-label zip of images or
WAV clips, CSV or JSON Lines) creates a task or extends one. A new task takes the same rules and defaults
as ``POST /v1/tasks`` (service/application/task_rules.py); everything is validated before anything is stored."""

from __future__ import annotations

from dataclasses import dataclass
from typing import IO, cast

from adapters import kinds

from .. import datasets
from ..backbones.base import ImageBackbone
from ..runtime import Runtime
from ..store.models import Job, Task
from ..store.repository import NotFound
from . import quotas, task_rules
from .errors import Invalid
from .inputs import pixel_budget, seconds_budget, stored_clip, stored_examples, stored_image
from .tasks import check_new_labels

ZIP_MODALITIES = ("image", "audio")  # a zip holds one file per example, in a folder named after its label


@dataclass(frozen=True)
class Ingested:
    task: Task
    job: Job
    created: bool
    examples: int
    warnings: list[str]


def _existing(rt: Runtime, tenant_id: str, name: str) -> Task | None:
    try:
        return rt.store.get_task(tenant_id, name)
    except NotFound:
        return None


def _target(
    rt: Runtime,
    name: str,
    task: Task | None,
    kind: datasets.Kind,
    modality: str | None,
    backbone: str | None,
    head: str | None,
    file: IO[bytes],
) -> tuple[str, str, str]:
    """The modality, backbone and head the upload goes to: the existing task's, or the new task's (by the
    same rules and defaults as ``POST /v1/tasks``, service/application/task_rules.py)."""
    if task is not None:
        given = {
            "modality": (modality, task.modality),
            "backbone": (backbone, task.backbone),
            "head": (head, task.head),
        }
        for param, (value, actual) in given.items():
            if value is not None and value != actual:
                raise Invalid(
                    f"task {name!r} exists with {param} {actual!r}; "
                    f"omit '{param}' to extend it, or upload to a new task name"
                )
    if task is not None:
        target = task.modality
    elif modality is not None:
        target = modality
    else:  # a zip of .wav clips is for an audio task, of images for an image task
        limit = rt.settings.max_examples_per_request
        target = datasets.zip_modality(file, max_files=limit) if kind == "zip" else "text"
    if kind == "zip" and target not in ZIP_MODALITIES:
        raise Invalid(
            "a zip (folder-per-label layout) is for image and audio tasks; text tasks take CSV or JSON Lines with "
            "input,label columns"
        )
    if task is not None:
        return target, task.backbone, task.head
    new = task_rules.new_task(rt, target, kinds.DEFAULT, backbone, head)
    return target, new.backbone, new.head


def _read(
    rt: Runtime, file: IO[bytes], kind: datasets.Kind, modality: str, backbone: str
) -> tuple[datasets.Dataset, list[tuple[str, str]]]:
    """The parsed file and its examples as the store keeps them."""
    settings = rt.settings
    if kind == "zip" and modality == "audio":  # each WAV file is checked and normalised as it is extracted
        seconds = seconds_budget(rt)
        data = datasets.read_image_folder(
            file,
            max_files=settings.max_examples_per_request,
            max_total_bytes=settings.max_upload_uncompressed_bytes,
            max_file_bytes=settings.max_audio_bytes,
            convert=lambda raw, where: stored_clip(rt, raw, where, seconds),
            what="clip",
        )
        return data, list(zip(data.inputs, data.labels, strict=True))  # type: ignore[arg-type]
    if kind == "zip":  # each image is checked and normalised as it is extracted
        preprocessing = cast(ImageBackbone, rt.backbones.get(backbone)).preprocessing  # an image task's backbone
        budget = pixel_budget(rt)
        data = datasets.read_image_folder(
            file,
            max_files=settings.max_examples_per_request,
            max_total_bytes=settings.max_upload_uncompressed_bytes,
            max_file_bytes=settings.max_image_bytes,
            convert=lambda raw, where: stored_image(rt, preprocessing, raw, where, budget),
        )
        return data, list(zip(data.inputs, data.labels, strict=True))  # type: ignore[arg-type]
    encoded = {"image": settings.max_image_bytes, "audio": settings.max_audio_bytes}.get(modality)
    field_chars = encoded * 4 // 3 + 64 if encoded is not None else settings.max_text_chars
    data = datasets.read_table(file, kind, max_rows=settings.max_examples_per_request, max_field_chars=field_chars)
    return data, stored_examples(rt, modality, backbone, data.inputs, data.labels, data.names)


def ingest(
    rt: Runtime,
    tenant_id: str,
    name: str,
    file: IO[bytes],
    content_type: str,
    filename: str,
    modality: str | None,
    backbone: str | None,
    head: str | None,
) -> Ingested:
    """Read, check and store the dataset ``file``; its training job is queued."""
    task = _existing(rt, tenant_id, name)
    if task is not None and not kinds.kind_of(task.kind).dataset_uploads:
        raise Invalid(
            f"task {name!r} is a {task.kind} task; dataset uploads hold {kinds.DEFAULT} "
            f"labels (one per row or folder): add its examples with POST /v1/tasks/{name}/examples"
        )
    kind = datasets.detect_kind(file.read(8), content_type, filename)  # DatasetError: a domain error
    file.seek(0)
    target, backbone_name, head_name = _target(rt, name, task, kind, modality, backbone, head, file)
    data, examples = _read(rt, file, kind, target, backbone_name)
    kind_name = task.kind if task is not None else kinds.DEFAULT
    guard = quotas.examples_guard(rt.settings, tenant_id, task, examples, kind_name)  # in the write's transaction
    if task is None:
        check_new_labels(kinds.DEFAULT, [label for _, label in examples], None)
        created, (task, job) = (
            True,
            rt.store.create_task(
                tenant_id, name, modality=target, backbone=backbone_name, head=head_name, examples=examples, guard=guard
            ),
        )
    else:
        created, (task, job) = False, rt.store.add_examples(tenant_id, name, examples, guard=guard)
    rt.jobs.notify()
    return Ingested(task, job, created, len(examples), data.warnings)
