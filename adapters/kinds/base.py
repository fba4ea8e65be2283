"""A task kind: everything that depends on what an example's label is.

One :class:`TaskKind` subclass per kind, registered with :func:`register_kind` (the way heads register
with ``adapters.heads.register``), owns the kind's label validation and storage codec, which heads apply
and how they are fitted, the promotion comparison, the prediction's form and what an export adds to its
manifest. Nothing outside ``adapters/kinds/`` branches on a kind's name: the service and the HTTP layer
look the kind up (:func:`kind_of`) and ask it. A new kind is one module with one registered subclass.

Labels arrive as JSON values (a string, a list, a number, a dict…); :meth:`TaskKind.problem` says why
one does not fit, :meth:`TaskKind.encode` turns a valid one into the one string the store keeps per
example and :meth:`TaskKind.decode` reads it back. Predictions are objects with ``as_json()`` (the
answer's JSON for one input), so a kind whose predictions are not a top-k label list (spans, answers)
needs nothing from the predict route.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar, Protocol, TypeVar

import numpy as np

from ..heads import Head, heads_for
from ..heads import to_bytes as heads_to_bytes
from ..selection import Decision
from ..training import FitResult

AUTO = "auto"
LABEL_CHARS = 256  # a stored label: a class name, a multi-label list as JSON, or a number (graft/schemas.py agrees)
# A stored label that is a structure or free text (entity spans, detection objects, a completion): the examples'
# label column is Text (migration 0009), so this bounds the work one example brings, not a column (schemas agree).
STRUCTURED_LABEL_CHARS = 8192


class UnknownKind(ValueError):
    """No task kind of that name is registered."""

    code: ClassVar[str] = "validation_error"


class KindPrediction(Protocol):
    """One input's prediction, as the kind answers it."""

    def as_json(self) -> dict[str, Any]:
        """The prediction as the API's JSON answer for one input."""


def unstorable(value: str) -> str | None:
    """Why a string cannot be stored as is (None when it can): NUL characters (PostgreSQL text
    cannot hold them) and lone surrogates (not encodable as UTF-8). graft/schemas.py checks the same
    at the JSON edge (the client cannot import the server); tests/service/test_errors_table.py keeps them equal."""
    if "\x00" in value:
        return "must not contain NUL (\\u0000) characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid unicode (no lone surrogates)"
    return None


def shape(label: Any) -> str:
    """A label's JSON type in words, for error messages."""
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


def string_problem(label: Any) -> str | None:
    """Why ``label`` is not a storable label string (None when it is)."""
    if not isinstance(label, str):
        return f"labels are strings, got {shape(label)}"
    if not label.strip():
        return "a label must be a non-empty string"
    if len(label) > LABEL_CHARS:
        return f"a label has at most {LABEL_CHARS} characters, got {len(label)}"
    problem = unstorable(label)
    return f"a label {problem}" if problem else None


def label_set_problem(present: set[str], declared: Sequence[str] | None) -> str | None:
    """A new task's label names: the declared set (if any) covered exactly, and at least two."""
    if declared is not None:
        unknown = sorted(present - set(declared))
        if unknown:
            return f"examples use labels not in 'labels': {unknown[:10]}"
        missing = sorted(set(declared) - present)
        if missing:
            return f"every label needs at least one example; none for {missing[:10]}"
    if len(present) < 2:
        return f"at least 2 distinct labels are needed; got {sorted(present)}"
    return None


class TaskKind(ABC):
    """What a task's labels are, and everything that follows from it. Subclasses set the class
    variables and implement the abstract methods; :func:`register_kind` makes one known."""

    name: ClassVar[str]
    modalities: ClassVar[tuple[str, ...]] = ("text", "image")
    # heads a task of this kind may pin besides "auto" (empty: the kind's own head, chosen by "auto")
    pinnable_heads: ClassVar[tuple[str, ...]] = ()
    # backbone "auto" (the modality's backbone with the best LogME on the labels, per training) applies
    chooses_backbone: ClassVar[bool] = False
    declares_labels: ClassVar[bool] = True  # a new task may declare its label set ("labels")
    dataset_uploads: ClassVar[bool] = False  # dataset files (one label string per row or folder) hold its labels
    # dataset files hold its labels as JSON structures: JSON Lines rows (and, for image kinds, a zip of images with
    # one annotations.jsonl / labels.json mapping file name -> label), each checked by the kind's own problem()
    structured_uploads: ClassVar[bool] = False
    # fit and predict read the text backbone's per-token states, not pooled embeddings (adapters/kinds/tokens.py)
    reads_token_states: ClassVar[bool] = False
    # fit and predict read an image backbone's feature maps of letterboxed images (adapters/kinds/detection.py)
    reads_feature_maps: ClassVar[bool] = False
    # examples are (prompt, completion); training fits a LoRA adapter on the server's causal LM
    # (adapters/kinds/generation.py) and the task answers generate, not predict (no head, no backbone pass)
    generates: ClassVar[bool] = False
    # the export formats (GET /v1/tasks/{name}/export?format=...) a version of this kind may have: "onnx" (one
    # graph, adapters/export.py; export_problem() may still refuse it) or "peft" (a generation task's LoRA
    # adapter as a PEFT adapter directory, adapters/generation/peft_export.py)
    export_formats: ClassVar[tuple[str, ...]] = ("onnx",)

    # -- inputs ---------------------------------------------------------------------------------

    def input_problem(self, value: Any) -> str | None:
        """Why an input (a JSON value, or an uploaded file's bytes) does not fit this kind; None when it
        does. Most kinds take one string (a text, or a base64 image) per input."""
        if isinstance(value, str | bytes):
            return None
        owners = " or ".join(k.name for k in KINDS.values() if k.takes_objects) or "no"
        return f"a {self.name} task takes one string per input, got {shape(value)} (objects are for {owners} tasks)"

    takes_objects: ClassVar[bool] = False  # inputs are JSON objects (e.g. {question, context})

    def input_chars(self, value: Any) -> int:
        """How many characters an input counts against ``GRAFT_MAX_TEXT_CHARS``."""
        return len(value)

    def encode_input(self, value: Any) -> Any:
        """A valid input as the store keeps it (a string; images are normalised by the service)."""
        return value

    def decode_input(self, stored: str) -> Any:
        """A stored input back as the value it was."""
        return stored

    def example_problem(self, value: Any, label: Any) -> str | None:
        """Why a valid label does not fit its (valid) input, e.g. a span past the text's end; None when it does."""
        return None

    # -- labels ---------------------------------------------------------------------------------

    @abstractmethod
    def problem(self, label: Any) -> str | None:
        """Why ``label`` (a JSON value) does not fit this kind; None when it does."""

    @abstractmethod
    def encode(self, label: Any) -> str:
        """A valid label as the one string the store keeps."""

    def encode_example(self, value: Any, label: Any) -> str:
        """A valid label of the (valid) input ``value`` as the store keeps it; most kinds need only the label,
        detection also keeps the image's size (its boxes are in the caller's pixels)."""
        return self.encode(label)

    @abstractmethod
    def decode(self, stored: str) -> Any:
        """A stored label back as the value it was (the store is trusted: labels are checked before)."""

    def decode_all(self, stored: Sequence[str]) -> list[Any]:
        return [self.decode(one) for one in stored]

    @abstractmethod
    def names(self, stored: Sequence[str]) -> list[str]:
        """The label names in stored labels (a label-count quota counts these)."""

    def per_label(self, counts: dict[str, int]) -> dict[str, int]:
        """Examples per label from stored-label counts (``{stored label: examples}``)."""
        return counts

    @abstractmethod
    def examples_problem(self, labels: Sequence[Any], declared: Sequence[str] | None) -> str | None:
        """Why a new task's labels (each already valid) cannot make a task, e.g. fewer than two distinct
        ones, or not the ``declared`` set; None when they can."""

    # -- new tasks ------------------------------------------------------------------------------

    def new_task_problem(self, modality: str, backbone: str | None, head: str) -> str | None:
        """Why a new task of this kind cannot have this modality, backbone (None: the default) and
        head (``auto`` or a head kind); None when it can."""
        if modality not in self.modalities:
            return f"a {self.name} task takes modality {' or '.join(map(repr, self.modalities))}, not {modality!r}"
        if head != AUTO and head not in self.pinnable_heads:
            owners = " or ".join(k.name for k in KINDS.values() if head in k.pinnable_heads) or "no"
            mine = "".join(f" or {h!r}" for h in self.pinnable_heads) if len(self.pinnable_heads) < 4 else ""
            return f"head {head!r} is for {owners} tasks; a {self.name} task takes head 'auto'{mine} (or none)"
        if backbone == AUTO and not self.chooses_backbone:
            owners = " or ".join(k.name for k in KINDS.values() if k.chooses_backbone) or "no"
            return f"backbone 'auto' is for {owners} tasks; name a {modality} backbone for a {self.name} task"
        return None

    # -- heads and fitting --------------------------------------------------------------------

    def heads(self) -> dict[str, type[Head]]:
        """The head classes registered for this kind, in rank order."""
        return heads_for(self.name)

    def default_backbone(self, modality: str) -> str | None:
        """The backbone a new task of this kind gets when it names none (None: the modality's default)."""
        return None

    def transfer_targets(self, labels: Sequence[Any]) -> np.ndarray | None:
        """Integer class targets for LogME transferability scores (None: the kind is not scored)."""
        return None

    @abstractmethod
    def fit(
        self,
        x: np.ndarray,
        labels: Sequence[Any],
        *,
        head: str,
        raw: Sequence[str] | None,
        modality: str,
        folds: int,
        seed: int,
    ) -> FitResult:
        """Fit the kind's head (``head``: ``auto`` or a pinned one) on embeddings ``x`` and decoded
        ``labels`` (and the raw inputs, for heads that read them), cross-validated, with metrics and the
        dashboard's figures in ``FitResult.metrics``."""

    def fit_with(
        self,
        x: np.ndarray,
        labels: Sequence[Any],
        *,
        options: dict[str, Any],
        head: str,
        raw: Sequence[str] | None,
        modality: str,
        folds: int,
        seed: int,
    ) -> FitResult:
        """:meth:`fit` given the service's settings a kind may read (``options``, e.g. ``speaker_far``);
        a kind that reads none need not override it."""
        return self.fit(x, labels, head=head, raw=raw, modality=modality, folds=folds, seed=seed)

    # -- out-of-distribution scores ---------------------------------------------------------------

    # a version gets an OOD model of its training embeddings (adapters/ood.py), so predictions say ``ood``
    scores_ood: ClassVar[bool] = True

    def ood_groups(self, labels: Sequence[Any]) -> list[str] | None:
        """Per decoded label, the group whose mean the OOD model measures an example from (class-conditional
        distances); None: one mean for all examples (a kind without one class per example)."""
        return None

    # -- active learning ------------------------------------------------------------------------

    def uncertainty_proba(self, output: np.ndarray) -> np.ndarray | None:
        """The head's output per input (n, ...) as probabilities (n, >= 2) whose top-two margin says how
        uncertain the head is (adapters/active.py); None: the kind has none, suggestions cover the input
        space instead (k-center)."""
        return None

    # -- promotion ------------------------------------------------------------------------------

    @abstractmethod
    def comparable(self, result: FitResult) -> bool:
        """Whether ``result`` has out-of-fold predictions to compare with the active version."""

    @abstractmethod
    def compare(
        self,
        active: Head,
        vectors: np.ndarray | None,
        raw: Sequence[str],
        truth: Sequence[str],
        result: FitResult,
        unseen: np.ndarray,
        active_number: int,
    ) -> Decision:
        """Promotion: the active version's ``active`` head on the examples it never saw (``vectors``, their
        ``raw`` inputs, ``truth`` their stored labels) against ``result``'s out-of-fold predictions at
        ``unseen`` (see adapters/selection.py)."""

    # -- predictions and export -----------------------------------------------------------------

    @abstractmethod
    def format(self, head: Head, output: Any, top_k: int | None) -> list[KindPrediction]:
        """The head's output (one row per input; a token kind's: its answers already) as this kind answers it."""

    def to_bytes(self, head: Any, **provenance: Any) -> bytes:
        """The fitted head as the one blob a version stores (safetensors + JSON metadata, never pickled)."""
        return heads_to_bytes(head, **provenance)

    def export_problem(self) -> str | None:
        """Why a version of this kind has no ONNX export (None: it has one, see adapters/export.py)."""
        return None

    def export_format_problem(self, fmt: str) -> str | None:
        """Why this kind has no export in format ``fmt`` (one of the service's formats); None: it may have one."""
        if fmt in self.export_formats:
            return None
        owners = [k.name for k in KINDS.values() if fmt in k.export_formats]
        for_whom = f" (it is for {' and '.join(owners)} tasks)" if owners else ""
        ask = " or ".join(f"format={f}" for f in self.export_formats)
        return f"a {self.name} task has no {fmt!r} export{for_whom}; ask for {ask}"

    def answer(self, prediction: Any) -> Any:
        """The label value one of this kind's predictions answers (what feedback compares with the truth);
        None: the kind's feedback is stored but not measured."""
        return None

    def feedback_metrics(self, predicted: Sequence[Any], truth: Sequence[Any]) -> dict[str, float | None]:
        """How predictions (answers) compare with true labels sent as feedback (both decoded label values):
        ``accuracy`` (exact match) and any figure of the kind's own; None where there is nothing to measure."""
        pairs = [(self.encode(p), self.encode(t)) for p, t in zip(predicted, truth, strict=True)]
        return {"accuracy": sum(p == t for p, t in pairs) / len(pairs) if pairs else None}

    def manifest(self, head: Head) -> dict[str, Any]:
        """What an export's manifest adds for this kind (e.g. decision thresholds)."""
        return {}


# Every task kind by name. Filled by :func:`register_kind` as the kind modules are imported;
# adapters/kinds/__init__.py imports them all, so importing any part of ``adapters.kinds`` fills it.
KINDS: dict[str, TaskKind] = {}

K = TypeVar("K", bound=type[TaskKind])


def register_kind(cls: K) -> K:
    """Class decorator: make a task kind known under its ``name``."""
    known = KINDS.get(cls.name)
    if known is not None and type(known) is not cls:
        raise ValueError(f"task kind {cls.name!r} is already registered by {type(known).__qualname__}")
    KINDS[cls.name] = cls()
    return cls


def kind_of(name: str) -> TaskKind:
    """The registered task kind ``name``, or :class:`UnknownKind`."""
    try:
        return KINDS[name]
    except KeyError:
        raise UnknownKind(f"unknown task kind {name!r}; known: {sorted(KINDS)}") from None
