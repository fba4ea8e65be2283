"""A closed-loop HTTP load generator, run as its own process by benchmarks/http_load.py.

    python -m benchmarks.loadgen --url http://127.0.0.1:3000 --requests reqs.json --concurrency 32 --duration 20

``--requests`` is a JSON list of ``[path, body]`` (bodies are JSON strings) sent round-robin,
each client taking the next one; ``--header`` adds a header to every request. Every client
keeps one HTTP/1.1 keep-alive connection and sends its next request as soon as the previous
answer arrived. Asyncio streams with pre-encoded requests keep the generator's own CPU use
small (it shares the machine with the server). Prints one JSON object: requests, errors,
status counts, throughput (200s per second) and latency percentiles of every request answered
in the ``--duration`` window after ``--warmup`` (fast 503s included, so compare statuses too).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from urllib.parse import urlsplit

import numpy as np


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one response; returns (status, connection kept alive)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status, headers.get("connection", "").lower() != "close"


async def run(url: str, requests: list[bytes], concurrency: int, duration: float, warmup: float) -> dict:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    errors = ok_all = 0
    counter = iter(range(10**12))
    start = time.perf_counter()
    measure_from, stop_at = start + warmup, start + warmup + duration

    async def client() -> None:
        nonlocal errors, ok_all
        reader = writer = None
        while time.perf_counter() < stop_at:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            payload = requests[next(counter) % len(requests)]
            sent = time.perf_counter()
            try:
                writer.write(payload)
                status, keep = await read_response(reader)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                errors += 1
                writer.close()
                reader = writer = None
                continue
            done = time.perf_counter()
            ok_all += status == 200
            if measure_from <= done <= stop_at:  # completions inside the window
                latencies.append(done - sent)
                statuses[status] += 1
            if not keep:
                writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()

    await asyncio.gather(*(client() for _ in range(concurrency)))
    lat = np.asarray(latencies) * 1000
    ok = statuses.get(200, 0)
    return {
        "concurrency": concurrency,
        "seconds": duration,
        "requests": int(sum(statuses.values())),
        "ok": ok,
        "ok_all": ok_all,
        "errors": errors,
        "statuses": {str(k): v for k, v in statuses.items()},
        "throughput_rps": ok / duration,
        **{f"p{q}_ms": float(np.percentile(lat, q)) if len(lat) else None for q in (50, 95, 99)},
    }


def encode(host: str, path: str, body: str, headers: dict[str, str]) -> bytes:
    data = body.encode()
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", "Content-Type: application/json", f"Content-Length: {len(data)}",
             *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--requests", required=True, help="JSON file: list of [path, body]")
    parser.add_argument("--header", action="append", default=[], help="'Name: value', repeatable")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    args = parser.parse_args()
    headers = dict(h.split(": ", 1) for h in args.header)
    host = urlsplit(args.url).netloc
    with open(args.requests, encoding="utf-8") as fh:
        requests = [encode(host, path, body, headers) for path, body in json.load(fh)]
    print(json.dumps(asyncio.run(run(args.url, requests, args.concurrency, args.duration, args.warmup))))


if __name__ == "__main__":
    main()
