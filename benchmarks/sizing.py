"""Memory sizing for deployment (docs/deploy.md "Sizing"): what a pod holds.

    .venv/bin/python benchmarks/sizing.py          # prints a table, writes benchmarks/results/sizing.json

Measures, each in a fresh process so nothing else is resident:
  1. RSS of Python with torch, transformers and Graft imported (the runtime, no model);
  2. RSS after loading each packaged backbone, and the bytes of its parameters (what one copy on
     a GPU needs before activations);
  3. peak RSS after embedding 64 real BBC News articles (a full batch at max sequence length);
  4. the whole `bentoml serve` process tree (server + worker) once ready, as a pod runs it;
and, in this process, the bytes per trained head — stored (safetensors blob) and in memory (numpy
arrays and Python objects, measured with tracemalloc over 500 loaded heads) — for 2 to 100 labels.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
MiB = 1024 * 1024

BACKBONE_PROBE = r"""
import json, os, resource, sys, psutil
sys.path.insert(0, sys.argv[2])
me = psutil.Process()
out = {}
import torch, transformers
from service.backbones.registry import BUILTIN, Registry
out["runtime_rss"] = me.memory_info().rss
registry = Registry({sys.argv[1]: BUILTIN[sys.argv[1]]}, "cpu")
backbone = registry.load(sys.argv[1])
out["loaded_rss"] = me.memory_info().rss
out["param_bytes"] = sum(p.numel() * p.element_size() for p in backbone.model.parameters())
out["dim"] = backbone.dim
out["max_length"] = backbone.max_length
texts = [json.loads(line)["input"] for line in open(sys.argv[3])][:64]
backbone.embed(texts)
out["after_batch_rss"] = me.memory_info().rss
out["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps(out))
"""


def shared_data() -> Path:
    for candidate in (os.environ.get("GRAFT_SHARED_DATA"), ROOT.parent / "shared" / "data", "/work/shared/data"):
        if candidate and (Path(candidate) / "bbc_news.train.jsonl").is_file():
            return Path(candidate)
    raise FileNotFoundError("set GRAFT_SHARED_DATA to the folder holding bbc_news.*.jsonl")


def backbone_memory(name: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", BACKBONE_PROBE, name, str(ROOT), str(shared_data() / "bbc_news.train.jsonl")],
        capture_output=True, text=True, check=True, timeout=600,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def server_memory() -> dict:
    """RSS of a real `bentoml serve` (server process + its worker) once /readyz answers."""
    import httpx
    import psutil

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as data:
        env = {**os.environ, "GRAFT_DATA_DIR": data, "GRAFT_ADMIN_TOKEN": "sizing-admin-token-0123456789abcdef"}
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "bentoml"), "serve", "service.app:Graft", "--port", str(port)],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.5)
            else:
                raise TimeoutError("server not ready")
            time.sleep(2)
            tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
            return {"processes": len(tree), "rss": sum(p.memory_info().rss for p in tree),
                    "worker_rss": max(p.memory_info().rss for p in tree)}
        finally:
            proc.terminate()
            proc.wait(60)


def head_memory(dim: int) -> list[dict]:
    import numpy as np

    from adapters import heads

    rng = np.random.default_rng(0)
    rows = []
    for n_labels in (2, 5, 20, 100):
        labels = [f"label-{i}" for i in range(n_labels)]
        x = rng.normal(size=(n_labels * 8, dim)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        y = np.repeat(np.arange(n_labels), 8)
        for kind, cls in heads.HEADS.items():
            blob = heads.to_bytes(cls(labels).fit(x, y), backbone="minilm", dim=dim)
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
            loaded = [heads.from_bytes(blob) for _ in range(500)]
            in_memory = (tracemalloc.get_traced_memory()[0] - before) / len(loaded)
            tracemalloc.stop()
            rows.append({"head": kind, "labels": n_labels, "blob_bytes": len(blob), "memory_bytes": round(in_memory)})
    return rows


def main() -> None:
    from service.backbones.registry import BUILTIN

    results: dict = {"python": sys.version.split()[0], "cpus": os.cpu_count(), "backbones": {}}
    for name in BUILTIN:
        results["backbones"][name] = backbone_memory(name)
    results["server"] = server_memory()
    dim = next(iter(results["backbones"].values()))["dim"]
    results["heads"] = head_memory(dim)
    results["self_peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    print(
        "| Backbone | runtime RSS (MiB) | + backbone (MiB) | parameters (MiB) | after a 64-text batch (MiB) | peak "
        "(MiB) |"
    )
    print("|---|---|---|---|---|---|")
    for name, b in results["backbones"].items():
        print(f"| {name} (dim {b['dim']}, max {b['max_length']} tokens) | {b['runtime_rss'] / MiB:.0f} | "
              f"{(b['loaded_rss'] - b['runtime_rss']) / MiB:.0f} | {b['param_bytes'] / MiB:.1f} | "
              f"{b['after_batch_rss'] / MiB:.0f} | {b['peak_rss'] / MiB:.0f} |")
    s = results["server"]
    print(f"\n`bentoml serve` once ready: {s['processes']} processes, {s['rss'] / MiB:.0f} MiB RSS in all "
          f"(largest process {s['worker_rss'] / MiB:.0f} MiB)\n")
    print("| Head | labels | stored (bytes) | in memory (bytes) |")
    print("|---|---|---|---|")
    for h in results["heads"]:
        print(f"| {h['head']} | {h['labels']} | {h['blob_bytes']} | {h['memory_bytes']} |")

    out = ROOT / "benchmarks" / "results" / "sizing.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
