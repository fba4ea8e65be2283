"""Graft's Python client and the API schemas it shares with the server.

Importing this package must stay light (pydantic and httpx only, never torch): the schemas module is
the one source of truth for request and response bodies on both sides of the wire.
"""
