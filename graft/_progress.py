"""Progress bars (tqdm, on stderr) for uploads and training jobs.

``enabled``: True shows them, False hides them, None shows them when stderr is a terminal.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

from tqdm import tqdm

from . import schemas as s

CHUNK = 256 * 1024


def _disable(enabled: bool | None) -> bool | None:
    return None if enabled is None else not enabled


def chunks(data: bytes, desc: str, enabled: bool | None) -> Iterator[bytes]:
    """``data`` in chunks, advancing an upload bar as the transport takes them."""
    with tqdm(total=len(data), desc=desc, unit="B", unit_scale=True, unit_divisor=1024, disable=_disable(enabled),
              leave=False) as bar:
        for start in range(0, len(data), CHUNK):
            piece = data[start:start + CHUNK]
            yield piece
            bar.update(len(piece))


async def achunks(data: bytes, desc: str, enabled: bool | None) -> AsyncIterator[bytes]:
    for piece in chunks(data, desc, enabled):
        yield piece


class JobBar:
    """A 0–100 % bar that follows a training job's ``progress`` and ``status``."""

    def __init__(self, job: s.JobOut, enabled: bool | None) -> None:
        self._bar = tqdm(total=100, desc=f"training {job.task}", unit="%", disable=_disable(enabled),
                         bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed} {postfix}")
        self.update(job)

    def update(self, job: s.JobOut) -> None:
        done = round(job.progress * 100)
        if done > self._bar.n:
            self._bar.update(done - self._bar.n)
        self._bar.set_postfix_str(job.status, refresh=True)

    def close(self) -> None:
        self._bar.close()
