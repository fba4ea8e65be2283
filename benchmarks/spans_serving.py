"""Serving entities and answers (issue 18): predict throughput through the token lane in process and over
HTTP, and memory per extra task.

    PYTHONPATH=. .venv/bin/python -m benchmarks.spans_serving [--seconds 5] [--clients 1,8] [--out spans_serving.json]
        [--heads tagger,word-tagger,pointer,word-pointer,finetune]

- **In process**: each head (the transfer heads ``tagger`` / ``pointer`` read MiniLM's per-token states
  through a :class:`~service.batching.TokenBatcher`; the baselines ``word-tagger`` / ``word-pointer`` read only
  the text) fitted on 50 template rows (benchmarks/spansets.py), then ``clients`` closed-loop callers, each its
  own tenant, send one held-out input per request for ``seconds``: inputs per second and mean latency.
- **Over HTTP**: a real ``bentoml serve`` process (tests/conftest.py ``Server``), one task per head (pinned)
  created from 50 rows and trained by its job runner, then the same closed loop with ``httpx`` clients in
  threads, one input per request.
- **Memory per extra task**: the stored blob, the head's tensors (what the head cache charges), and the
  Python heap a loaded head holds (``tracemalloc`` around ``from_bytes``: the word heads' vocabularies live
  outside their tensors); for the entities ``finetune`` head also the bytes it holds once bound to the
  backbone (its merged top layer, ``resident_nbytes``: what the head cache charges it).
- ``finetune`` (entities, adapters/spans/finetune.py) is fitted with at most 2 epochs (in process and, via
  ``GRAFT_FINETUNE_MAX_EPOCHS=2``, in the server); in the token lane its rows share the frozen lower layers
  with other fine-tuned rows of the pass, then run its own top layer (``OwnLayers``), as the router sends them.

Numbers are from a machine shared with other jobs: rough, and comparable within one run only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

from adapters.heads.finetune import FinetuneConfig
from adapters.kinds import kind_of
from adapters.kinds.entities import spans_of
from adapters.spans import from_bytes, to_bytes
from adapters.spans.finetune import fit_finetune_tagger
from adapters.spans.heads import SpanPointer, TokenTagger, WordPointer, WordTagger
from benchmarks.spansets import answer_rows, entity_rows
from service.batching import OwnLayers, TokenBatcher, TokenInput

TRAIN = 50
PINNED = [
    ("entities", "tagger"),
    ("entities", "word-tagger"),
    ("answers", "pointer"),
    ("answers", "word-pointer"),
    ("entities", "finetune"),
]
FINETUNE_EPOCHS = 2


def _heads(backbone: Any, wanted: set[str]) -> dict[str, tuple[str, Any, list[Any]]]:
    """head kind → (task kind, fitted head, held-out decoded inputs)."""
    ent = entity_rows(TRAIN, half=0, seed=0)
    texts, spans = [r["input"] for r in ent], [spans_of(r["label"]) for r in ent]
    states = backbone.token_states(texts)
    labels = sorted({s.label for row in spans for s in row})
    qa = answer_rows(TRAIN, half=0, seed=0)
    questions, contexts = [r["input"]["question"] for r in qa], [r["input"]["context"] for r in qa]
    answers = [None if r["label"] is None else (r["label"]["start"], r["label"]["end"]) for r in qa]
    qa_states = backbone.token_states(contexts, questions)
    test_ent = [r["input"] for r in entity_rows(64, half=1, seed=1)]
    test_qa = [r["input"] for r in answer_rows(64, half=1, seed=1)]
    made = {
        "tagger": lambda: ("entities", TokenTagger(labels).fit(texts, spans, states), test_ent),
        "word-tagger": lambda: ("entities", WordTagger(labels).fit(texts, spans), test_ent),
        "pointer": lambda: ("answers", SpanPointer().fit(questions, contexts, answers, qa_states), test_qa),
        "word-pointer": lambda: ("answers", WordPointer().fit(questions, contexts, answers), test_qa),
        "finetune": lambda: (
            "entities",
            fit_finetune_tagger(
                backbone, texts, spans, labels, states, FinetuneConfig(max_epochs=FINETUNE_EPOCHS)
            ).head,
            test_ent,
        ),
    }
    return {name: make() for name, make in made.items() if name in wanted}


async def _closed_loop(call: Any, inputs: list[Any], clients: int, seconds: float) -> dict[str, float]:
    done, latencies = 0, []
    deadline = time.perf_counter() + seconds

    async def client(c: int) -> None:
        nonlocal done
        i = c
        while time.perf_counter() < deadline:
            began = time.perf_counter()
            await call(inputs[i % len(inputs)], f"tenant-{c}")
            latencies.append(time.perf_counter() - began)
            done += 1
            i += clients

    began = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(clients)))
    elapsed = time.perf_counter() - began
    return {"inputs_per_s": done / elapsed, "mean_latency_ms": 1000 * sum(latencies) / max(1, len(latencies))}


def in_process(backbone: Any, clients: list[int], seconds: float, wanted: set[str]) -> list[dict[str, Any]]:
    lane = TokenBatcher(backbone, 64, 0.002, 4096)
    rows = []
    try:
        for head_kind, (task_kind, head, inputs) in _heads(backbone, wanted).items():
            kind = kind_of(task_kind)

            async def call(value: Any, tenant: str, kind: Any = kind, head: Any = head) -> Any:
                own = hasattr(head, "bind")  # a fine-tuned head: its own top layers, in the lane (as the router)
                if not own and not kind.reads_states(head):
                    return await asyncio.to_thread(kind.predict_tokens, head, [value], None)
                texts, questions = kind.token_inputs([value])
                item = TokenInput(texts[0], None if questions is None else questions[0], value)

                def step(part: Any, enc: Any) -> Any:
                    return kind.predict_tokens(head, [p.value for p in part], enc)

                return await lane.run([item], OwnLayers(head, step) if own else step, tenant)

            blob = to_bytes(head)
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
            loaded = from_bytes(blob)
            heap = tracemalloc.get_traced_memory()[0] - before
            tracemalloc.stop()
            tensors = sum(int(t.nbytes) for t in loaded.tensors().values())
            bound = {"bound_bytes": loaded.bind(backbone).resident_nbytes()} if hasattr(loaded, "bind") else {}
            for n in clients:
                result = asyncio.run(_closed_loop(call, inputs, n, seconds))
                rows.append(
                    {
                        "where": "in process",
                        "kind": task_kind,
                        "head": head_kind,
                        "clients": n,
                        **result,
                        "blob_bytes": len(blob),
                        "tensor_bytes": tensors,
                        "heap_bytes": heap,
                        **bound,
                    }
                )
                print(rows[-1], flush=True)
    finally:
        lane.close()
    return rows


def _http_loop(url: str, key: str, path: str, inputs: list[Any], clients: int, seconds: float) -> dict[str, float]:
    """``clients`` threads, each a closed loop of one-input predict requests, for ``seconds``."""
    import httpx

    done, latencies, lock = [0], [], threading.Lock()
    deadline = time.perf_counter() + seconds

    def worker(c: int) -> None:
        with httpx.Client(base_url=url, headers={"Authorization": key}, timeout=60) as h:
            i = c
            while time.perf_counter() < deadline:
                began = time.perf_counter()
                h.post(path, json={"inputs": [inputs[i % len(inputs)]]}).raise_for_status()
                with lock:
                    latencies.append(time.perf_counter() - began)
                    done[0] += 1
                i += clients

    began = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    return {"inputs_per_s": done[0] / elapsed, "mean_latency_ms": 1000 * sum(latencies) / max(1, len(latencies))}


def over_http(clients: list[int], seconds: float, wanted: set[str]) -> list[dict[str, Any]]:
    from tests.conftest import Server, wait_for_job

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp), env={"GRAFT_FINETUNE_MAX_EPOCHS": str(FINETUNE_EPOCHS)}).start()
        try:
            api = server.new_tenant("bench-spans")
            train = {"entities": entity_rows(TRAIN, half=0, seed=0), "answers": answer_rows(TRAIN, half=0, seed=0)}
            tests = {
                "entities": [r["input"] for r in entity_rows(64, half=1, seed=1)],
                "answers": [r["input"] for r in answer_rows(64, half=1, seed=1)],
            }
            key = api.headers["Authorization"]
            for kind, head in [(k, h) for k, h in PINNED if h in wanted]:  # pinned: the transfer heads use the lane
                name = f"{kind}-{head}"
                body = {"name": name, "kind": kind, "head": head, "examples": train[kind]}
                resp = api.post("/v1/tasks", json=body)
                resp.raise_for_status()
                job = wait_for_job(api, resp.json()["job"]["id"], timeout=600)
                assert job["status"] == "succeeded", job
                for n in clients:
                    result = _http_loop(server.url, key, f"/v1/tasks/{name}/predict", tests[kind], n, seconds)
                    rows.append({"where": "HTTP", "kind": kind, "head": head, "clients": n, **result})
                    print(rows[-1], flush=True)
        finally:
            server.stop()
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| where | kind | head | clients | inputs/s | mean latency ms | blob KB | tensors KB | heap KB | bound KB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        keys = ("blob_bytes", "tensor_bytes", "heap_bytes", "bound_bytes")
        kb = [f"{r[k] / 1024:.0f}" if k in r else "" for k in keys]
        lines.append(
            f"| {r['where']} | {r['kind']} | {r['head']} | {r['clients']} | {r['inputs_per_s']:.1f} | "
            f"{r['mean_latency_ms']:.1f} | {' | '.join(kb)} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", default="1,8")
    parser.add_argument("--no-http", action="store_true")
    parser.add_argument("--heads", default=",".join(h for _, h in PINNED))
    parser.add_argument("--out", default="spans_serving.json")
    args = parser.parse_args()
    from service.backbones.registry import BUILTIN, Registry

    clients = [int(c) for c in args.clients.split(",")]
    backbone = Registry({"minilm": BUILTIN["minilm"]}, "cpu").load("minilm")
    wanted = set(args.heads.split(","))
    rows = in_process(backbone, clients, args.seconds, wanted)
    if not args.no_http:
        rows += over_http(clients, args.seconds, wanted)
    print(table(rows))
    with open(args.out, "w") as fh:
        json.dump({"seconds": args.seconds, "clients": clients, "train_rows": TRAIN, "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
