"""Prediction ids: what feedback on a prediction needs, carried by the prediction's id itself.

An id is ``<uuid4 hex>.<payload>`` where the payload (URL-safe base64 of a JSON list) holds a digest of
the task's id, the version that answered, its answer in the task kind's stored-label form and whether the
input was flagged out of distribution. Feedback
that quotes the id (``POST /v1/tasks/{name}/feedback``) is then measured against the version that
actually answered, without the predict path writing anything to the store (a predict request makes no
store round trip while its caches are warm). Clients treat ids as opaque strings.

An id is not signed: a tenant can forge one only for its own task, which misleads only its own accuracy
figures; the task digest makes an id quoted on another task fail with a clear error (docs/monitoring.md).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import uuid
from dataclasses import dataclass

MAX_ID_CHARS = 2048  # an id longer than this is not one of ours (the longest answer: 256 labels' names)


class BadPredictionId(ValueError):
    """The string is not a prediction id of this task."""


@dataclass(frozen=True)
class PredictionRef:
    version: int
    answer: str | None  # the predicted answer, stored-label encoded (TaskKind.encode); None: not measured
    ood: bool | None  # whether the input was flagged out of distribution; None: its version scores none
    nonce: str  # the id's random part


def _task_digest(task_id: str) -> str:
    return hashlib.sha256(task_id.encode()).hexdigest()[:8]


def _payload(task_id: str, version: int, answer: str | None, ood: bool | None) -> str:
    payload = json.dumps([_task_digest(task_id), version, answer, ood], ensure_ascii=False, separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def new_id(task_id: str, version: int, answer: str | None, ood: bool | None = None) -> str:
    """A fresh id; an answer too long for an id (a multilabel answer of very many labels) is left out: feedback
    on it is stored but not measured."""
    encoded = _payload(task_id, version, answer, ood)
    if len(encoded) > MAX_ID_CHARS - 33:
        encoded = _payload(task_id, version, None, ood)
    return f"{uuid.uuid4().hex}.{encoded}"


def read_id(task_id: str, prediction_id: str) -> PredictionRef:
    """The version and answer an id of task ``task_id`` records; :class:`BadPredictionId` otherwise."""
    nonce, _, encoded = prediction_id.partition(".")
    if len(prediction_id) > MAX_ID_CHARS or len(nonce) != 32 or not encoded:
        raise BadPredictionId("not a prediction id: send the 'id' of a prediction exactly as predict returned it")
    try:
        payload = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadPredictionId("not a prediction id: send the 'id' exactly as predict returned it") from None
    if (
        not isinstance(payload, list)
        or len(payload) != 4
        or not isinstance(payload[1], int)
        or isinstance(payload[1], bool)
        or not isinstance(payload[2], str | None)
        or not isinstance(payload[3], bool | None)
    ):
        raise BadPredictionId("not a prediction id: send the 'id' exactly as predict returned it")
    if payload[0] != _task_digest(task_id):
        raise BadPredictionId("this prediction id was issued by another task; send feedback to the task that predicted")
    return PredictionRef(payload[1], payload[2], payload[3], nonce)
