"""The suggest use case (active learning): of an unlabelled pool, the inputs worth labelling next.

The pool goes through the shared backbone pass like a predict request (it counts against the tenant's
predict rate, one token per input); the task's active head scores each input's uncertainty and
adapters/active.py picks ``k`` of the most uncertain that are also far apart in the embedding space
(margin x k-center; docs/monitoring.md). A detection task's pool goes through the map lane instead: its pooled
feature maps and the detector's uncertainty per image (docs/detection.md)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import anyio.to_thread
import numpy as np

from adapters import active, kinds

from ..router import TaskRef
from ..runtime import Runtime
from .errors import Invalid, TooLarge
from .inputs import Raw, prepare_inputs


def check_pool(rt: Runtime, tenant_id: str, n: int, k: int) -> None:
    """The pool's size, ``k`` against it, then the tenant's rate (one token per input)."""
    limit = rt.settings.max_suggest_inputs
    if n > limit:
        raise TooLarge(f"{n} inputs in one suggest request; the limit is {limit}. Send a sample of the pool.")
    if not 1 <= k <= n:
        raise Invalid(f"k must be between 1 and the pool's size ({n}), got {k}")
    rt.predict_rate.take(tenant_id, n)


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


async def suggest(
    rt: Runtime, tenant_id: str, name: str, inputs: Sequence[Raw], names: Sequence[str], k: int
) -> tuple[TaskRef, int, list[int], list[float]]:
    """The task, the version asked, indices into ``inputs`` of the ``k`` to label next, best first, and each
    one's uncertainty (1.0 for a kind without probabilities: regression suggestions only cover the input
    space)."""
    ref, number, head = await rt.router.head(tenant_id, name)
    if kinds.kind_of(ref.kind).reads_feature_maps:  # detection: pooled feature maps, the peaks' uncertainty
        if cast(kinds.Detection, kinds.kind_of(ref.kind)).tuned_blocks(head) is not None:
            raise Invalid(
                f"suggest is not available for version {number} of {name!r}: it fine-tunes the CNN's top blocks, "
                "and suggest ranks images by the frozen maps' pooled embedding; pin head 'detector' to use it"
            )
        placed, _ = await prepare_inputs(rt, ref, rt.router.backbone_of(ref, head), head, inputs, names)
        vectors, uncertainty = await rt.router.pool_maps(ref, head, placed)
        indices, scores = await anyio.to_thread.run_sync(
            lambda: active.suggest(vectors, k, uncertainty=uncertainty)
        )
        return ref, number, indices, scores
    if kinds.kind_of(ref.kind).reads_token_states:
        raise Invalid(
            f"suggest ranks inputs by their embedding and the head's uncertainty; a {ref.kind} task's head reads "
            "per-token states and has neither yet"
        )
    model_inputs, raw = await prepare_inputs(rt, ref, rt.router.backbone_of(ref, head), head, inputs, names)
    vectors, output = await rt.router.pool(ref, head, model_inputs, raw)
    proba = kinds.kind_of(ref.kind).uncertainty_proba(output)
    indices, scores = await anyio.to_thread.run_sync(lambda: active.suggest(_unit(vectors), k, proba=proba))
    return ref, number, indices, scores
