"""Pydantic models at the HTTP edge: what Graft accepts and what it answers."""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    model_validator,
)

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
Name = Annotated[str, Field(pattern=NAME_PATTERN, description="1–64 characters: letters, digits, `_`, `.`, `-`.")]
Modality = Literal["text", "image", "audio"]
HeadKind = Literal[
    "auto",
    "linear",
    "prototype",
    "baseline",
    "hybrid",
    "finetune",
    "tagger",
    "word-tagger",
    "pointer",
    "word-pointer",
    "detector",
    "scratch-detector",
]
KIND_HEADS = {  # heads a task of a kind may pin besides "auto" (adapters/kinds/: each kind's pinnable_heads)
    "classification": ("linear", "prototype", "baseline", "hybrid", "finetune"),
    "multilabel": (),
    "regression": (),
    "speakers": (),
    "entities": ("tagger", "word-tagger", "finetune"),
    "answers": ("pointer", "word-pointer"),
    "generation": (),
    "detection": ("detector", "scratch-detector", "finetune"),
}
JobStatus = Literal["queued", "running", "succeeded", "failed", "superseded"]
VersionStatus = Literal["active", "candidate", "previous", "failed"]
TaskKind = Literal[
    "classification", "multilabel", "regression", "speakers", "entities", "answers", "generation", "detection"
]
LABEL_CHARS = 256  # a stored label: a class name, a multi-label list as JSON, or a number
STRUCTURED_LABEL_CHARS = 8192  # a stored structure or free text: entity spans, detection objects, a completion


def unstorable(value: str) -> str | None:
    """Why a string cannot be stored as is (None when it can): NUL characters (PostgreSQL text
    cannot hold them) and lone surrogates (not encodable as UTF-8)."""
    if "\x00" in value:
        return "must not contain NUL (\\u0000) characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid unicode (no lone surrogates)"
    return None


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must be a non-empty string")
    problem = unstorable(value)
    if problem:
        raise ValueError(problem)
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


class TenantUpdate(Request):
    disabled: bool = Field(description="True: every key of the tenant stops working at once; false: they work again.")


KeyRole = Literal["owner", "write", "predict"]


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: KeyRole = Field(
        "owner",
        description="`predict`: predict and read; `write`: also manage tasks, examples, datasets and versions; "
        "`owner`: also list, issue and revoke keys. Default `owner` (a tenant's first key is always `owner`).",
    )


class ApiKeyOut(BaseModel):
    id: str
    prefix: str = Field(description="The key's first characters, to recognise it; the key itself is never shown again.")
    role: KeyRole = "owner"
    created_at: datetime
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyOut):
    api_key: str = Field(description="Shown once; Graft stores only its hash.")


class ApiKeyList(BaseModel):
    keys: list[ApiKeyOut]


# -- tasks and examples -------------------------------------------------------------------


# Any JSON scalar or list: the task's kind decides which shape is valid (see label_problem), so the
# error can say what this task takes instead of listing every union member.
LabelValue = StrictStr | StrictBool | StrictInt | StrictFloat | list[Any] | dict[str, Any] | None
SPAN_KEYS = ("start", "end", "label")


def _exact_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _span_problem(i: int, item: Any) -> str | None:
    if not isinstance(item, dict):
        return f"label[{i}] must be an object {{start, end, label}}, got {_shape(item)}"
    keys = set(item)
    if keys != set(SPAN_KEYS):
        missing, extra = sorted(set(SPAN_KEYS) - keys), sorted(keys - set(SPAN_KEYS))
        return (
            f"label[{i}] must have exactly start, end and label"
            + (f"; missing {missing}" if missing else "")
            + (f"; unknown {extra}" if extra else "")
        )
    start, end = item["start"], item["end"]
    if not _exact_int(start) or not _exact_int(end):
        return f"label[{i}]: start and end are integer character offsets, got {start!r} and {end!r}"
    if not 0 <= start < end:
        return f"label[{i}]: need 0 <= start < end (end exclusive), got start {start}, end {end}"
    problem = _string_problem(item["label"])
    return f"label[{i}]: {problem}" if problem else None


def _entities_problem(label: Any) -> str | None:
    if not isinstance(label, list):
        return f"an entities task takes a list of spans [{{start, end, label}}], got {_shape(label)}"
    problem = next(filter(None, (_span_problem(i, item) for i, item in enumerate(label))), None)
    if problem:
        return problem
    ordered = sorted((s["start"], s["end"], s["label"]) for s in label)
    for left, right in zip(ordered, ordered[1:], strict=False):
        if right[0] < left[1]:
            return (
                f"spans {left[0]}-{left[1]} ({left[2]}) and {right[0]}-{right[1]} ({right[2]}) overlap; "
                "entities may not overlap"
            )
    stored = _compact([list(span) for span in ordered])
    if len(stored) > STRUCTURED_LABEL_CHARS:
        return (
            f"the spans take {len(stored)} characters as stored ([[start,end,label],...]); the limit is "
            f"{STRUCTURED_LABEL_CHARS}: split the text into shorter examples"
        )
    return None


OBJECT_KEYS = ("box", "label")


def _finite_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _object_problem(i: int, item: Any) -> str | None:
    if not isinstance(item, dict):
        return f"label[{i}] must be an object {{box, label}}, got {_shape(item)}"
    keys = set(item)
    if keys != set(OBJECT_KEYS):
        missing, extra = sorted(set(OBJECT_KEYS) - keys), sorted(keys - set(OBJECT_KEYS))
        return (
            f"label[{i}] must have exactly box and label"
            + (f"; missing {missing}" if missing else "")
            + (f"; unknown {extra}" if extra else "")
        )
    box = item["box"]
    if not isinstance(box, list) or len(box) != 4 or not all(_finite_number(v) for v in box):
        return f"label[{i}].box must be [x0, y0, x1, y1]: four finite numbers (pixels), got {str(box)[:60]}"
    x0, y0, x1, y1 = box
    if x0 < 0 or y0 < 0:
        return f"label[{i}].box {box}: x0 and y0 must be >= 0 (pixels from the image's top-left corner)"
    if not (x1 > x0 and y1 > y0):
        return f"label[{i}].box {box}: need x1 > x0 and y1 > y0 (corners [x0, y0, x1, y1], not width/height)"
    problem = _string_problem(item["label"])
    return f"label[{i}]: {problem}" if problem else None


def _coordinate(v: float) -> float | int:
    r = round(float(v), 2)
    return int(r) if r == int(r) else r


def _detection_problem(label: Any) -> str | None:
    if not isinstance(label, list):
        return f"a detection task takes a list of objects [{{box: [x0, y0, x1, y1], label}}], got {_shape(label)}"
    problem = next(filter(None, (_object_problem(i, item) for i, item in enumerate(label))), None)
    if problem:
        return problem
    stored = _compact([[99999, 99999], *([*(_coordinate(v) for v in o["box"]), o["label"]] for o in label)])
    if len(stored) > STRUCTURED_LABEL_CHARS:
        return (
            f"the objects take {len(stored)} characters as stored ([[w,h],[x0,y0,x1,y1,label],...]); the limit "
            f"is {STRUCTURED_LABEL_CHARS} (about 300 boxes with short labels): use fewer boxes per image"
        )
    return None


def _answer_problem(label: Any) -> str | None:
    if label is None:
        return None
    if not isinstance(label, dict):
        return f"an answers task takes {{start, end}} (offsets into the context) or null, got {_shape(label)}"
    if set(label) != {"start", "end"}:
        return f"an answer label has exactly the keys start and end, got {sorted(label)}"
    start, end = label["start"], label["end"]
    if not _exact_int(start) or not _exact_int(end):
        return f"start and end are integer character offsets into the context, got {start!r} and {end!r}"
    if not 0 <= start < end:
        return f"need 0 <= start < end (end exclusive), got start {start}, end {end}"
    return None


def _string_problem(label: Any) -> str | None:
    if not isinstance(label, str):
        return f"labels are strings, got {_shape(label)}"
    if not label.strip():
        return "a label must be a non-empty string"
    if len(label) > LABEL_CHARS:
        return f"a label has at most {LABEL_CHARS} characters, got {len(label)}"
    problem = unstorable(label)
    return f"a label {problem}" if problem else None


def label_problem(kind: str, label: Any) -> str | None:
    """Why ``label`` does not fit a task of ``kind`` (None when it does): classification takes one
    string, multilabel a non-empty list of distinct strings, regression a finite number, speakers one
    speaker name."""
    if kind == "classification":
        if not isinstance(label, str):
            return f"a classification task takes one label string, got {_shape(label)}"
        return _string_problem(label)
    if kind == "speakers":
        if not isinstance(label, str):
            return f"a speakers task takes one speaker name (a string), got {_shape(label)}"
        return _string_problem(label)
    if kind == "multilabel":
        if not isinstance(label, list):
            return f"a multilabel task takes a list of label strings, got {_shape(label)}"
        if not label:
            return "the label list is empty; give each example at least one label"
        problem = next(filter(None, (_string_problem(item) for item in label)), None)
        if problem:
            return f"in the label list: {problem}"
        if len(set(label)) != len(label):
            return f"the label list repeats a label: {label}"
        if len(json.dumps(sorted(label), ensure_ascii=False)) > LABEL_CHARS:
            return f"the label list is longer than {LABEL_CHARS} characters as JSON"
        return None
    if kind == "regression":
        if isinstance(label, bool) or not isinstance(label, int | float):
            return f"a regression task takes a number, got {_shape(label)}"
        try:
            finite = math.isfinite(float(label))
        except OverflowError:  # an int beyond float range
            finite = False
        return None if finite else f"the target must be a finite number, got {str(label)[:40]}"
    if kind == "entities":
        return _entities_problem(label)
    if kind == "answers":
        return _answer_problem(label)
    if kind == "generation":
        if not isinstance(label, str):
            return f"a generation task takes the completion (a string), got {_shape(label)}"
        if not label.strip():
            return "a completion must be a non-empty string"
        if len(label) > STRUCTURED_LABEL_CHARS:
            return f"a completion has at most {STRUCTURED_LABEL_CHARS} characters, got {len(label)}"
        problem = unstorable(label)
        return f"a completion {problem}" if problem else None
    if kind == "detection":
        return _detection_problem(label)
    return f"unknown task kind {kind!r}"


def _shape(label: Any) -> str:
    if label is None:
        return "null"
    if isinstance(label, bool):
        return "a boolean"
    if isinstance(label, list):
        return "a list"
    if isinstance(label, dict):
        return "an object"
    if isinstance(label, str):
        return f"the string {label[:40]!r}"
    return f"the number {label}" if isinstance(label, int | float) else type(label).__name__


class QuestionContext(Request):
    """An answers task's input: a question and the context that may answer it."""

    question: Text
    context: Text = Field(description="Answers are character offsets into this text.")


InputValue = Text | QuestionContext


def input_value(value: str | QuestionContext) -> str | dict[str, str]:
    """An input as plain JSON: a string, or ``{"question", "context"}``."""
    return value.model_dump() if isinstance(value, QuestionContext) else value


class ExampleIn(Request):
    input: InputValue = Field(
        description="A text, a base64-encoded PNG/JPEG/WebP image for image tasks, or a base64-encoded WAV file "
        "(PCM 16/24/32-bit or float, any rate, mono or stereo) for audio tasks; for answers tasks an object "
        "`{question, context}`."
    )
    label: LabelValue = Field(
        description="By the task's kind: one label string (classification), a non-empty list of label strings "
        "(multilabel), a finite number (regression), a speaker name (speakers), a list of spans "
        "`[{start, end, label}]` (entities: character offsets, end exclusive, no overlaps) or `{start, end}` into "
        "the context or `null` for no answer (answers), a list of objects `[{box: [x0, y0, x1, y1], label}]` in the "
        "image's pixels, `[]` for none (detection)."
    )


class TaskCreate(Request):
    name: Name
    modality: Modality = "text"
    kind: TaskKind = Field(
        default="classification",
        description="`classification`: one label per example (softmax heads). `multilabel`: a list of labels per "
        "example (one sigmoid per label, thresholds tuned by cross-validation). `regression`: a number per example "
        "(ridge regression on the embeddings). `speakers` (audio): a speaker name per clip; a prediction names the "
        "nearest enrolled speaker, or null under a threshold tuned to GRAFT_SPEAKER_FAR false accepts. `entities` "
        "(text): entity spans per text (a BIO tagger on the backbone's token states). `answers` (text): "
        "`{question, context}` inputs, the answer's offsets in the context or null (a start/end pointer on the "
        "token states). `generation` (text): a prompt and its completion per example (at most 8,192 characters); "
        "training fits a LoRA adapter on the server's language model, served by `POST /v1/tasks/{name}/generate`. "
        "`detection` (image): objects `[{box, label}]` per image (a CenterNet-style head on the CNN's feature maps; "
        "docs/detection.md).",
    )
    backbone: str | None = Field(
        default=None,
        description="Backbone name, or `auto`: the modality's backbone with the highest transferability (LogME) "
        "on the task's examples, chosen at every training. Default: the modality's default backbone "
        "(`speakers` tasks: `resemblyzer-ge2e`).",
    )
    head: HeadKind | None = Field(
        default=None,
        description="`auto` (default): whichever head cross-validation scores best among `linear` "
        "(logistic regression on the frozen embeddings), `prototype` (nearest centroid), `baseline` "
        "(from-scratch TF-IDF + logistic regression, no backbone) and `hybrid` (both in one model); on text "
        "classification tasks with enough examples per label (`GRAFT_AUTO_FINETUNE_MIN_PER_LABEL`) also "
        "`finetune`, served only where it wins "
        "beyond noise on the same held-out examples. Or pin one of them. `finetune` (text and detection only): "
        "LoRA on the backbone's top layers plus a classifier, trained as a background job. Entities tasks: "
        "`tagger` (on the token states) or `word-tagger` (word features, no transfer), or `finetune` (LoRA on the"
        " top layers plus a token classifier); answers tasks: `pointer` or `word-pointer`; detection tasks: "
        "`detector` (on the frozen feature maps) or `scratch-detector` (no transfer), or `finetune` (the CNN's "
        "top two blocks trained with the detector head); `auto` serves whichever cross-validates better.",
    )
    labels: list[Label] | None = Field(
        default=None,
        description="Optional declared label set: every label must then have an example (not for regression).",
    )
    examples: list[ExampleIn] = Field(min_length=1)

    @model_validator(mode="after")
    def _labels_fit_kind(self) -> TaskCreate:
        for i, example in enumerate(self.examples):
            problem = label_problem(self.kind, example.label)
            if problem:
                raise ValueError(f"examples[{i}].label: {problem}")
            if (self.kind == "answers") != isinstance(example.input, QuestionContext):
                want = "an object {question, context}" if self.kind == "answers" else "a string"
                raise ValueError(f"examples[{i}].input: a {self.kind} task takes {want} per input")
        if self.head not in (None, "auto", *KIND_HEADS[self.kind]):
            owners = " or ".join(k for k, heads in KIND_HEADS.items() if self.head in heads)
            mine = "".join(f" or {h!r}" for h in KIND_HEADS[self.kind]) if len(KIND_HEADS[self.kind]) < 4 else ""
            raise ValueError(
                f"head {self.head!r} is for {owners} tasks; a {self.kind} task takes head 'auto'{mine} (or none)"
            )
        if self.kind in ("regression", "answers") and self.labels is not None:
            raise ValueError(f"a {self.kind} task has no label set: omit 'labels'")
        return self


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
    superseded_by: str | None = Field(
        None,
        description=(
            "For a `superseded` job: the id of the newer job of the same task that trains its examples instead."
        ),
    )


class ShadowFeedbackFigures(BaseModel):
    count: int = Field(description="Feedback rows on predictions this version also answered in shadow.")
    accuracy: float | None = Field(default=None, description="The shadow's accuracy on them.")
    mean_abs_error: float | None = Field(default=None, description="Regression: the shadow's mean absolute error.")
    active_accuracy: float | None = Field(
        default=None, description="The answering version's accuracy on the same rows (a paired comparison)."
    )
    active_mean_abs_error: float | None = Field(default=None, description="Regression: the answering version's.")


class ShadowFigures(BaseModel):
    version: int
    predictions: int = Field(description="Predict inputs it answered in shadow.")
    agreements: int = Field(description="Of those, answers equal to the answering version's.")
    agreement: float | None = Field(description="agreements / predictions.")
    feedback: ShadowFeedbackFigures


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
    status: VersionStatus = Field(
        description="`active`: serving; `previous`: was active before; `candidate`: never promoted (see `promotion`); "
        "`failed`: its stored weights would not load (see `error`)."
    )
    error: str | None = Field(default=None, description="Why a failed version could not be loaded.")
    accuracy: float | None = Field(
        description="Cross-validated accuracy of the served head (see `metrics.evaluation`)."
    )
    ece: float | None = Field(
        description="Expected calibration error of the cross-validated probabilities, after temperature scaling."
    )
    transferability: dict | None = Field(description="LogME of the examples on each backbone of the modality.")
    warnings: list[str]
    promotion: dict | None = Field(description="Whether and why this version was (not) promoted.")
    shadow: ShadowFigures | None = Field(
        default=None, description="How it fared answering in shadow (within the retention window), if it did."
    )


class VersionList(BaseModel):
    task: str
    active_version: int | None
    versions: list[VersionDetail]


class PromoteRequest(Request):
    version: int = Field(ge=1)


class ShadowConfig(BaseModel):
    version: int = Field(description="The candidate version answering in shadow (recorded, not returned).")
    share: float = Field(description="Share of predict requests it also answers.")


class TaskOut(BaseModel):
    name: str
    modality: str
    kind: str = Field(
        description="`classification`, `multilabel`, `regression`, `speakers`, `entities`, `answers`, `detection` or "
        "`generation`."
    )
    backbone: str
    head: str
    active_version: int | None
    created_at: datetime
    updated_at: datetime
    retrain_after_feedback: int | None = Field(
        default=None,
        description="Retrain policy: after this many new labelled feedback inputs, they become examples (source "
        "`feedback`) and a training job is queued; 0 never; null: GRAFT_RETRAIN_AFTER_FEEDBACK.",
    )
    shadow: ShadowConfig | None = Field(default=None, description="The version serving in shadow, if any.")


class TaskDetail(TaskOut):
    labels: list[str] = Field(description="Labels of the active version (what predict can answer).")
    examples_per_label: dict[str, int] = Field(description="Stored examples per label, all versions' data.")
    examples_per_source: dict[str, int] = Field(
        default_factory=dict,
        description="Stored examples by where they came from: `user` (sent as examples or datasets) or `feedback` "
        "(copied from feedback: POST /v1/tasks/{name}/feedback/promote or the retrain policy).",
    )
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
    inputs: list[InputValue] = Field(
        min_length=1,
        description="Texts, base64-encoded PNG/JPEG/WebP images for image tasks, or base64-encoded WAV files for "
        "audio tasks; objects `{question, context}` for answers tasks.",
    )
    top_k: int | None = Field(default=None, ge=1, description="How many labels `scores` lists; default all.")
    score_threshold: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="Detection tasks: the lowest score an object is answered with; default 0.3.",
    )
    max_objects: int | None = Field(
        default=None,
        ge=1,
        le=100,
        description="Detection tasks: most objects answered per image (the best "
        "after non-maximum suppression); default 100.",
    )


class PredictionCommon(BaseModel):
    """What every prediction carries besides its task kind's answer."""

    id: str | None = Field(
        default=None,
        description="Opaque id of this prediction: quote it in `POST /v1/tasks/{name}/feedback` to send the true "
        "label (docs/monitoring.md).",
    )
    ood: bool | None = Field(
        default=None,
        description="Whether the input lies out of the distribution of the version's training examples "
        "(`ood_score` > 1). Absent for versions without an OOD model (trained before it existed, too few examples, "
        "or a head that reads no embedding).",
    )
    ood_score: float | None = Field(
        default=None,
        description="Distance of the input's embedding (detection: its pooled feature map) from the training "
        "examples, as a multiple of the threshold calibrated to flag GRAFT_OOD_FPR (default 5 %) of in-distribution "
        "inputs.",
    )


class PredictionOut(PredictionCommon):
    label: str
    score: float
    scores: dict[str, float] = Field(description="Probabilities of the top_k labels, most probable first.")


class LabelScoreOut(BaseModel):
    label: str
    probability: float = Field(description="This label's own sigmoid probability (labels are independent).")
    threshold: float = Field(description="The label's decision threshold, tuned by cross-validation.")
    chosen: bool = Field(description="Whether the probability reaches the threshold.")


class MultiLabelPredictionOut(PredictionCommon):
    labels: list[str] = Field(
        description="The chosen labels (probability ≥ threshold), most probable first; may be empty."
    )
    scores: list[LabelScoreOut] = Field(description="The top_k labels by probability, most probable first.")


class RegressionPredictionOut(PredictionCommon):
    value: float = Field(description="The predicted number.")


class SpeakerScoreOut(BaseModel):
    label: str
    score: float = Field(description="Cosine similarity of the clip to this speaker's enrolled centroid.")


class SpeakerPredictionOut(PredictionCommon):
    speaker: str | None = Field(
        description="The most similar enrolled speaker, or null when the similarity is under the threshold "
        "(a speaker never enrolled)."
    )
    score: float = Field(description="The best cosine similarity.")
    threshold: float = Field(description="The similarity a speaker needs, tuned to the task's false-accept rate.")
    labels: list[SpeakerScoreOut] = Field(description="The top_k enrolled speakers by similarity, most similar first.")


class EntityOut(BaseModel):
    start: int = Field(description="First character of the entity in the input text.")
    end: int = Field(description="One past its last character (end exclusive).")
    label: str
    text: str = Field(description="The input's characters start..end.")
    score: float = Field(description="Geometric mean of its tokens' tag probabilities.")


class EntitiesPredictionOut(PredictionCommon):
    entities: list[EntityOut] = Field(description="The entities found, in text order; may be empty.")


class AnswerPredictionOut(PredictionCommon):
    answer: str | None = Field(description="The answer's text in the context, or null: no answer.")
    start: int | None = Field(description="Its first character in the context (null with no answer).")
    end: int | None = Field(description="One past its last character (null with no answer).")
    score: float = Field(description="The best span's probability; under the tuned threshold it is no answer.")


class DetectedObjectOut(BaseModel):
    box: list[float] = Field(
        min_length=4,
        max_length=4,
        description="[x0, y0, x1, y1] in the input image's pixels (its top-left corner is 0, 0).",
    )
    label: str
    score: float = Field(description="The heatmap peak's probability that an object of this label is centred here.")


class DetectionPredictionOut(PredictionCommon):
    objects: list[DetectedObjectOut] = Field(
        description="The objects found, after per-label non-maximum suppression, highest score first; may be empty."
    )


AnyPredictionOut = (
    PredictionOut
    | MultiLabelPredictionOut
    | RegressionPredictionOut
    | SpeakerPredictionOut
    | EntitiesPredictionOut
    | AnswerPredictionOut
    | DetectionPredictionOut
)
Predictions = (  # one task: one kind
    list[PredictionOut]
    | list[MultiLabelPredictionOut]
    | list[RegressionPredictionOut]
    | list[SpeakerPredictionOut]
    | list[EntitiesPredictionOut]
    | list[AnswerPredictionOut]
    | list[DetectionPredictionOut]
)


class PredictResponse(BaseModel):
    task: str
    version: int
    predictions: Predictions = Field(
        description="Per input, by the task's kind: classification `{label, score, scores}`; multilabel "
        "`{labels, scores: [{label, probability, threshold, chosen}]}`; regression `{value}`; speakers "
        "`{speaker | null, score, threshold, labels: [{label, score}]}`; entities "
        "`{entities: [{start, end, label, text, score}]}`; answers `{answer, start, end, score}`; detection "
        "`{objects: [{box, label, score}]}`."
    )


# -- generation ------------------------------------------------------------------------------


class GenerateRequest(Request):
    inputs: list[Text] = Field(
        min_length=1,
        description="Prompts (one user turn each). At most GRAFT_GENERATION_MAX_INPUTS; each counts against the "
        "predict rate.",
    )
    max_tokens: int = Field(
        default=64, ge=1, description="Most new tokens per input (at most GRAFT_GENERATION_MAX_TOKENS)."
    )
    temperature: float = Field(default=0.0, ge=0.0, le=2.0, description="0 (default): greedy decoding.")
    top_p: float = Field(
        default=1.0,
        gt=0.0,
        le=1.0,
        description="Nucleus sampling: the smallest set of tokens "
        "whose probabilities reach top_p (with temperature > 0).",
    )
    stop: list[Annotated[StrictStr, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=4, description="Up to 4 stop strings; the text ends before the first one."
    )
    seed: int | None = Field(default=None, description="Seed of the sampling (temperature > 0), per input.")
    stream: bool = Field(
        default=False,
        description="true: Server-Sent Events, one `token` event per generated token per input "
        "(`{index, text, token}`), then one `done` event with the whole response.",
    )


class GeneratedOut(BaseModel):
    text: str
    tokens: int = Field(description="Tokens generated (the end-of-turn token not counted).")
    finish_reason: Literal["stop", "length", "cancelled"] = Field(
        description="`stop`: the end of the turn or a stop string; `length`: max_tokens reached."
    )


class GenerateResponse(BaseModel):
    task: str
    version: int
    outputs: list[GeneratedOut]


class GenerateToken(BaseModel):
    """One streamed event (`event: token`): new text of input `index`."""

    index: int
    text: str
    token: int | None = None


# -- active learning -------------------------------------------------------------------------

SUGGEST_K = 20  # suggestions when a request names no k (fewer when the pool is smaller)


class SuggestRequest(Request):
    inputs: list[Text] = Field(
        min_length=1,
        description="The unlabelled pool: texts, or base64-encoded images for image tasks. At most "
        "GRAFT_MAX_SUGGEST_INPUTS; each counts against the predict rate.",
    )
    k: int | None = Field(
        default=None, ge=1, description=f"How many to suggest, at most the pool's size; default {SUGGEST_K}."
    )


class SuggestResponse(BaseModel):
    task: str
    version: int = Field(description="The version whose uncertainty chose them.")
    indices: list[int] = Field(description="Positions in `inputs` worth labelling next, best first; distinct.")
    scores: list[float] = Field(
        description="Each one's uncertainty in [0, 1]: 1 minus the margin between its two most probable labels "
        "(1.0 for regression, where suggestions only cover the input space; detection: the same for its most "
        "ambiguous heatmap peak, 1 - |2p - 1|, docs/detection.md)."
    )


# -- feedback and monitoring -------------------------------------------------------------------


class FeedbackItem(Request):
    id: str | None = Field(
        default=None,
        max_length=2048,
        description="The `id` of the prediction this label is for, exactly as predict returned it.",
    )
    input: Text | None = Field(
        default=None,
        description="The input (text, or base64 image): needed when there is no `id` (the active version then "
        "predicts it); with an `id`, a text input is stored with the label.",
    )
    label: LabelValue = Field(description="The true label, in the task kind's form (as for examples).")


class FeedbackRequest(Request):
    items: list[FeedbackItem] = Field(min_length=1, description="At most GRAFT_MAX_FEEDBACK_ITEMS.")


class FeedbackAccepted(BaseModel):
    task: str
    accepted: int = Field(description="Items stored by this request.")
    kept: int = Field(description="Feedback rows the task keeps now (within the retention window and cap).")
    examples_added: int = Field(
        default=0, description="Feedback inputs the task's retrain policy copied into its examples (source `feedback`)."
    )
    job: JobOut | None = Field(default=None, description="The training job the retrain policy queued, if it did.")
    retrain_note: str | None = Field(default=None, description="Why the policy's retrain was not queued (a quota).")


class FeedbackPromoted(BaseModel):
    task: str
    examples_added: int = Field(description="Labelled feedback inputs copied into the examples (source `feedback`).")
    job: JobOut | None = Field(description="The training job queued for them; null when nothing was waiting.")


class TaskSettings(Request):
    retrain_after_feedback: int | None = Field(
        default=None,
        ge=0,
        le=1_000_000,
        description="After this many new labelled feedback inputs, copy them into the examples and queue a "
        "training job; 0: never; null: the service default (GRAFT_RETRAIN_AFTER_FEEDBACK).",
    )


class ShadowRequest(Request):
    share: float = Field(gt=0.0, le=1.0, description="Share of predict requests the version also answers.")


class FeedbackFigures(BaseModel):
    count: int = Field(description="Feedback rows (true labels) received.")
    accuracy: float | None = Field(
        default=None,
        description="Share of answers equal to the true label (multilabel: the exact set); null without feedback "
        "or for regression.",
    )
    mean_abs_error: float | None = Field(default=None, description="Regression: mean absolute error.")
    ood_flagged: int = Field(default=0, description="Rows whose input was flagged out of distribution.")
    accuracy_flagged: float | None = Field(default=None, description="Accuracy on the flagged inputs.")
    accuracy_unflagged: float | None = Field(default=None, description="Accuracy on the inputs not flagged.")


class OodFigures(BaseModel):
    scored: int = Field(description="Predicted inputs given an OOD score within the window (this process).")
    flagged: int = Field(description="Of those, flagged `ood`.")
    flag_rate: float | None = Field(description="flagged / scored; null when nothing was scored.")
    mean_score: float | None = Field(description="Mean `ood_score` (1.0 is the threshold).")


class ActiveOodFigures(OodFigures):
    expected_rate: float | None = Field(
        description="The active version's calibrated false-positive rate: the flag rate of in-distribution inputs."
    )
    window_s: float = Field(description="The sliding window of the OOD figures, in seconds.")


class VersionMonitoring(BaseModel):
    version: int
    feedback: FeedbackFigures
    ood: OodFigures


class ShadowMonitoring(BaseModel):
    version: int | None = Field(description="The version serving in shadow now (null: none).")
    share: float | None
    versions: list[ShadowFigures] = Field(description="Versions that answered in shadow within the window.")


class DriftWindow(BaseModel):
    ends_s_ago: float = Field(description="How long ago the window ended (0: the current one).")
    scored: int
    flagged: int
    flag_rate: float | None
    mean_score: float | None
    z: float | None = Field(
        description="The flag count's binomial z-score against the calibrated rate: (flagged - n·fpr) / "
        "sqrt(n·fpr·(1-fpr)); within about ±2 in distribution."
    )


class DriftFigures(BaseModel):
    window_s: float = Field(description="Each window's length in seconds.")
    windows: list[DriftWindow] = Field(description="Oldest first, covering the OOD window.")
    latest: DriftWindow | None = Field(description="The most recent window with scored inputs.")
    shifted: bool = Field(description="The latest window has >= 20 scored inputs and z > 3: the inputs moved.")


class RetrainPolicyOut(BaseModel):
    after_feedback: int = Field(description="The policy in force (the task's, else the default); 0: never.")
    pending_feedback: int = Field(description="Labelled feedback inputs not yet copied into the examples.")


class MonitoringOut(BaseModel):
    task: str
    active_version: int | None
    window_days: float = Field(description="Feedback older than this is deleted (GRAFT_FEEDBACK_RETENTION_DAYS).")
    feedback: FeedbackFigures = Field(description="Feedback on the active version's answers.")
    ood: ActiveOodFigures = Field(
        description="The active version's recent predictions: flag rate against the expected rate. Counted per "
        "process (each replica answers for the predictions it served)."
    )
    per_version: list[VersionMonitoring] = Field(description="Every version with feedback or recent predictions.")
    shadow: ShadowMonitoring = Field(description="The version in shadow now, and every version's shadow figures.")
    drift: DriftFigures = Field(description="The active version's OOD figures over time (this process).")
    retrain: RetrainPolicyOut


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
