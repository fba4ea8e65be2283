"""Test-only fault injection: stop the process at a named point, so tests can kill -9 it there.

``GRAFT_FAULT_POINT=name[:n]`` makes the n-th (default: first) arrival of this process at point
``name`` write ``GRAFT_FAULT_MARKER`` (a file path, if set), log it and block that thread for good —
the process is then killed by the test. Unset (always, outside tests), a point is one environment
lookup. Points (see docs/security.md): ``training`` (head fitted, nothing written), ``version_commit``
(new version and job rows written, not committed), ``version_switch`` (promote/rollback written, not
committed), ``examples_commit`` (a create/append/upload's rows written, not committed).
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from pathlib import Path

from .logs import get as get_logger

ENV = "GRAFT_FAULT_POINT"
MARKER_ENV = "GRAFT_FAULT_MARKER"
POINTS = ("training", "version_commit", "version_switch", "examples_commit")

log = get_logger("faults")
_hits: Counter[str] = Counter()
_lock = threading.Lock()


def point(name: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    wanted, _, nth = spec.partition(":")
    if wanted != name:
        return
    with _lock:
        _hits[name] += 1
        if _hits[name] != int(nth or 1):
            return
    log.warning("fault point reached: this thread stops here", extra={"point": name})
    marker = os.environ.get(MARKER_ENV)
    if marker:
        Path(marker).write_text(name)
    while True:  # until the test kills the process
        time.sleep(3600)
