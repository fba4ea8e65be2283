"""Generation: ``POST /v1/tasks/{name}/generate`` answers the prompts with the task's active LoRA adapter on
the process's language model, as one JSON answer or (``"stream": true``) as Server-Sent Events: one ``token``
event per generated token per input, then one ``done`` event with the whole answer. A client that goes away
cancels its rows (they leave the decoding batch at the next step)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from adapters.generation import Completion, SamplingParams
from graft import schemas as s

from ...application import generate as use
from .deps import ERRORS, RuntimeDep, TenantDep

router = APIRouter(prefix="/v1")

DISCONNECT_POLL_S = 0.25

STREAM = {
    "content": {
        "text/event-stream": {
            "schema": {"type": "string"},
            "example": 'event: token\ndata: {"index": 0, "text": "Paris", "token": 42}\n\n'
            'event: done\ndata: {"task": "capitals", "version": 1, "outputs": [...]}\n\n',
        }
    },
    "description": "With `stream: true`: Server-Sent Events (`token` events, then one `done` event).",
}


def _response(gen: use.Generation, completions: list[Completion]) -> s.GenerateResponse:
    return s.GenerateResponse(
        task=gen.task.name,
        version=gen.version,
        outputs=[s.GeneratedOut(text=c.text, tokens=c.tokens, finish_reason=c.finish_reason) for c in completions],  # type: ignore[arg-type]
    )


async def _watch(request: Request, gen: use.Generation) -> None:
    """Cancel ``gen`` when the client disconnects."""
    while not gen.done:
        if await request.is_disconnected():
            gen.cancel()
            return
        await asyncio.sleep(DISCONNECT_POLL_S)


def _event(name: str, data: str) -> bytes:
    return f"event: {name}\ndata: {data}\n\n".encode()


async def _stream(request: Request, gen: use.Generation) -> AsyncIterator[bytes]:
    watcher = asyncio.create_task(_watch(request, gen))
    try:
        async for piece in gen.pieces():
            if piece.token is not None:  # one event per generated token (its text may be held back: "")
                token = s.GenerateToken(index=piece.index, text=piece.delta, token=piece.token)
                yield _event("token", token.model_dump_json())
        completions = [gen.completions[i] for i in range(len(gen.request.prompts))]
        yield _event("done", _response(gen, completions).model_dump_json())
    finally:  # the client went away (the response is cancelled) or the stream ended
        gen.cancel()
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


@router.post(
    "/tasks/{name}/generate",
    response_model=s.GenerateResponse,
    responses={**ERRORS, 200: STREAM},
)
async def generate(
    name: str, body: s.GenerateRequest, request: Request, rt: RuntimeDep, me: TenantDep
) -> s.GenerateResponse | StreamingResponse:
    """Complete each prompt with the task's active adapter (see the module's docstring). Every limit is
    checked before anything is sent, so a refused request is a JSON error even with ``stream``."""
    params = SamplingParams(
        max_tokens=body.max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        stop=tuple(body.stop),
        seed=body.seed,
    )
    gen = await use.start(rt, me.id, name, body.inputs, params)
    if body.stream:
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(_stream(request, gen), media_type="text/event-stream", headers=headers)
    watcher = asyncio.create_task(_watch(request, gen))
    try:
        completions = await gen.result()
    finally:
        gen.cancel()
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    return _response(gen, completions)


__all__ = ["generate", "router"]
