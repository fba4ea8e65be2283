"""Progress bars (one line on stderr, redrawn in place) for uploads and training jobs.

``enabled``: True shows them, False hides them, None shows them when stderr is a terminal. The
standard library only: the client distribution depends on httpx and pydantic alone.
"""

from __future__ import annotations

import sys
import time
from collections.abc import AsyncIterator, Iterator

from . import schemas as s

CHUNK = 256 * 1024
WIDTH = 20  # characters of the bar itself
REDRAW_S = 0.1  # at most this often, except when forced (a job's new status, the last state)


def _shown(enabled: bool | None, stream: object) -> bool:
    if enabled is not None:
        return enabled
    isatty = getattr(stream, "isatty", None)
    return bool(isatty is not None and isatty())


def _size(n: float) -> str:
    """Bytes in binary units: ``512 B``, ``1.5 KiB``, ``2.0 MiB``."""
    if n < 1024:
        return f"{n:.0f} B"
    for unit in ("KiB", "MiB", "GiB"):
        n /= 1024
        if n < 1024 or unit == "GiB":
            break
    return f"{n:.1f} {unit}"


def _clock(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 60:02d}:{whole % 60:02d}"


class Bar:
    """``desc: 42%|########            | detail``, written over itself with ``\\r``.

    ``leave``: keep the last state on its line when closed (else the line is cleared).
    """

    def __init__(
        self, desc: str, total: int, enabled: bool | None, leave: bool = True, n: int = 0, postfix: str = ""
    ) -> None:
        self.desc, self.total, self.n, self.postfix, self.leave = desc, total, n, postfix, leave
        self._stream = sys.stderr
        self._on = _shown(enabled, self._stream)
        self._start = time.monotonic()
        self._drawn_at: float | None = None
        self._width = 0
        self.draw(force=True)

    def detail(self) -> str:
        return self.postfix

    def text(self) -> str:
        fraction = min(max(self.n / self.total, 0.0), 1.0) if self.total > 0 else 1.0
        filled = round(fraction * WIDTH)
        bar = "#" * filled + " " * (WIDTH - filled)
        return f"{self.desc}: {fraction * 100:3.0f}%|{bar}| {self.detail()}".rstrip()

    def update(self, n: int) -> None:
        self.n += n
        self.draw()

    def draw(self, force: bool = False) -> None:
        if not self._on:
            return
        now = time.monotonic()
        if not force and self._drawn_at is not None and now - self._drawn_at < REDRAW_S:
            return
        self._drawn_at = now
        line = self.text()
        self._stream.write("\r" + line.ljust(self._width))
        self._stream.flush()
        self._width = len(line)

    def close(self) -> None:
        if not self._on:
            return
        self.draw(force=True)
        self._stream.write("\n" if self.leave else "\r" + " " * self._width + "\r")
        self._stream.flush()
        self._on = False


class _UploadBar(Bar):
    def detail(self) -> str:
        return f"{_size(self.n)}/{_size(self.total)}"


def chunks(data: bytes, desc: str, enabled: bool | None) -> Iterator[bytes]:
    """``data`` in chunks, advancing an upload bar as the transport takes them."""
    bar = _UploadBar(desc, len(data), enabled, leave=False)
    try:
        for start in range(0, len(data), CHUNK):
            piece = data[start : start + CHUNK]
            yield piece
            bar.update(len(piece))
    finally:
        bar.close()


async def achunks(data: bytes, desc: str, enabled: bool | None) -> AsyncIterator[bytes]:
    for piece in chunks(data, desc, enabled):
        yield piece


class _JobLine(Bar):
    def detail(self) -> str:
        return f"{_clock(time.monotonic() - self._start)} {self.postfix}"


class JobBar:
    """A 0–100 % bar that follows a training job's ``progress`` and ``status``."""

    def __init__(self, job: s.JobOut, enabled: bool | None) -> None:
        self._bar = _JobLine(f"training {job.task}", 100, enabled, n=round(job.progress * 100), postfix=job.status)

    def update(self, job: s.JobOut) -> None:
        self._bar.n = max(self._bar.n, round(job.progress * 100))
        self._bar.postfix = job.status
        self._bar.draw(force=True)

    def close(self) -> None:
        self._bar.close()
