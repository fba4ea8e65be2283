"""The predict use case: per-request limits and the tenant's rate, then the router resolves the task's
active head, the inputs are decoded for its backbone (service/application/inputs.py) and the router runs
them through the shared backbone pass."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from adapters import heads

from ..router import Served, TaskRef
from ..runtime import Runtime
from .errors import TooLarge
from .inputs import Input, prepare_inputs


def check_inputs(rt: Runtime, tenant_id: str, n: int) -> None:
    """A predict request's size and the tenant's rate (one token per input)."""
    limit = rt.settings.max_predict_inputs
    if n > limit:
        raise TooLarge(f"{n} inputs in one predict request; the limit is {limit}")
    rt.predict_rate.take(tenant_id, n)


async def predict(
    rt: Runtime,
    tenant_id: str,
    name: str,
    inputs: Sequence[Input],
    names: Sequence[str],
    top_k: int | None,
    options: dict[str, Any] | None = None,
) -> tuple[TaskRef, int, list[Served]]:
    """Predict with the task's active version; ``names`` say where each input came from (error messages);
    ``options``: the kind's request options (detection: ``score_threshold``, ``max_objects``)."""
    ref, number, head = await rt.router.head(tenant_id, name)
    model_inputs, raw = await prepare_inputs(rt, ref, rt.router.backbone_of(ref, head), head, inputs, names)
    shadow = await rt.router.shadow_for(ref, head)  # a candidate also answering this request, in shadow
    if shadow is not None and raw is None and heads.RAW in shadow[1].consumes:
        shadow = None  # it reads raw inputs the active head's request did not decode
    return ref, number, await rt.router.run(ref, head, model_inputs, raw, top_k, shadow, options=options)
