"""HTTP on loopback (issue 5, benchmark 3): Graft predict across 100 tasks vs a naive BentoML
sentence-transformers service, at 1, 8, 32 and 64 concurrent clients, one text per request.

    .venv/bin/python -m benchmarks.http_load [--clients 1,8,32,64] [--duration 20] [--reps 2]

Both servers run as real ``bentoml serve`` processes at once (idle when not under load); the
load generator (benchmarks/loadgen.py) is a third process. Runs alternate between Graft, the
peer and two in-process references: MiniLM on torch fp32 (what the peer runs) and MiniLM on the
runtime Graft serves (``auto``: ``onnx-int8`` on CPU, one input per call), each embedding the same
texts in passes of 64, sorted by length — what the batcher feeds it at best; so the machine's
background load falls on all alike, and every ratio is computed from one run of this script.
``vs_served_inprocess`` is the issue's "Graft's own in-process throughput"; ``p50_vs_one_pass``
compares the p50 latency with one text's in-process pass on the served runtime.

Graft's tasks are seeded through the store API before it starts: 100 tasks of one tenant, each
with its own linear head trained on real embeddings; requests go round-robin over the tasks.
Texts: benchmarks/short_texts.py (real short texts, ~35 tokens, a few up to 256), or with
``--texts articles`` the BBC News test articles of shared/data (most cut at the backbone's 256 tokens).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import psutil

from service.backbones.registry import BUILTIN, Registry
from service.backbones.runtimes import RuntimeConfig
from service.store.repository import Store
from tests.conftest import Server, load_jsonl

from .multitenant import install, report, train_heads
from .short_texts import short_texts

PEER = "benchmarks.peers.sentence_transformers_service:SentenceTransformers"


def loadgen(url: str, requests: Path, clients: int, duration: float, headers: list[str]) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.loadgen", "--url", url, "--requests", str(requests),
           "--concurrency", str(clients), "--duration", str(duration)]
    for header in headers:
        cmd += ["--header", header]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1])
    return json.loads(out.stdout.strip().splitlines()[-1])


def pass_totals(server: Server) -> tuple[float, float]:
    """(rows, passes) Graft's backbone has run so far, from its /metrics."""
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    values = dict.fromkeys(("graft_backbone_batch_size_sum", "graft_backbone_batch_size_count"), 0.0)
    for line in text.splitlines():
        name = line.split("{")[0].split(" ")[0]
        if name in values:
            values[name] += float(line.rsplit(" ", 1)[1])
    return values["graft_backbone_batch_size_sum"], values["graft_backbone_batch_size_count"]


def cpu_seconds(server: Server) -> float:
    """CPU time used so far by a server's process tree (the BentoML arbiter and its workers)."""
    root = psutil.Process(server.proc.pid)
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def inprocess_rate(backbone, texts: list[str], seconds: float) -> tuple[float, float]:
    """(texts/s, CPU ms per text) of the backbone alone on ``texts`` in passes of 64, for about ``seconds``."""
    done, started, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - started < seconds:
        batch = [texts[(done + i) % len(texts)] for i in range(64)]
        backbone.embed(batch)
        done += len(batch)
    return done / (time.perf_counter() - started), (time.process_time() - cpu) / done * 1000


def one_pass_ms(backbone, texts: list[str], n: int = 200) -> float:
    """Median milliseconds of one text's pass through ``backbone`` alone (the latency floor of one request)."""
    times = []
    for i in range(n):
        start = time.perf_counter()
        backbone.embed([texts[i % len(texts)]])
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="1,8,32,64")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds per run (after 3 s warm-up)")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--texts", choices=("short", "articles"), default="short",
                        help="short: benchmarks/short_texts.py; articles: BBC News test articles (shared/data), "
                             "most longer than the backbone's 256 tokens")
    args = parser.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    texts = short_texts() if args.texts == "short" else [r["input"] for r in load_jsonl("bbc_news.test.jsonl")]

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        backbone = Registry({"minilm": BUILTIN["minilm"]}, "cpu").load("minilm")
        served = Registry(
            {"minilm": BUILTIN["minilm"]}, "cpu", runtimes=RuntimeConfig("auto", root / "onnx-cache")
        ).load("minilm")
        store = Store(f"sqlite:///{root / 'graft' / 'graft.db'}")
        store.create_schema()
        tenant, key = store.create_tenant("load")
        for i, head in enumerate(train_heads(backbone, args.tasks, seed=0)):
            install(store, tenant.id, f"task-{i}", head, backbone)
        store.close()
        graft_reqs, peer_reqs = root / "graft.json", root / "peer.json"
        graft_reqs.write_text(json.dumps(
            [[f"/v1/tasks/task-{i % args.tasks}/predict", json.dumps({"inputs": [t]})] for i, t in enumerate(texts)]))
        peer_reqs.write_text(json.dumps([["/encode", json.dumps({"sentences": [t]})] for t in texts]))

        graft = Server(
            root / "graft", env={"GRAFT_PREDICT_RATE_PER_S": "0"}
        ).start()  # one tenant, many clients: no rate quota
        peer = Server(root / "peer", target=PEER).start()
        systems = {
            "graft": (graft, graft_reqs, [f"Authorization: Bearer {key}"]),
            "peer": (peer, peer_reqs, []),
        }
        runs: dict[tuple[str, int], list[dict]] = {}
        reference: list[tuple[float, float]] = []
        served_reference: list[tuple[float, float]] = []
        one_pass: list[float] = []
        try:
            for c in clients:
                for rep in range(args.reps):
                    order = ["graft", "peer", "inprocess"] if rep % 2 == 0 else ["inprocess", "peer", "graft"]
                    for name in order:
                        if name == "inprocess":
                            reference.append(inprocess_rate(backbone, texts, args.duration / 2))
                            served_reference.append(inprocess_rate(served, texts, args.duration / 2))
                            one_pass.append(one_pass_ms(served, texts))
                            print(f"  in-process: torch fp32 {reference[-1][0]:.1f} texts/s, {served.runtime} "
                                  f"{served_reference[-1][0]:.1f} texts/s, one text {one_pass[-1]:.2f} ms", flush=True)
                            continue
                        server, reqs, headers = systems[name]
                        cpu0 = cpu_seconds(server)
                        passes0 = pass_totals(server) if name == "graft" else None
                        result = loadgen(server.url, reqs, c, args.duration, headers)
                        if passes0 is not None:
                            rows, passes = (a - b for a, b in zip(pass_totals(server), passes0, strict=True))
                            result["rows_per_pass"] = rows / max(1.0, passes)
                        # CPU per request (warm-up included on both sides): steadier than req/s on a busy machine
                        result["server_cpu_ms_per_request"] = (
                            (cpu_seconds(server) - cpu0) * 1000 / max(1, result["ok_all"])
                        )
                        runs.setdefault((name, c), []).append(result)
                        print(f"  {name} c={c}: {result['throughput_rps']:.1f} req/s, p50 {result['p50_ms']} ms, "
                              f"statuses {result['statuses']}, errors {result['errors']}", flush=True)
        finally:
            graft.stop()
            peer.stop()

    served_rps = float(np.median([r[0] for r in served_reference]))
    one_ms = float(np.median(one_pass))
    inproc = float(np.median([r[0] for r in reference]))
    inproc_cpu = float(np.median([r[1] for r in reference]))
    rows = []
    for (name, c), results in runs.items():
        rows.append({
            "system": name, "clients": c,
            "throughput_rps": float(np.mean([r["throughput_rps"] for r in results])),
            "p50_ms": float(np.median([r["p50_ms"] for r in results if r["p50_ms"] is not None] or [np.nan])),
            "p95_ms": float(np.median([r["p95_ms"] for r in results if r["p95_ms"] is not None] or [np.nan])),
            "p99_ms": float(np.median([r["p99_ms"] for r in results if r["p99_ms"] is not None] or [np.nan])),
            "non_200": sum(r["requests"] - r["ok"] + r["errors"] for r in results),
            "cpu_ms_per_req": float(np.mean([r["server_cpu_ms_per_request"] for r in results])),
            "rows_per_pass": float(np.mean([r["rows_per_pass"] for r in results])) if name == "graft" else None,
        })
    by = {(r["system"], r["clients"]): r for r in rows}
    for r in rows:
        if r["system"] == "graft":
            r["vs_peer"] = r["throughput_rps"] / by[("peer", r["clients"])]["throughput_rps"]
            r["vs_inprocess_backbone"] = r["throughput_rps"] / inproc
            r["vs_served_inprocess"] = r["throughput_rps"] / served_rps
            r["p50_vs_one_pass"] = r["p50_ms"] / one_ms
            r["cpu_vs_peer"] = by[("peer", r["clients"])]["cpu_ms_per_req"] / r["cpu_ms_per_req"]
            r["cpu_vs_inprocess"] = inproc_cpu / r["cpu_ms_per_req"]
    rows.sort(key=lambda r: (r["clients"], r["system"]))
    print(f"in-process backbone on the same texts: torch fp32 {inproc:.1f} texts/s, {inproc_cpu:.1f} CPU ms per "
          f"text; served runtime ({served.runtime}) {served_rps:.1f} texts/s, one text {one_ms:.2f} ms "
          f"(medians of {len(reference)} runs)")
    report(
        "http_load" if args.texts == "short" else "http_load_articles",
        [
            "system",
            "clients",
            "throughput_rps",
            "p50_ms",
            "p95_ms",
            "p99_ms",
            "non_200",
            "cpu_ms_per_req",
            "rows_per_pass",
            "vs_peer",
            "vs_inprocess_backbone",
            "vs_served_inprocess",
            "p50_vs_one_pass",
            "cpu_vs_peer",
            "cpu_vs_inprocess",
        ],
        rows,
        args=vars(args),
        inprocess_backbone_rps=inproc,
        served_runtime=served.runtime,
        served_inprocess_rps=served_rps,
        served_one_text_ms=one_ms,
        inprocess_cpu_ms_per_text=inproc_cpu,
        inprocess_runs=reference,
        raw={f"{k[0]}@{k[1]}": v for k, v in runs.items()},
    )


if __name__ == "__main__":
    main()
