"""Speaker identification (audio): one speaker name per example clip; a cosine nearest-centroid head on a
speaker encoder's embeddings (``resemblyzer-ge2e`` by default) with an open-set answer. A prediction
names the most similar enrolled speaker when its similarity reaches a threshold, else ``null`` (a speaker
never enrolled), with the top-k speakers' similarities.

The threshold is tuned to a stated false-accept rate (``far``, GRAFT_SPEAKER_FAR): leaving each enrolled
speaker out in turn, that speaker's clips play strangers, scored against the other speakers' centroids
(a centroid is made of its own speaker's clips only, so the full centroids serve). The threshold is the
lowest at which at most ``far`` of those stranger scores would be accepted. The reported false-accept rate
is cross-fitted (each speaker's stranger scores judged by a threshold tuned on the other speakers'), and
the closed-set accuracy and false-reject rate come from stratified K-fold centroids. Next to it, the
no-transfer baseline: the same nearest-centroid rule on standardised MFCC summaries of the clips.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from sklearn.model_selection import StratifiedKFold

from .. import diagnostics
from ..encoding import encode_labels
from ..heads import Head
from ..heads.speaker import SpeakerHead, centroids_of, normalise
from ..selection import Decision, compare_on_unseen
from ..training import FitResult, TrainingDataError, single_threaded_blas
from .base import TaskKind, label_set_problem, register_kind, shape, string_problem

NAME = "speakers"
BACKBONE = "resemblyzer-ge2e"
DEFAULT_FAR = 0.05
UNKNOWN = ""  # an open-set "no enrolled speaker" decision, as compared with stored labels (never empty)


@dataclass(frozen=True)
class SpeakerScore:
    label: str
    score: float

    def as_json(self) -> dict[str, Any]:
        return {"label": self.label, "score": self.score}


@dataclass(frozen=True)
class SpeakerPrediction:
    speaker: str | None  # None: by no enrolled speaker
    score: float  # the best cosine similarity
    threshold: float
    labels: list[SpeakerScore]  # the top_k speakers by similarity

    def as_json(self) -> dict[str, Any]:
        return {
            "speaker": self.speaker, "score": self.score, "threshold": self.threshold,
            "labels": [one.as_json() for one in self.labels],
        }


def threshold_at(stranger: np.ndarray, far: float) -> float:
    """The lowest threshold at which at most ``far`` of the ``stranger`` scores reach it (accepted: ≥)."""
    if len(stranger) == 0:
        return -1.0
    ordered = np.sort(stranger)[::-1]
    allowed = int(math.floor(far * len(ordered) + 1e-9))
    if allowed >= len(ordered):
        return float(ordered[-1])
    return float(np.nextafter(np.float32(ordered[allowed]), np.float32(np.inf)))


def stranger_scores(x: np.ndarray, y: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Each clip's best similarity to the *other* speakers' centroids (the clip playing a stranger)."""
    sims = normalise(x.astype(np.float32)) @ centroids.T
    sims[np.arange(len(y)), y] = -np.inf
    return sims.max(axis=1)


def cross_fitted_far(stranger: np.ndarray, y: np.ndarray, n: int, far: float) -> float:
    """The false-accept rate of each speaker's stranger scores at a threshold tuned without that speaker."""
    accepted = 0
    for k in range(n):
        mine = y == k
        accepted += int((stranger[mine] >= threshold_at(stranger[~mine], far)).sum())
    return accepted / len(y)


def _oof_similarities(x: np.ndarray, y: np.ndarray, n: int, splits: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    out = np.zeros((len(y), n), dtype=np.float32)
    for train, test in splits:
        out[test] = normalise(x[test].astype(np.float32)) @ centroids_of(x[train], y[train], n).T
    return out


def _mfcc_rows(raw: Sequence[Any]) -> np.ndarray:
    from ..audio_features import stored_mfcc_summary

    rows = np.stack([stored_mfcc_summary(clip) for clip in raw]).astype(np.float64)
    return (rows - rows.mean(axis=0)) / np.maximum(rows.std(axis=0), 1e-3)


@single_threaded_blas
def fit_speakers(
    x: np.ndarray, names: Sequence[str], *, raw: Sequence[Any] | None = None, far: float = DEFAULT_FAR,
    folds: int = 5, seed: int = 0,
) -> FitResult:
    """Fit a :class:`SpeakerHead` on embeddings ``x`` and each clip's speaker name."""
    if len(names) != len(x):
        raise TrainingDataError("inputs and labels differ in length")
    if not 0.0 <= far < 1.0:
        raise TrainingDataError(f"the false-accept rate must be in [0, 1), got {far}")
    speakers, y = encode_labels(names)
    if len(speakers) < 2:
        raise TrainingDataError("at least 2 speakers are needed: the unknown threshold is tuned on the others")
    counts = dict(sorted(Counter(names).items()))
    head = SpeakerHead(speakers, far=far).fit(x, y)
    stranger = stranger_scores(x, y, head.centroids)
    head.threshold = threshold_at(stranger, far)
    metrics: dict[str, Any] = {
        "kind": NAME, "head": SpeakerHead.kind, "speakers": len(speakers), "examples_per_label": counts,
        "open_set": {
            "threshold": round(head.threshold, 4), "far_target": far,
            "far_cross_fitted": cross_fitted_far(stranger, y, len(speakers), far),
            "method": "leave-one-speaker-out: each speaker's clips scored against the other speakers' centroids",
        },
        "warnings": [],
    }
    fewest = min(counts.values())
    if fewest < 2:
        metrics.update(evaluation="train", too_small_to_fold=True)
        metrics["warnings"].append(
            "A speaker has a single clip: closed-set accuracy was not cross-validated. Enrol at least 2 clips per "
            "speaker (5 or more for a steadier threshold)."
        )
        return FitResult(head=head, metrics=metrics)
    splitter = StratifiedKFold(n_splits=min(folds, fewest), shuffle=True, random_state=seed)
    splits = list(splitter.split(np.zeros(len(y)), y))
    sims = _oof_similarities(x, y, len(speakers), splits)
    closed = sims.argmax(axis=1)
    decided = np.where(sims[np.arange(len(y)), closed] >= head.threshold, closed, -1)
    accuracy = float(np.mean(closed == y))
    metrics.update(
        evaluation="cv", folds=len(splits), accuracy=accuracy,
        confusion_matrix=diagnostics.confusion(y, closed, speakers),
        per_label=diagnostics.per_label(y, closed, speakers),
    )
    metrics["open_set"].update(
        accuracy=float(np.mean(decided == y)), false_reject_rate=float(np.mean(decided != y)),
    )
    if raw is not None:
        baseline_closed = _oof_similarities(_mfcc_rows(raw), y, len(speakers), splits).argmax(axis=1)
        baseline = float(np.mean(baseline_closed == y))
        metrics["baseline"] = {"method": "nearest centroid on standardised MFCC summaries (no transfer)",
                               "accuracy": baseline}
        if baseline > accuracy:
            metrics["warnings"].append(
                f"Transfer did not help: the MFCC baseline named {100 * baseline:.1f}% of the clips' speakers in "
                f"cross-validation, the speaker embeddings {100 * accuracy:.1f}%."
            )
    return FitResult(head=head, metrics=metrics, oof_pred=decided)


@register_kind
class Speakers(TaskKind):
    name = NAME
    modalities: ClassVar[tuple[str, ...]] = ("audio",)
    dataset_uploads = True  # a zip of <speaker>/<clip>.wav

    def problem(self, label: Any) -> str | None:
        if not isinstance(label, str):
            return f"a speakers task takes one speaker name (a string), got {shape(label)}"
        return string_problem(label)

    def encode(self, label: Any) -> str:
        return str(label)

    def decode(self, stored: str) -> Any:
        return stored

    def names(self, stored: Sequence[str]) -> list[str]:
        return list(stored)

    def examples_problem(self, labels: Sequence[Any], declared: Sequence[str] | None) -> str | None:
        return label_set_problem(set(labels), declared)

    def default_backbone(self, modality: str) -> str | None:
        return BACKBONE

    def fit(
        self, x: np.ndarray, labels: Sequence[Any], *, head: str, raw: Sequence[str] | None, modality: str,
        folds: int, seed: int,
    ) -> FitResult:
        return fit_speakers(x, labels, raw=raw, folds=folds, seed=seed)

    def fit_with(
        self, x: np.ndarray, labels: Sequence[Any], *, options: dict[str, Any], head: str,
        raw: Sequence[str] | None, modality: str, folds: int, seed: int,
    ) -> FitResult:
        far = float(options.get("speaker_far", DEFAULT_FAR))
        return fit_speakers(x, labels, raw=raw, far=far, folds=folds, seed=seed)

    def comparable(self, result: FitResult) -> bool:
        return result.oof_pred is not None

    def compare(
        self, active: Head, vectors: np.ndarray | None, raw: Sequence[str], truth: Sequence[str], result: FitResult,
        unseen: np.ndarray, active_number: int,
    ) -> Decision:
        def named(decisions: np.ndarray, speakers: list[str]) -> list[str]:
            return [speakers[i] if i >= 0 else UNKNOWN for i in decisions]

        assert isinstance(active, SpeakerHead) and result.oof_pred is not None
        active_pred = named(active.accepted(active.predict_proba(vectors)), active.labels)
        new_pred = named(result.oof_pred[unseen], result.head.labels)
        return compare_on_unseen(truth, new_pred, active_pred, active_number)

    def format(self, head: Head, output: np.ndarray, top_k: int | None) -> list[Any]:
        threshold = float(head.threshold)  # type: ignore[attr-defined]
        k = len(head.labels) if top_k is None else min(top_k, len(head.labels))
        out = []
        for sims in output:
            order = np.argsort(-sims, kind="stable")
            best = float(sims[order[0]])
            out.append(SpeakerPrediction(
                speaker=head.labels[order[0]] if best >= threshold else None, score=best,
                threshold=round(threshold, 4), labels=[SpeakerScore(head.labels[j], float(sims[j])) for j in order[:k]],
            ))
        return out

    def manifest(self, head: Head) -> dict[str, Any]:
        return {"threshold": float(head.threshold)}  # type: ignore[attr-defined]
