"""Shared fixtures: real data from ../shared/data, and real `bentoml serve` processes."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest

from service.config import SETTINGS

ROOT = Path(__file__).resolve().parents[1]
TEST_ONNX_CACHE = Path(os.environ.get("GRAFT_TEST_ONNX_CACHE", ROOT / "var" / "test-onnx-cache"))
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest only (benchmarks import this module too): head ``auto`` does not try fine-tuning in the
    servers the tests start (GRAFT_AUTO_FINETUNE_MIN_PER_LABEL=0), so the tests training ``auto`` text tasks on
    64+ examples per label stay fast; the tests of that feature set it (tests/service/test_auto_finetune.py)."""
    os.environ.setdefault("GRAFT_AUTO_FINETUNE_MIN_PER_LABEL", "0")


def shared_data_dir() -> Path:
    """``GRAFT_SHARED_DATA``, else ``../shared/data`` beside the checkout. Missing data fails, never skips."""
    for candidate in (os.environ.get("GRAFT_SHARED_DATA"), ROOT.parent / "shared" / "data", "/work/shared/data"):
        if candidate and (Path(candidate) / "bbc_news.train.jsonl").is_file():
            return Path(candidate)
    raise FileNotFoundError("shared data not found: set GRAFT_SHARED_DATA to the folder holding bbc_news.*.jsonl")


def load_jsonl(name: str) -> list[dict]:
    with (shared_data_dir() / name).open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def per_label(rows: list[dict], n: int, seed: int = 0) -> list[dict]:
    """n rows per label, drawn with a fixed seed (few-shot protocol)."""
    by_label: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_label[row["label"]].append(row)
    rng = random.Random(seed)
    out: list[dict] = []
    for label in sorted(by_label):
        out.extend(rng.sample(by_label[label], min(n, len(by_label[label]))))
    return out


@pytest.fixture(scope="session")
def bbc_train() -> list[dict]:
    return load_jsonl("bbc_news.train.jsonl")


@pytest.fixture(scope="session")
def bbc_test() -> list[dict]:
    return load_jsonl("bbc_news.test.jsonl")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    """A real `bentoml serve` process on a free port."""

    data_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    admin_token: str = "test-admin-token-0123456789abcdef"
    proc: subprocess.Popen | None = None
    log_path: Path | None = None
    target: str = "service.app:Graft"  # what `bentoml serve` runs (benchmarks also serve a peer)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180.0) -> Server:
        env = {
            **os.environ,
            "GRAFT_DATA_DIR": str(self.data_dir),
            "GRAFT_ADMIN_TOKEN": self.admin_token,
            "GRAFT_JOB_LEASE_S": "5",
            # BentoML keeps the workers' metric files in $BENTOML_HOME and wipes them at start:
            # every server gets its own, so concurrent servers never share or erase metrics
            "BENTOML_HOME": str(self.data_dir / f"bentoml-{self.port}"),
            # ONNX exports are keyed and checksummed: every test server can share one cache.
            "GRAFT_ONNX_CACHE_DIR": str(TEST_ONNX_CACHE),
            **self.env,
        }
        self.log_path = self.data_dir / f"server-{self.port}.log"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        bentoml = Path(sys.executable).parent / "bentoml"
        self.proc = subprocess.Popen(
            [str(bentoml), "serve", self.target, "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.logs()[-4000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"server not ready in {timeout}s:\n{self.logs()[-4000:]}")

    def pids(self) -> list[int]:
        """The server and its workers (BentoML starts each worker in a session of its own)."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        try:
            return [self.proc.pid, *(p.pid for p in psutil.Process(self.proc.pid).children(recursive=True))]
        except psutil.NoSuchProcess:
            return []

    def stop(self, sig: int = signal.SIGTERM, timeout: float | None = None) -> None:
        """SIGTERM: graceful shutdown, which may wait GRAFT_SHUTDOWN_GRACE_S for a running job (the
        default timeout allows it). SIGKILL: the whole replica dies at once, workers included."""
        if timeout is None:
            var = SETTINGS["shutdown_grace_s"]
            timeout = float(self.env.get(var.env) or os.environ.get(var.env) or var.default) + 30
        tree = self.pids()
        if not tree:
            return
        for pid in tree if sig == signal.SIGKILL else tree[:1]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        for pid in tree[1:]:  # never leave a worker running after its server
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=120)

    def admin(self) -> httpx.Client:
        return self.client(self.admin_token)

    def new_tenant(self, name: str) -> httpx.Client:
        with self.admin() as admin:
            resp = admin.post("/v1/tenants", json={"name": name})
            assert resp.status_code == 201, resp.text
            return self.client(resp.json()["api_key"])


def wait_for_job(client: httpx.Client, job_id: str, timeout: float = 300.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "superseded"):
            return job
        time.sleep(0.3)
    raise TimeoutError(f"job {job_id} did not finish in {timeout}s")


@pytest.fixture
def server_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """Start servers on demand; all are stopped at the end of the test."""
    started: list[Server] = []

    def make(data_dir: Path | None = None, **env: str) -> Server:
        server = Server(data_dir or tmp_path_factory.mktemp("graft"), env=env)
        started.append(server)
        return server.start()

    yield make
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server shared by the tests that do not restart or kill it."""
    srv = Server(tmp_path_factory.mktemp("graft-shared")).start()
    yield srv
    srv.stop()
