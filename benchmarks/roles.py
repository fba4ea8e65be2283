"""Training as its own role (issue 21): predict latency over HTTP while fine-tune jobs train, on an
``api`` process with a separate ``worker`` process, vs the same load on one ``all`` process.

    .venv/bin/python -m benchmarks.roles [--duration 30] [--clients 4] [--serving-cpus 0] [--training-cpus 1]

All processes are real ``bentoml serve`` servers on one fresh PostgreSQL database. A pod boundary
is modelled by CPU affinity: the serving process (``api`` or ``all``) is pinned to
``--serving-cpus``; the ``worker`` to ``--training-cpus`` (other cores, as another pod would have).
Rows, measured one after the other in one run of this script:

- ``api, idle``: the api process with no training anywhere (the floor);
- ``api + worker``: the api process while the worker process fine-tunes without pause;
- ``all``: one ``all`` process on the serving cores, serving the same load while it fine-tunes the
  same jobs (training yields to predict between steps).

Load: benchmarks/loadgen.py, one text per request, round-robin over 20 linear-head tasks of one tenant;
a second tenant keeps one ``finetune`` task retraining (a new job as soon as the last one ends).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

from service.backbones.registry import BUILTIN, Registry
from service.store.repository import Store
from tests.conftest import Server, load_jsonl, per_label
from tests.postgres import temp_database

from .http_load import loadgen
from .multitenant import install, report, train_heads
from .short_texts import short_texts

TASKS = 20
ADMIN = "bench-admin-token"


def pin(server: Server, cpus: list[int]) -> None:
    for pid in server.pids():
        try:
            psutil.Process(pid).cpu_affinity(cpus)
        except psutil.NoSuchProcess:
            pass


class Trainer:
    """Keeps one fine-tune task retraining: queues a new job whenever the previous one ended."""

    def __init__(self, url: str, key: str, rows: list[dict]) -> None:
        self.client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=120)
        self.rows = rows
        self.finished = 0
        self.progress: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Trainer:
        resp = self.client.post(
            "/v1/tasks", json={"name": "tuned", "modality": "text", "head": "finetune", "examples": self.rows}
        )
        assert resp.status_code == 202, resp.text
        self.job = resp.json()["job"]["id"]
        self._thread.start()
        return self

    def _run(self) -> None:
        n = 0
        while not self._stop.wait(0.5):
            job = self.client.get(f"/v1/jobs/{self.job}").json()
            if job["status"] in ("succeeded", "failed", "superseded"):
                self.finished += 1
                n += 1
                row = self.rows[n % len(self.rows)]
                resp = self.client.post("/v1/tasks/tuned/examples", json={"examples": [row]})
                self.job = resp.json()["job"]["id"]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=30.0, help="measured seconds per row (after 3 s warm-up)")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--serving-cpus", default="0")
    parser.add_argument("--training-cpus", default="1")
    args = parser.parse_args()
    serving = [int(c) for c in args.serving_cpus.split(",")]
    training = [int(c) for c in args.training_cpus.split(",")]
    texts = short_texts()
    env = {
        "GRAFT_PREDICT_RATE_PER_S": "0",
        "GRAFT_TORCH_THREADS": str(len(serving)),
        "GRAFT_ONNX_THREADS": str(len(serving)),
        "GRAFT_FINETUNE_MAX_EPOCHS": "4",
    }
    rows: list[dict] = []

    with tempfile.TemporaryDirectory() as tmp, temp_database() as database:
        root = Path(tmp)
        backbone = Registry({"minilm": BUILTIN["minilm"]}, "cpu").load("minilm")
        store = Store(database)
        store.migrate()
        tenant, key = store.create_tenant("load")
        for i, head in enumerate(train_heads(backbone, TASKS, seed=0)):
            install(store, tenant.id, f"task-{i}", head, backbone)
        _, trainer_key = store.create_tenant("trainer")
        store.close()
        reqs = root / "requests.json"
        reqs.write_text(
            json.dumps(
                [[f"/v1/tasks/task-{i % TASKS}/predict", json.dumps({"inputs": [t]})] for i, t in enumerate(texts)]
            )
        )
        headers = [f"Authorization: Bearer {key}"]
        finetune_rows = [
            {"input": r["input"][:600], "label": r["label"]} for r in per_label(load_jsonl("bbc_news.train.jsonl"), 8)
        ]

        def measure(label: str, server: Server, trainer: Trainer | None) -> None:
            before = trainer.finished if trainer else 0
            result = loadgen(server.url, reqs, args.clients, args.duration, headers)
            rows.append({
                "setup": label, "clients": args.clients, "throughput_rps": result["throughput_rps"],
                "p50_ms": result["p50_ms"], "p95_ms": result["p95_ms"], "p99_ms": result["p99_ms"],
                "non_200": result["requests"] - result["ok"] + result["errors"],
                "finetune_jobs_done": (trainer.finished - before) if trainer else None,
            })
            print(
                f"  {label}: {result['throughput_rps']:.1f} req/s, p50 {result['p50_ms']:.1f} ms, p99 "
                f"{result['p99_ms']:.1f} ms, "
                f"fine-tune jobs finished {rows[-1]['finetune_jobs_done']}",
                flush=True,
            )

        base = {"GRAFT_DATABASE_URL": database, "GRAFT_ADMIN_TOKEN": ADMIN, **env}
        api = Server(root / "api", env={**base, "GRAFT_ROLE": "api"}, admin_token=ADMIN).start()
        pin(api, serving)
        try:
            measure("api, idle", api, None)
            worker = Server(root / "worker", env={**base, "GRAFT_ROLE": "worker"}, admin_token=ADMIN).start()
            pin(worker, training)
            trainer = Trainer(api.url, trainer_key, finetune_rows).start()
            try:
                time.sleep(5)  # the first job is under way
                measure("api + worker", api, trainer)
            finally:
                trainer.stop()
                worker.stop()
        finally:
            api.stop()

        both = Server(root / "all", env={**base, "GRAFT_ROLE": "all"}, admin_token=ADMIN).start()
        pin(both, serving)
        try:
            trainer = Trainer(both.url, trainer_key, finetune_rows)
            trainer.client.delete("/v1/tasks/tuned")
            trainer.start()
            try:
                time.sleep(5)
                measure("all (trains too)", both, trainer)
            finally:
                trainer.stop()
        finally:
            both.stop()

    idle = rows[0]
    for r in rows:
        r["p99_vs_idle"] = r["p99_ms"] / idle["p99_ms"]
        r["p50_vs_idle"] = r["p50_ms"] / idle["p50_ms"]
    report(
        "roles",
        [
            "setup",
            "clients",
            "throughput_rps",
            "p50_ms",
            "p95_ms",
            "p99_ms",
            "p50_vs_idle",
            "p99_vs_idle",
            "non_200",
            "finetune_jobs_done",
        ],
        rows,
        args=vars(args),
        serving_cpus=serving,
        training_cpus=training,
    )


if __name__ == "__main__":
    main()
