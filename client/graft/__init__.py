"""Graft's Python client and the API schemas it shares with the server.

Importing this package must stay light (pydantic and httpx only, never torch): the schemas
module is the one source of truth for request and response bodies on both sides of the wire.
``from graft import Graft, AsyncGraft`` loads the client on first use, so the server, which imports
only ``graft.schemas``, never loads httpx.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .client import AsyncGraft, Graft

__all__ = ["AsyncGraft", "Graft"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import client

        return getattr(client, name)
    raise AttributeError(f"module 'graft' has no attribute {name!r}")
