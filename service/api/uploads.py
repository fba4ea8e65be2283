"""Request bodies that carry files: read with a byte cap, so an upload can never outgrow the limit.

Bodies spool to a temporary file past 8 MiB. Multipart bodies are parsed by Starlette's parser
from the same capped stream (``Request.form()`` would accept any size of file part).
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import IO

from fastapi import Request
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from .errors import ApiError

SPOOL_BYTES = 8 * 1024 * 1024


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
        form = await MultiPartParser(request.headers, _capped(request, limit), max_files=max_files, max_fields=16).parse()
    except MultiPartException as exc:
        if "Too many files" in exc.message:
            raise ApiError(413, "too_large", f"more than {max_files} files in one request; the limit is {max_files}") from None
        raise ApiError(400, "bad_request", f"malformed multipart body: {exc.message}") from None
    files = [
        Upload(value.file, value.filename or "", value.content_type or "")
        for _, value in form.multi_items()
        if isinstance(value, UploadFile)
    ]
    for upload in files:
        upload.file.seek(0)
    return files, form
