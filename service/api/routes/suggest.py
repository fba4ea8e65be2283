"""Active learning: which inputs of an unlabelled pool are worth labelling next (docs/monitoring.md).

Role ``predict``: like predict, it reads the task and runs inputs through its active version, and it
changes nothing; its cost is bounded by GRAFT_MAX_SUGGEST_INPUTS and the predict rate."""

from __future__ import annotations

from fastapi import APIRouter

from graft import schemas as s

from ...application import suggest as use
from .deps import ERRORS, RuntimeDep, TenantDep

router = APIRouter(prefix="/v1")


@router.post("/tasks/{name}/suggest", response_model=s.SuggestResponse, responses=ERRORS)
async def suggest(name: str, body: s.SuggestRequest, rt: RuntimeDep, me: TenantDep) -> s.SuggestResponse:
    """The `k` inputs of the pool the task's active version is most uncertain about, spread over the pool."""
    n = len(body.inputs)
    k = body.k if body.k is not None else min(s.SUGGEST_K, n)
    use.check_pool(rt, me.id, n, k)  # size and k, then one rate token per input
    ref, version, indices, scores = await use.suggest(
        rt, me.id, name, body.inputs, [f"inputs[{i}]" for i in range(n)], k
    )
    return s.SuggestResponse(task=ref.name, version=version, indices=indices, scores=scores)
