"""BentoML wiring only: build the runtime in the worker, mount the HTTP API, hook readiness
and graceful shutdown. Heavy imports (torch, transformers) happen in ``__init__``."""

from __future__ import annotations

import os

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import bentoml  # noqa: E402
from starlette.types import ASGIApp, Receive, Scope, Send  # noqa: E402

from .api.app import create  # noqa: E402
from .api.errors import error_response  # noqa: E402
from .api.outer import JsonErrors  # noqa: E402

api = create()


class WorkerOnly:
    """``GRAFT_ROLE=worker``: the process trains; every API route answers 503 so a misrouted request is
    told where to go (BentoML's own ``/livez``, ``/readyz`` and ``/metrics`` are outside and still answer)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        runtime = getattr(api.state, "runtime", None)
        if scope["type"] == "http" and runtime is not None and not runtime.serves:
            response = error_response(
                503,
                "worker_process",
                "this process is a training worker (GRAFT_ROLE=worker) and serves no API; send requests to the api "
                "service",
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


api.add_middleware(WorkerOnly)


@bentoml.service(name="graft", workers=1, traffic={"timeout": 600})
@bentoml.asgi_app(api, path="/")
class Graft:
    def __init__(self) -> None:
        from . import logs
        from .config import Settings
        from .runtime import Runtime

        settings = Settings.from_env()
        logs.configure(settings.log_level, settings.log_json)
        self.runtime = Runtime(settings)
        api.state.runtime = self.runtime

    def __is_ready__(self) -> bool:
        return self.runtime.ready

    def __metrics__(self, exposition: str) -> str:
        from .metrics import without_raw_paths

        return without_raw_paths(exposition)

    @bentoml.on_shutdown
    def shutdown(self) -> None:
        self.runtime.close()


Graft.add_asgi_middleware(JsonErrors)  # type: ignore[attr-defined]  # a bentoml.Service at run time; bentoml's typing leaves type[Graft]. Around BentoML's own routing: its errors are JSON too
