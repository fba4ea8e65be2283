"""The dataset-ingest use case: a whole labeled dataset in one file (a folder-per-label zip of images or
WAV clips, CSV or JSON Lines) creates a task or extends one. A new task takes the same rules and defaults
as ``POST /v1/tasks`` (service/application/task_rules.py); everything is validated before anything is stored.

Kinds whose labels are JSON structures (``TaskKind.structured_uploads``: entities, answers, detection) take JSON
Lines rows whose ``label`` is the kind's JSON label, and detection also a zip of images with one
``annotations.jsonl`` / ``labels.json``; every row is checked by the kind's own checks (the same as
``POST /v1/tasks``), the first failure naming its line."""

from __future__ import annotations

from dataclasses import dataclass
from typing import IO, Any, cast

from adapters import kinds

from .. import datasets
from ..backbones.base import ImageBackbone
from ..runtime import Runtime
from ..store.models import Job, Task
from ..store.repository import NotFound
from . import quotas, task_rules
from .errors import Invalid
from .inputs import pixel_budget, seconds_budget, stored_clip, stored_examples, stored_image
from .tasks import Example, check_new_labels, stored_kind_examples

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
    task_kind: kinds.TaskKind,
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
    elif len(task_kind.modalities) == 1:  # e.g. detection: image; entities and answers: text
        target = task_kind.modalities[0]
    else:  # a zip of .wav clips is for an audio task, of images for an image task
        limit = rt.settings.max_examples_per_request
        target = datasets.zip_modality(file, max_files=limit) if kind == "zip" else "text"
    if task_kind.structured_uploads:
        if kind == "csv":
            raise Invalid(
                f"a {task_kind.name} task's labels are JSON structures; send JSON Lines (one "
                '{"input": ..., "label": ...} object per line, the label as POST /v1/tasks takes it), not CSV'
            )
        if kind == "zip" and target != "image":
            raise Invalid(
                f"a zip is for image tasks (detection: images plus annotations.jsonl); a {task_kind.name} task "
                "takes JSON Lines"
            )
    elif kind == "zip" and target not in ZIP_MODALITIES:
        raise Invalid(
            "a zip (folder-per-label layout) is for image and audio tasks; text tasks take CSV or JSON Lines with "
            "input,label columns"
        )
    if task is not None:
        return target, task.backbone, task.head
    new = task_rules.new_task(rt, target, task_kind.name, backbone, head)
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


def check_rows(task_kind: kinds.TaskKind, data: datasets.Dataset) -> None:
    """Every row of a structured-label file checked by the kind's own checks (``input_problem``, ``problem``,
    ``example_problem``, as ``POST /v1/tasks``); the first failure is a 422 naming its line."""
    about = f" (task kind {task_kind.name})"
    for value, label, where in zip(data.inputs, data.labels, data.names, strict=True):
        problem = task_kind.input_problem(value)
        if problem:
            raise Invalid(f"{where}: input: {problem}{about}")
        problem = task_kind.problem(label)
        if problem:
            raise Invalid(f"{where}: label: {problem}{about}")
        problem = task_kind.example_problem(value, label)
        if problem:
            raise Invalid(f"{where}: label: {problem}")


def _read_structured(
    rt: Runtime, file: IO[bytes], kind: datasets.Kind, task_kind: kinds.TaskKind, modality: str, backbone: str
) -> tuple[datasets.Dataset, list[tuple[str, str]], list[Any]]:
    """A structured-label kind's file (JSON Lines rows; detection: also an annotated zip), every row checked by the
    kind's own checks (its ``input_problem``, ``problem`` and ``example_problem``, as ``POST /v1/tasks``); returns
    the parsed file, its examples as the store keeps them and the labels (for a new task's label checks)."""
    settings = rt.settings
    if kind == "zip":  # detection: images + annotations.jsonl, each image decoded and checked as it is extracted
        preprocessing = cast(ImageBackbone, rt.backbones.get(backbone)).preprocessing
        budget = pixel_budget(rt)
        labels: list[Any] = []

        def convert(raw: bytes, label: Any, where: str) -> tuple[str, str]:
            problem = task_kind.problem(label)
            if problem:
                raise Invalid(f"{where}: {problem}")
            stored = stored_image(rt, preprocessing, raw, where, budget)  # the safe decoder, within the budget
            problem = task_kind.example_problem(raw, label)
            if problem:
                raise Invalid(f"{where}: {problem}")
            labels.append(label)
            return stored, task_kind.encode_example(raw, label)

        data = datasets.read_annotated_images(
            file,
            max_files=settings.max_examples_per_request,
            max_total_bytes=settings.max_upload_uncompressed_bytes,
            max_file_bytes=settings.max_image_bytes,
            convert=convert,
        )
        return data, list(zip(data.inputs, data.labels, strict=True)), labels
    encoded = {"image": settings.max_image_bytes, "audio": settings.max_audio_bytes}.get(modality)
    field_chars = encoded * 4 // 3 + 64 if encoded is not None else settings.max_text_chars * 2 + 64
    data = datasets.read_structured(file, max_rows=settings.max_examples_per_request, max_field_chars=field_chars)
    check_rows(task_kind, data)
    examples = [Example(value, label) for value, label in zip(data.inputs, data.labels, strict=True)]
    names = [f"{where}: input" for where in data.names]
    stored = stored_kind_examples(rt, task_kind.name, modality, backbone, examples, names)
    return data, stored, list(data.labels)


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
    kind_name: str | None = None,
) -> Ingested:
    """Read, check and store the dataset ``file``; its training job is queued. ``kind_name`` (None: the existing
    task's, else classification) is the new task's kind."""
    task = _existing(rt, tenant_id, name)
    if task is not None and kind_name is not None and kind_name != task.kind:
        raise Invalid(
            f"task {name!r} exists with kind {task.kind!r}; omit 'kind' to extend it, or upload to a new task name"
        )
    chosen = task.kind if task is not None else (kind_name or kinds.DEFAULT)
    try:
        task_kind = kinds.kind_of(chosen)
    except kinds.UnknownKind as exc:
        raise Invalid(str(exc)) from None
    if not (task_kind.dataset_uploads or task_kind.structured_uploads):
        takes = ", ".join(k.name for k in kinds.KINDS.values() if k.dataset_uploads or k.structured_uploads)
        subject = f"task {name!r} is a {chosen} task" if task is not None else f"a {chosen} task cannot be uploaded"
        raise Invalid(
            f"{subject}; dataset uploads are for {takes} tasks: add its examples with POST /v1/tasks"
            + (f"/{name}/examples" if task is not None else "")
        )
    kind = datasets.detect_kind(file.read(8), content_type, filename)  # DatasetError: a domain error
    file.seek(0)
    target, backbone_name, head_name = _target(rt, name, task, kind, modality, backbone, head, file, task_kind)
    if task_kind.structured_uploads:
        data, examples, labels = _read_structured(rt, file, kind, task_kind, target, backbone_name)
    else:
        data, examples = _read(rt, file, kind, target, backbone_name)
        labels = [label for _, label in examples]
    guard = quotas.examples_guard(rt.settings, tenant_id, task, examples, chosen)  # in the write's transaction
    if task is None:
        check_new_labels(chosen, labels, None)
        created, (task, job) = (
            True,
            rt.store.create_task(
                tenant_id,
                name,
                modality=target,
                kind=chosen,
                backbone=backbone_name,
                head=head_name,
                examples=examples,
                guard=guard,
            ),
        )
    else:
        created, (task, job) = False, rt.store.add_examples(tenant_id, name, examples, guard=guard)
    rt.jobs.notify()
    return Ingested(task, job, created, len(examples), data.warnings)
