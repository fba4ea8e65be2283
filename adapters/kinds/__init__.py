"""Task kinds as plug-ins: each kind's module registers one :class:`TaskKind` (``@register_kind``, see
:mod:`.base`); importing this package imports them all, so :data:`KINDS` is full before anyone reads it.
A new kind is one module here plus its import below.
"""

from .answers import AnswerPrediction, Answers
from .base import (
    AUTO,
    KINDS,
    LABEL_CHARS,
    STRUCTURED_LABEL_CHARS,
    KindPrediction,
    TaskKind,
    UnknownKind,
    kind_of,
    register_kind,
    unstorable,
)
from .classification import Classification, Prediction, top_predictions
from .detection import SIZE as DETECTION_SIZE
from .detection import TUNED_BLOCKS as DETECTION_TUNED_BLOCKS
from .detection import DetectedObject, Detection, DetectionPrediction, Placed
from .detection import Tuning as DetectionTuning
from .entities import Entities, EntitiesPrediction, Entity
from .fitting import fit_multilabel, fit_regression, indicator, tune_thresholds
from .generation import Generation
from .multilabel import LabelScore, MultiLabel, MultiLabelPrediction, multilabel_predictions
from .regression import Regression, RegressionPrediction
from .speakers import SpeakerPrediction, Speakers, SpeakerScore, fit_speakers
from .tokens import Finetuning, TokenKind, head_from_bytes

DEFAULT = Classification.name  # a task that names no kind; a dataset upload's new task

__all__ = [
    "AUTO",
    "AnswerPrediction",
    "Answers",
    "Classification",
    "DEFAULT",
    "DETECTION_SIZE",
    "DETECTION_TUNED_BLOCKS",
    "DetectedObject",
    "Detection",
    "DetectionTuning",
    "DetectionPrediction",
    "Entities",
    "Generation",
    "EntitiesPrediction",
    "Entity",
    "KINDS",
    "KindPrediction",
    "LABEL_CHARS",
    "STRUCTURED_LABEL_CHARS",
    "Finetuning",
    "LabelScore",
    "MultiLabel",
    "MultiLabelPrediction",
    "Placed",
    "Prediction",
    "Regression",
    "RegressionPrediction",
    "SpeakerPrediction",
    "SpeakerScore",
    "Speakers",
    "TaskKind",
    "TokenKind",
    "UnknownKind",
    "fit_multilabel",
    "fit_regression",
    "fit_speakers",
    "head_from_bytes",
    "indicator",
    "kind_of",
    "multilabel_predictions",
    "register_kind",
    "top_predictions",
    "tune_thresholds",
    "unstorable",
]
