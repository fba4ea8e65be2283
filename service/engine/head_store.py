"""Heads of stored versions: loaded from their safetensors blobs (never unpickled), for the predict
path's head cache, the training pipeline's promotion comparison and exports alike. A token kind's
head (entities, answers) is a span head from its own registry (adapters/spans/heads.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from adapters import heads, kinds

from .. import logs
from ..store.models import Version
from ..store.repository import Store

log = logs.get("router")


class VersionFailed(Exception):
    """The active version's weights cannot be loaded (corrupt blob): it is marked failed and this
    task answers 503 until it is rolled back, promoted past or retrained; other tasks serve on."""


def store_head_loader(
    store: Store, trunk_of: Callable[[str], Any] | None = None
) -> Callable[[tuple[str, int]], heads.Head]:
    """Heads from their safetensors blobs (never unpickled). A blob that does not load marks its
    version failed (logged with ids only) and raises :class:`VersionFailed`. Fine-tuned heads are bound
    to their backbone's torch text model (``trunk_of(backbone name)``), which merges their LoRA updates
    into copies of its top layers; fine-tuned detection heads to its CNN (copies of its top blocks, their
    stored weights loaded)."""

    def load(key: tuple[str, int]) -> heads.Head:
        task_id, number = key
        version = store.version(task_id, number, with_weights=True)
        head = head_of(store, version)
        if heads.TRUNK in getattr(head, "consumes", ()) or getattr(head, "binds_cnn", False):
            source = trunk_of(version.backbone) if trunk_of is not None else None
            if source is None:
                raise RuntimeError(f"backbone {version.backbone!r} cannot serve fine-tuned heads here")
            head.bind(source)  # type: ignore[attr-defined]
        return head

    return load


def head_of(store: Store, version: Version) -> heads.Head:
    """The head of a version loaded with its weights; a corrupt one is marked failed (see above)."""
    advice = "roll back, promote another version or retrain"
    if version.error:
        raise VersionFailed(
            f"version {version.number} failed to load earlier (its stored weights are corrupt); {advice}"
        )
    try:
        return kinds.head_from_bytes(version.weights)  # a span head (entities, answers) or another head
    except Exception as exc:  # any corruption: HeadFormatError, bad metadata, wrong shapes
        error = f"{type(exc).__name__}: {exc}"[:500]
        log.error(
            "a head failed to load; its version is marked failed",
            extra={"task_id": version.task_id, "version": version.number, "error": error},
        )
        store.mark_version_failed(version.task_id, version.number, error)
        raise VersionFailed(
            f"version {version.number} failed to load (its stored weights are corrupt); {advice}"
        ) from None
