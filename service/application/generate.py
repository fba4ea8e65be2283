"""The generate use case: per-request limits and the tenant's rate, the task's active adapter, then the
process's generation scheduler (service/engine/generation.py), whose pieces arrive here as they are decoded.

:func:`start` checks everything that can be refused (so a streamed answer never starts with an error to
send): the number of inputs, the rate (one token per input), the task (a generation task of this tenant with an
active version), each prompt's tokens and the sampling values. :class:`Generation` then yields the pieces
(:meth:`Generation.pieces`) or the whole answer (:meth:`Generation.result`); :meth:`Generation.cancel` (the
client went away) takes its rows out of the batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import anyio.to_thread

from adapters import kinds
from adapters.generation import Completion, GenerationDataError, LoraWeights, SamplingParams

from .. import logs
from ..engine.generation import Piece, Request, Scheduler
from ..router import NotTrained, TaskRef, VersionFailed, WrongKind
from ..runtime import Runtime
from .errors import TooLarge

log = logs.get("generation")


@dataclass
class Generation:
    """A generate call admitted to the scheduler."""

    task: TaskRef
    version: int
    scheduler: Scheduler
    request: Request
    queue: asyncio.Queue[Piece]
    completions: dict[int, Completion] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return len(self.completions) == len(self.request.prompts)

    async def pieces(self) -> AsyncIterator[Piece]:
        """Each piece as it is decoded (a token's text of one input; an input's completion when it ends)."""
        while not self.done:
            piece = await self.queue.get()
            if piece.completion is not None:
                self.completions[piece.index] = piece.completion
            yield piece

    async def result(self) -> list[Completion]:
        """Every input's completion, in input order (after :meth:`cancel`: what was decoded until then)."""
        async for _ in self.pieces():
            pass
        return [self.completions[i] for i in range(len(self.request.prompts))]

    def cancel(self) -> None:
        if not self.done:
            self.scheduler.cancel(self.request)


def check_inputs(rt: Runtime, tenant_id: str, n: int) -> None:
    """A generate request's size and the tenant's rate (one token per input, as predict)."""
    limit = rt.settings.generation_max_inputs
    if n > limit:
        raise TooLarge(f"{n} inputs in one generate request; the limit is {limit} (GRAFT_GENERATION_MAX_INPUTS)")
    rt.predict_rate.take(tenant_id, n)


def _task(rt: Runtime, tenant_id: str, name: str) -> tuple[TaskRef, int]:
    ref = rt.router.tasks.get((tenant_id, name)) or rt.router.lookup(tenant_id, name)  # NotFound: 404
    if not kinds.kind_of(ref.kind).generates:
        raise WrongKind(
            f"task {name!r} is a {ref.kind} task: generate serves generation tasks only; use "
            f"POST /v1/tasks/{name}/predict"
        )
    if ref.active_version is None:
        raise NotTrained(
            f"task {name!r} has no active adapter yet: poll its job and retry when it succeeds (an adapter that is "
            "not better than the base model on held-out examples is kept as a candidate, not activated)"
        )
    return ref, ref.active_version


def _weights(rt: Runtime, ref: TaskRef, number: int) -> LoraWeights:
    """The version's adapter from its safetensors blob (never unpickled); a corrupt one marks it failed."""
    version = rt.store.version(ref.id, number, with_weights=True)
    if version.error:
        raise VersionFailed(f"version {number} failed to load earlier (its stored adapter is corrupt); retrain")
    try:
        return LoraWeights.from_bytes(version.weights)
    except (GenerationDataError, KeyError, ValueError) as exc:
        error = f"{type(exc).__name__}: {exc}"[:500]
        log.error("an adapter failed to load; its version is marked failed", extra={"version": number, "error": error})
        rt.store.mark_version_failed(ref.id, number, error)
        raise VersionFailed(f"version {number} failed to load (its stored adapter is corrupt); retrain") from None


async def start(rt: Runtime, tenant_id: str, name: str, prompts: Sequence[str], params: SamplingParams) -> Generation:
    """Admit a generate call (see the module's docstring); raises the domain error that refuses it."""
    check_inputs(rt, tenant_id, len(prompts))
    ref, number = await anyio.to_thread.run_sync(_task, rt, tenant_id, name)
    ids = await anyio.to_thread.run_sync(rt.generation.prompt_ids, prompts, params)  # loads the model once
    key = f"{ref.id}:{number}"
    loaded = None if rt.generation.resident(key) else await anyio.to_thread.run_sync(_weights, rt, ref, number)

    def weights() -> LoraWeights:  # in the scheduler thread: read again only if evicted meanwhile
        return loaded if loaded is not None else _weights(rt, ref, number)

    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Piece] = asyncio.Queue()

    def sink(piece: Piece) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, piece)
        except RuntimeError:  # the request's loop is gone
            pass

    request = Request(ids, params, sink, adapter=key, weights=weights, task=ref.id)
    scheduler = rt.generation.start()
    scheduler.submit(request)  # Overloaded: 503 + Retry-After
    return Generation(ref, number, scheduler, request, queue)
