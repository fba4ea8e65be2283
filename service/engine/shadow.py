"""Shadow answers: what a candidate version answered on a share of live predict traffic, beside the active
version's answer (docs/monitoring.md, "Shadow versions").

The predict path makes no store round trip while its caches are warm, so the records are buffered here and
written by a background thread every ``flush_s`` seconds (and before monitoring reads them). The buffer is
bounded: beyond ``max_pending`` records (a store that cannot keep up), new ones are dropped and counted.
At shutdown the buffer is written once more; a killed process loses at most ``flush_s`` seconds of them.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from .. import logs
from ..store.repository import NewShadow, Store

log = logs.get("shadow")


class ShadowLog:
    def __init__(
        self,
        store: Store,
        *,
        retention_days: float,
        max_rows_per_task: int,
        flush_s: float = 2.0,
        max_pending: int = 10_000,
    ) -> None:
        self.store = store
        self.retention_days, self.max_rows_per_task = retention_days, max_rows_per_task
        self.flush_s, self.max_pending = flush_s, max_pending
        self.dropped = 0  # records lost to a full buffer
        self._pending: list[NewShadow] = []
        self._lock = threading.Lock()
        self._write = threading.Lock()  # one flush at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, rows: Sequence[NewShadow]) -> None:
        with self._lock:
            room = self.max_pending - len(self._pending)
            if room < len(rows):
                self.dropped += len(rows) - max(room, 0)
                rows = rows[: max(room, 0)]
            self._pending.extend(rows)
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, name="graft-shadow-log", daemon=True)
                self._thread.start()

    def flush(self) -> int:
        """Write the buffered records now (monitoring calls it, so it reports this process's latest)."""
        with self._write:
            with self._lock:
                rows, self._pending = self._pending, []
            if rows:
                self.store.add_shadow_records(rows, retention_days=self.retention_days, max_rows=self.max_rows_per_task)
            return len(rows)

    def _run(self) -> None:
        while not self._stop.wait(self.flush_s):
            try:
                self.flush()
            except Exception:  # the store is down: these records are lost, later ones are tried again
                log.exception("shadow answers could not be written")

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self.flush()
        except Exception:
            log.exception("shadow answers could not be written at shutdown")
