"""Request bodies that carry files: read with a byte cap, so an upload can never outgrow the limit.

Bodies spool to a temporary file past 8 MiB, in the process's temporary directory, which the runtime
sets to ``GRAFT_UPLOAD_SPOOL_DIR`` (multipart parts spool there too). Multipart bodies are parsed by
Starlette's parser from the same capped stream (``Request.form()`` would accept any size of file part).
A tenant sends one upload at a time per process (:func:`one_upload`): a second one meanwhile is 429,
so one tenant cannot fill the spool directory with many maximal bodies at once.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import AsyncGenerator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO

from fastapi import Request
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from .errors import ApiError

SPOOL_BYTES = 8 * 1024 * 1024
UPLOAD_RETRY_S = 5

_uploading: set[str] = set()
_uploading_lock = threading.Lock()


@contextmanager
def one_upload(tenant_id: str) -> Iterator[None]:
    """Hold the tenant's one upload slot of this process, or refuse with 429."""
    with _uploading_lock:
        if tenant_id in _uploading:
            raise ApiError(
                429,
                "upload_in_progress",
                "this tenant is already sending an upload; send one upload at a "
                "time (wait for the other to be answered)",
                {"Retry-After": str(UPLOAD_RETRY_S)},
            )
        _uploading.add(tenant_id)
    try:
        yield
    finally:
        with _uploading_lock:
            _uploading.discard(tenant_id)


@dataclass
class Upload:
    file: IO[bytes]
    filename: str
    content_type: str


async def _capped(request: Request, limit: int) -> AsyncGenerator[bytes, None]:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "too_large", f"the upload is {declared} bytes; the limit is {limit} bytes")
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > limit:
            raise ApiError(413, "too_large", f"the upload is larger than the limit of {limit} bytes")
        yield chunk


def is_multipart(request: Request) -> bool:
    return request.headers.get("content-type", "").lower().startswith("multipart/form-data")


async def read_body(request: Request, limit: int) -> Upload:
    """The raw body as a file (rewound)."""
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)
    async for chunk in _capped(request, limit):
        spool.write(chunk)
    spool.seek(0)
    return Upload(spool, "", request.headers.get("content-type", ""))


async def read_form(request: Request, limit: int, max_files: int) -> tuple[list[Upload], FormData]:
    """Files (in order) and the form, from a multipart body of at most ``limit`` bytes."""
    try:
        form = await MultiPartParser(
            request.headers, _capped(request, limit), max_files=max_files, max_fields=16
        ).parse()
    except MultiPartException as exc:
        if "Too many files" in exc.message:
            raise ApiError(
                413, "too_large", f"more than {max_files} files in one request; the limit is {max_files}"
            ) from None
        raise ApiError(400, "bad_request", f"malformed multipart body: {exc.message}") from None
    files = [
        Upload(value.file, value.filename or "", value.content_type or "")
        for _, value in form.multi_items()
        if isinstance(value, UploadFile)
    ]
    for upload in files:
        upload.file.seek(0)
    return files, form
