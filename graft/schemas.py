"""Pydantic models at the HTTP edge: what Graft accepts and what it answers."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictStr

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
Name = Annotated[str, Field(pattern=NAME_PATTERN, description="1–64 characters: letters, digits, `_`, `.`, `-`.")]
Modality = Literal["text", "image"]
HeadKind = Literal["auto", "linear", "prototype", "baseline", "hybrid", "finetune"]
JobStatus = Literal["queued", "running", "succeeded", "failed"]


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must be a non-empty string")
    return value


Text = Annotated[StrictStr, AfterValidator(_not_blank)]
Label = Annotated[StrictStr, Field(max_length=256), AfterValidator(_not_blank)]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- errors ------------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. `not_found`, `validation_error`.")
    message: str = Field(description="What went wrong and what to do about it.")


class ErrorResponse(BaseModel):
    error: ErrorDetail


# -- tenants -----------------------------------------------------------------------------


class TenantCreate(Request):
    name: Name


class TenantOut(BaseModel):
    id: str
    name: str
    disabled: bool
    created_at: datetime


class TenantCreated(BaseModel):
    id: str
    name: str
    api_key: str = Field(description="Shown once; Graft stores only its hash.")


# -- tasks and examples -------------------------------------------------------------------


class ExampleIn(Request):
    input: Text = Field(description="A text, or a base64-encoded PNG/JPEG/WebP image for image tasks.")
    label: Label


class TaskCreate(Request):
    name: Name
    modality: Modality = "text"
    backbone: str | None = Field(
        default=None,
        description="Backbone name, or `auto`: the modality's backbone with the highest transferability (LogME) "
        "on the task's examples, chosen at every training. Default: the modality's default backbone.",
    )
    head: HeadKind | None = Field(
        default=None,
        description="`auto` (default): whichever head cross-validation scores best among `linear` (logistic "
        "regression on the frozen embeddings), `prototype` (nearest centroid), `baseline` (from-scratch TF-IDF + "
        "logistic regression, no backbone) and `hybrid` (both in one model). Or pin one of them. `finetune` (text "
        "only, never chosen by `auto`): LoRA on the backbone's top layers plus a classifier, trained as a background job.",
    )
    labels: list[Label] | None = Field(
        default=None, description="Optional declared label set: every label must then have an example."
    )
    examples: list[ExampleIn] = Field(min_length=1)


class ExamplesAppend(Request):
    examples: list[ExampleIn] = Field(min_length=1)


class JobOut(BaseModel):
    id: str
    task: str
    status: JobStatus
    progress: float = Field(ge=0, le=1)
    error: str | None
    version: int | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class VersionOut(BaseModel):
    version: int
    head: str
    backbone: str
    backbone_revision: str
    runtime: str
    labels: list[str]
    n_examples: int
    metrics: dict
    created_at: datetime
    active: bool


class VersionDetail(VersionOut):
    status: Literal["active", "candidate", "previous"] = Field(
        description="`active`: serving; `previous`: was active before; `candidate`: never promoted (see `promotion`)."
    )
    accuracy: float | None = Field(description="Cross-validated accuracy of the served head (see `metrics.evaluation`).")
    ece: float | None = Field(description="Expected calibration error of the cross-validated probabilities, after temperature scaling.")
    transferability: dict | None = Field(description="LogME of the examples on each backbone of the modality.")
    warnings: list[str]
    promotion: dict | None = Field(description="Whether and why this version was (not) promoted.")


class VersionList(BaseModel):
    task: str
    active_version: int | None
    versions: list[VersionDetail]


class PromoteRequest(Request):
    version: int = Field(ge=1)


class TaskOut(BaseModel):
    name: str
    modality: str
    backbone: str
    head: str
    active_version: int | None
    created_at: datetime
    updated_at: datetime


class TaskDetail(TaskOut):
    labels: list[str] = Field(description="Labels of the active version (what predict can answer).")
    examples_per_label: dict[str, int] = Field(description="Stored examples per label, all versions' data.")
    versions: list[VersionOut]


class TaskCreated(BaseModel):
    task: TaskOut
    job: JobOut


class TaskList(BaseModel):
    tasks: list[TaskOut]


class DatasetAccepted(TaskCreated):
    created: bool = Field(description="True when the upload created the task, false when it extended it.")
    examples: int = Field(description="Examples stored from this upload.")
    warnings: list[str] = Field(description="What was skipped, e.g. empty label folders or `__MACOSX/` entries.")


# -- predict -----------------------------------------------------------------------------


class PredictRequest(Request):
    inputs: list[Text] = Field(min_length=1, description="Texts, or base64-encoded PNG/JPEG/WebP images for image tasks.")
    top_k: int | None = Field(default=None, ge=1, description="How many labels `scores` lists; default all.")


class PredictionOut(BaseModel):
    label: str
    score: float
    scores: dict[str, float] = Field(description="Probabilities of the top_k labels, most probable first.")


class PredictResponse(BaseModel):
    task: str
    version: int
    predictions: list[PredictionOut]


# -- backbones ---------------------------------------------------------------------------


class BackboneOut(BaseModel):
    name: str
    modality: str
    dim: int
    runtime: str
    revision: str
    device: str
    default: bool


class BackboneList(BaseModel):
    backbones: list[BackboneOut]
