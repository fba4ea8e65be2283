"""The client's progress bars (graft/_progress.py, the standard library only): what they write to stderr."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest

from graft import _progress
from graft import schemas as s


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def job(status: str, progress: float) -> s.JobOut:
    return s.JobOut.model_validate(
        {
            "id": "j1",
            "task": "news",
            "status": status,
            "progress": progress,
            "error": None,
            "version": None,
            "created_at": datetime.now(UTC),
            "started_at": None,
            "finished_at": None,
        }
    )


def test_an_upload_bar_counts_bytes_and_clears_its_line(monkeypatch: pytest.MonkeyPatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    data = bytes(3 * _progress.CHUNK + 10)
    assert b"".join(_progress.chunks(data, "uploading news.csv", enabled=True)) == data
    text = err.getvalue()
    assert text.startswith("\ruploading news.csv:   0%|" + " " * _progress.WIDTH + "| 0 B/768.0 KiB")
    assert "uploading news.csv: 100%|" + "#" * _progress.WIDTH + "| 768.0 KiB/768.0 KiB" in text
    assert text.endswith("\r")  # leave=False: the line is blanked when the upload is done
    last = text.rstrip("\r").rsplit("\r", 1)[-1]
    assert last.strip() == ""


def test_a_job_bar_follows_progress_and_status_and_stays(monkeypatch: pytest.MonkeyPatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    bar = _progress.JobBar(job("queued", 0.0), enabled=True)
    bar.update(job("running", 0.42))
    bar.update(job("running", 0.3))  # never goes back
    bar.update(job("succeeded", 1.0))
    bar.close()
    lines = [line.rstrip() for line in err.getvalue().split("\r") if line]
    assert lines[0].startswith("training news:   0%|") and lines[0].endswith("queued")
    assert lines[1].startswith("training news:  42%|########") and lines[1].endswith("running")
    assert lines[2].startswith("training news:  42%|")
    assert lines[-1].startswith("training news: 100%|" + "#" * _progress.WIDTH + "| 00:0")
    assert lines[-1].endswith("succeeded") and err.getvalue().endswith("\n")


@pytest.mark.parametrize(
    ("enabled", "stream", "shown"),
    [
        (None, io.StringIO(), False),
        (None, Terminal(), True),
        (False, Terminal(), False),
        (True, io.StringIO(), True),
    ],
)
def test_bars_show_on_a_terminal_unless_told(
    monkeypatch: pytest.MonkeyPatch, enabled: bool | None, stream: io.StringIO, shown: bool
) -> None:
    monkeypatch.setattr("sys.stderr", stream)
    list(_progress.chunks(b"x" * 10, "uploading x", enabled))
    bar = _progress.JobBar(job("running", 0.5), enabled)
    bar.close()
    assert bool(stream.getvalue()) == shown
