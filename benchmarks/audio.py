"""Audio backbones against a no-transfer baseline, on spoken words synthesised offline (benchmarks/audio_data.py).

1. Keyword classification (10 words): logistic regression on the frozen speech embedding
   (``openwakeword-speech-embedding``) vs MFCC summary features + logistic regression (no transfer),
   at 8 and 64 clips per word, over several draws; tested on clips by speakers of another draw.
2. Speaker identification on the GE2E backbone (``resemblyzer-ge2e``) with Graft's ``speakers`` kind
   (``fit_speakers``): cosine to each enrolled speaker's centroid, with an open-set "unknown" answer under a
   threshold tuned by leave-one-speaker-out CV to a stated false-accept rate, then measured on held-out clips
   of the enrolled speakers and on speakers never enrolled.
3. Embed throughput of each backbone (clips of ~1 s, one call of 64 clips).
4. Graft's own CV selection (``adapters.training.fit_head``, head ``auto``, with the MFCC baseline and the
   hybrid among the candidates, as a served audio task trains) at 8 and 64 clips per word: the head it
   serves and that head's accuracy on the held-out voices.
5. In-process predict throughput as served: clips (base64 WAV) decoded and resampled as a request does,
   then one clip per request from ``--tasks`` tasks (each its own head), ``--concurrency`` requests in
   flight through the real cross-tenant ``Batcher``, against the same clips embedded one request at a time;
   and the bytes one more task costs (its stored head).
7. (``--parts speaker-sizes``) Speaker identification at 8 and 64 enrolment clips per speaker (``fit_speakers``
   on the GE2E embeddings, as a served task trains) against the no-transfer baseline (nearest centroid on
   standardised MFCC summaries), closed-set accuracy on held-out clips of the same speakers, with the
   seconds to embed the enrolment clips and to fit.
6. (``--parts http``) Predict over HTTP: a real server, a keyword and a speakers task trained through the
   API, one base64 WAV clip per request, 1 and 16 clients (closed loop).

    python -m benchmarks.audio --draws 3 --json /tmp/audio.json
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import time
from collections.abc import Callable
from typing import Any, cast

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from adapters import heads
from adapters.audio_features import mfcc_summary
from adapters.kinds.speakers import fit_speakers
from adapters.training import fit_head
from benchmarks.audio_data import WORDS, keyword_clips, speaker_clips
from service import audio
from service.backbones.audio import SAMPLE_RATE, SpeakerBackbone, SpeechEmbeddingBackbone
from service.batching import Batcher

LIMITS = audio.Limits(10**8, 60.0, 2)
PARTS = ("keywords", "selection", "speakers", "throughput", "inprocess", "http", "speaker-sizes")


def decoded(wavs: list[bytes]) -> list[np.ndarray]:
    return [audio.decode(w, LIMITS).at(SAMPLE_RATE) for w in wavs]


def per_label(labels: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    return np.concatenate([rng.choice(np.flatnonzero(labels == lab), k, replace=False) for lab in np.unique(labels)])


def keywords(draws: int, pool_per_word: int, test_per_word: int) -> dict:
    pool = keyword_clips(pool_per_word, seed=0)
    test = keyword_clips(test_per_word, n_speakers=24, seed=99)  # other speakers (other voices and pitches)
    pool_x, test_x = decoded([w for w, _, _ in pool]), decoded([w for w, _, _ in test])
    y, y_test = np.array([lab for _, lab, _ in pool]), np.array([lab for _, lab, _ in test])
    speech = SpeechEmbeddingBackbone()
    features: dict[str, tuple[np.ndarray, np.ndarray]] = {
        "speech-embedding + logistic regression": (speech.embed(pool_x), speech.embed(test_x)),
        "MFCC + logistic regression (no transfer)": (np.stack([mfcc_summary(x) for x in pool_x]),
                                                      np.stack([mfcc_summary(x) for x in test_x])),
    }
    out: dict = {}
    for k in (8, 64):
        for method, (train_f, test_f) in features.items():
            scores = []
            for draw in range(draws):
                idx = per_label(y, k, np.random.default_rng(draw))
                model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
                model.fit(train_f[idx], y[idx])
                scores.append(float(np.mean(model.predict(test_f) == y_test)))
            out.setdefault(str(k), {})[method] = {"mean": float(np.mean(scores)), "std": float(np.std(scores)),
                                                  "draws": scores}
    return {"words": WORDS, "test_clips": len(test), "per_label": out}


def selection(pool_per_word: int, test_per_word: int) -> dict:
    """What head="auto" serves for a keyword task (CV over linear, prototype, MFCC baseline, hybrid) and how
    the served head does on held-out voices, at 8 and 64 clips per word (one draw each)."""
    pool = keyword_clips(pool_per_word, seed=0)
    test = keyword_clips(test_per_word, n_speakers=24, seed=99)
    stored = [audio.to_stored(audio.decode(w, LIMITS)) for w, _, _ in pool]
    stored_test = [audio.to_stored(audio.decode(w, LIMITS)) for w, _, _ in test]
    speech = SpeechEmbeddingBackbone()
    x, x_test = speech.embed(audio.from_stored(stored)), speech.embed(audio.from_stored(stored_test))
    y, y_test = np.array([lab for _, lab, _ in pool]), np.array([lab for _, lab, _ in test])
    out = {}
    for k in (8, 64):
        idx = per_label(y, k, np.random.default_rng(0))
        started = time.perf_counter()
        result = fit_head("auto", x[idx], list(y[idx]), raw=[stored[i] for i in idx], modality="audio", seed=0)
        seconds = time.perf_counter() - started
        proba = result.head.predict_proba(x_test, raw=stored_test)
        accuracy = float(np.mean(np.array(result.head.labels)[proba.argmax(axis=1)] == y_test))
        out[str(k)] = {"served_head": result.metrics["head"], "test_accuracy": accuracy, "fit_s": seconds,
                       "cv_accuracy": {h: r["accuracy"] for h, r in result.metrics["heads"].items()},
                       "warnings": result.metrics["warnings"]}
    return out


def prepare(text: str) -> np.ndarray:
    """A request's clip as the service prepares it: base64 → WAV decoded (limits checked) → 16 kHz mono."""
    return audio.decode(audio.from_base64(text), LIMITS).at(SAMPLE_RATE)


async def batched_run(backbone: Any, task_heads: list[heads.Head], todo: list[str], concurrency: int) -> None:
    """``concurrency`` requests in flight, request ``i`` for task ``i % tasks`` (its own tenant), each decoded
    off the event loop, all through one cross-tenant Batcher."""
    batcher = Batcher(backbone, 64, 0.01, 4096, 4096)
    cursor = iter(range(len(todo)))
    n = len(task_heads)

    async def client() -> None:
        for i in cursor:
            clip = await asyncio.to_thread(prepare, todo[i])
            await batcher.predict(cast(Any, [clip]), task_heads[i % n], tenant=f"tenant-{i % n}")

    await asyncio.gather(*(client() for _ in range(concurrency)))
    batcher.close()


def batched(backbone: Any, task_heads: list[heads.Head], todo: list[str], concurrency: int) -> None:
    asyncio.run(batched_run(backbone, task_heads, todo, concurrency))


def one_at_a_time(backbone: Any, task_heads: list[heads.Head], todo: list[str]) -> None:
    """Each request alone: decode, embed its one clip, its task's head."""
    for i, text in enumerate(todo):
        task_heads[i % len(task_heads)].predict_proba(backbone.embed([prepare(text)]))


def timed(run: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, all threads)."""
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - wall, time.process_time() - cpu


def inprocess(n_tasks: int, n_requests: int, concurrency: int, rounds: int = 3) -> dict:
    """Predict throughput as served: decode + resample per request, then the cross-tenant Batcher (one pass
    for all tasks' clips, each task's head on its rows), against one request at a time. The two are
    interleaved in ``rounds`` (a shared machine's background load hits both alike); totals over the rounds,
    wall-clock and this process's CPU time per clip (the steadier figure on a busy machine)."""
    pool = keyword_clips(8, seed=3)
    wavs = [w for w, _, _ in pool]
    words = np.array([lab for _, lab, _ in pool])
    requests = [audio.to_base64(wavs[i % len(wavs)]) for i in range(n_requests)]
    out: dict = {}
    backbone: Callable[[], SpeechEmbeddingBackbone | SpeakerBackbone]
    for backbone, count in ((SpeechEmbeddingBackbone, n_requests), (SpeakerBackbone, max(32, n_requests // 8))):
        bb = backbone()
        x = bb.embed(decoded(wavs))
        rng = np.random.default_rng(0)
        task_heads: list[heads.Head] = []
        for _ in range(n_tasks):  # each task: its own words, its own linear head
            chosen = rng.choice(WORDS, size=4, replace=False)
            idx = np.flatnonzero(np.isin(words, chosen))
            labels = sorted(chosen)
            task_heads.append(heads.LinearHead(labels).fit(x[idx], np.searchsorted(labels, words[idx])))
        head_bytes = len(heads.to_bytes(task_heads[0], backbone=bb.name))
        todo = requests[:count]
        totals = {"single": [0.0, 0.0], "batched": [0.0, 0.0]}
        for _ in range(rounds):
            for name, run in (("single", functools.partial(one_at_a_time, bb, task_heads, todo)),
                              ("batched", functools.partial(batched, bb, task_heads, todo, concurrency))):
                wall, cpu = timed(run)
                totals[name][0] += wall
                totals[name][1] += cpu
        clips = count * rounds
        out[bb.name] = {"tasks": n_tasks, "requests": count, "rounds": rounds, "concurrency": concurrency,
                        "torch_threads": torch.get_num_threads(),
                        "mean_clip_s": float(np.mean([len(prepare(t)) for t in todo[:32]]) / SAMPLE_RATE),
                        "one_at_a_time_clips_per_s": clips / totals["single"][0],
                        "batched_clips_per_s": clips / totals["batched"][0],
                        "one_at_a_time_cpu_ms_per_clip": 1000 * totals["single"][1] / clips,
                        "batched_cpu_ms_per_clip": 1000 * totals["batched"][1] / clips,
                        "head_bytes_per_task": head_bytes}
    return out


def http(duration: float, clients: list[int]) -> dict:
    """Predict over HTTP on loopback: a real ``bentoml serve`` process, a keyword task (4 words × 8 clips,
    default backbone) and a speakers task (4 speakers × 4 sentences) trained through the API, then one
    base64 WAV clip per JSON request (clips the tasks never saw), closed loop, ``clients`` at a time
    (benchmarks/loadgen.py in its own process)."""
    import tempfile
    from pathlib import Path

    from benchmarks.http_load import loadgen
    from tests.conftest import Server, wait_for_job

    words = [(w, lab) for w, lab, _ in keyword_clips(8, n_speakers=6, seed=0) if lab in WORDS[:4]]
    probes = [w for w, lab, _ in keyword_clips(6, n_speakers=6, seed=99) if lab in WORDS[:4]]
    voices = speaker_clips(4, 4, seed=1)
    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="graft-audio-http-") as tmp:
        server = Server(Path(tmp) / "data").start()
        try:
            client = server.new_tenant("bench-audio")
            key = client.headers["authorization"]
            tasks = {
                "words": {"modality": "audio", "examples": [{"input": audio.to_base64(w), "label": lab}
                                                            for w, lab in words]},
                "voices": {"modality": "audio", "kind": "speakers",
                           "examples": [{"input": audio.to_base64(w), "label": who} for w, who in voices]},
            }
            for name, body in tasks.items():
                resp = client.post("/v1/tasks", json={"name": name, **body}, timeout=120)
                resp.raise_for_status()
                job = wait_for_job(client, resp.json()["job"]["id"], timeout=600)
                assert job["status"] == "succeeded", job
            for name in tasks:
                requests = Path(tmp) / f"{name}.json"
                requests.write_text(json.dumps([[f"/v1/tasks/{name}/predict",
                                                 json.dumps({"inputs": [audio.to_base64(w)]})] for w in probes]))
                backbone = client.get(f"/v1/tasks/{name}").json()["backbone"]
                out[name] = {"backbone": backbone, "mean_clip_s": float(np.mean(
                    [len(audio.decode(w, LIMITS).samples) / audio.decode(w, LIMITS).rate for w in probes]))}
                for n in clients:
                    out[name][str(n)] = loadgen(server.url, requests, n, duration, [f"Authorization: {key}"])
        finally:
            server.stop()
    return out


def speakers(enrolled: int, unknown: int, per_speaker: int, far: float) -> dict:
    clips = speaker_clips(enrolled + unknown, per_speaker * 2)
    ge2e = SpeakerBackbone()
    x = ge2e.embed(decoded([w for w, _ in clips]))
    who = np.array([s for _, s in clips])
    names = list(dict.fromkeys(who))
    known, strangers = names[:enrolled], names[enrolled:]
    # each known speaker: first half of their clips enrol, second half test
    enrol = np.concatenate([np.flatnonzero(who == s)[:per_speaker] for s in known])
    probe = np.concatenate([np.flatnonzero(who == s)[per_speaker:] for s in known])
    impostor = np.concatenate([np.flatnonzero(who == s) for s in strangers])

    # Graft's speakers kind, as a served task trains: centroids, the "unknown" threshold tuned by
    # leave-one-speaker-out over the enrolled speakers to `far` false accepts (adapters/kinds/speakers.py)
    result = fit_speakers(x[enrol], list(who[enrol]), far=far, folds=5, seed=0)
    head = cast(heads.SpeakerHead, result.head)
    threshold = head.threshold
    probe_scores = head.predict_proba(x[probe])
    predicted = np.array(head.labels)[probe_scores.argmax(axis=1)]
    accepted = probe_scores.max(axis=1) >= threshold
    closed = float(np.mean(predicted == who[probe]))
    open_correct = float(np.mean(accepted & (predicted == who[probe])))
    false_accept = float(np.mean(head.predict_proba(x[impostor]).max(axis=1) >= threshold))
    return {"enrolled_speakers": enrolled, "unknown_speakers": unknown, "enrol_clips_per_speaker": per_speaker,
            "target_false_accept_rate": far, "threshold": threshold, "closed_set_accuracy": closed,
            "open_set_accuracy_known": open_correct, "false_reject_rate_known": float(1 - accepted.mean()),
            "false_accept_rate_unknown": false_accept,
            "false_accept_rate_cross_fitted": result.metrics["open_set"]["far_cross_fitted"]}


def speaker_sizes(n_speakers: int, sizes: tuple[int, ...] = (8, 64), test_per_speaker: int = 8) -> dict:
    """Closed-set speaker identification at ``sizes`` enrolment clips per speaker, GE2E + the speakers kind's fit
    vs MFCC nearest centroid (no transfer), on ``test_per_speaker`` other clips of each speaker."""
    most = max(sizes)
    clips = speaker_clips(n_speakers, most + test_per_speaker, seed=3)
    who = np.array([s for _, s in clips])
    names = list(dict.fromkeys(who))
    test = np.concatenate([np.flatnonzero(who == s)[most:] for s in names])
    samples = decoded([w for w, _ in clips])
    mfcc_rows = np.stack([mfcc_summary(x) for x in samples]).astype(np.float64)
    ge2e = SpeakerBackbone()
    test_x = ge2e.embed([samples[i] for i in test])
    out: dict = {"speakers": n_speakers, "test_clips": int(len(test))}
    for k in sizes:
        enrol = np.concatenate([np.flatnonzero(who == s)[:k] for s in names])
        began = time.perf_counter()
        x = ge2e.embed([samples[i] for i in enrol])
        embed_s = time.perf_counter() - began
        began = time.perf_counter()
        result = fit_speakers(x, list(who[enrol]), folds=5, seed=0)
        fit_s = time.perf_counter() - began
        head = cast(heads.SpeakerHead, result.head)
        ge2e_acc = float(np.mean(np.array(head.labels)[head.predict_proba(test_x).argmax(axis=1)] == who[test]))
        mean, scale = mfcc_rows[enrol].mean(axis=0), np.maximum(mfcc_rows[enrol].std(axis=0), 1e-3)

        def unit(rows: np.ndarray, mean: np.ndarray = mean, scale: np.ndarray = scale) -> np.ndarray:
            z = (rows - mean) / scale
            return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)

        centroids = np.stack([unit(mfcc_rows[enrol][who[enrol] == s]).mean(axis=0) for s in names])
        base_pred = np.array(names)[(unit(mfcc_rows[test]) @ centroids.T).argmax(axis=1)]
        out[str(k)] = {"ge2e_accuracy": ge2e_acc, "mfcc_baseline_accuracy": float(np.mean(base_pred == who[test])),
                       "embed_s": embed_s, "fit_s": fit_s, "head_bytes": len(heads.to_bytes(head))}
        print(json.dumps({k: out[str(k)]}), flush=True)
    return out


def throughput(n: int = 64) -> dict:
    clips = decoded([w for w, _, _ in keyword_clips(max(1, n // len(WORDS) + 1), seed=5)])[:n]
    out = {}
    backbone: Callable[[], SpeechEmbeddingBackbone | SpeakerBackbone]
    for backbone in (SpeechEmbeddingBackbone, SpeakerBackbone):
        bb = backbone()
        bb.embed(clips[:4])
        start = time.perf_counter()
        bb.embed(clips)
        elapsed = time.perf_counter() - start
        out[bb.name] = {"clips": len(clips), "mean_clip_s": float(np.mean([len(c) for c in clips]) / SAMPLE_RATE),
                        "clips_per_s": len(clips) / elapsed}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--pool-per-word", type=int, default=96)
    parser.add_argument("--test-per-word", type=int, default=30)
    parser.add_argument("--far", type=float, default=0.05)
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--json", default="audio-benchmark.json")
    parser.add_argument("--http-seconds", type=float, default=15.0)
    parser.add_argument("--http-clients", default="1,16")
    parser.add_argument("--torch-threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--parts", nargs="+", default=list(PARTS[:-1]), choices=list(PARTS))
    parser.add_argument("--speakers", type=int, default=8, help="speakers in --parts speaker-sizes")
    args = parser.parse_args()
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    runs: dict[str, Callable[[], dict]] = {
        "keywords": lambda: keywords(args.draws, args.pool_per_word, args.test_per_word),
        "selection": lambda: selection(args.pool_per_word, args.test_per_word),
        "speakers": lambda: speakers(12, 6, 6, args.far),
        "throughput": throughput,
        "inprocess": lambda: inprocess(args.tasks, args.requests, args.concurrency),
        "http": lambda: http(args.http_seconds, [int(c) for c in args.http_clients.split(",")]),
        "speaker-sizes": lambda: speaker_sizes(args.speakers),
    }
    results = {part: runs[part]() for part in args.parts}
    report(results)
    with open(args.json, "w") as fh:
        json.dump(results, fh, indent=2)


def report(results: dict) -> None:
    if "keywords" in results:
        print("| clips per word | method | accuracy (mean ± sd over draws) |\n|---|---|---|")
    for k, methods in results.get("keywords", {}).get("per_label", {}).items():
        for method, r in methods.items():
            print(f"| {k} | {method} | {r['mean']:.3f} ± {r['std']:.3f} |")
    s = results.get("speakers")
    if s:
        print(f"\nspeaker id ({s['enrolled_speakers']} enrolled, {s['unknown_speakers']} unknown): closed-set accuracy "
              f"{s['closed_set_accuracy']:.3f}; open set at target FAR {s['target_false_accept_rate']:.0%} "
              f"(threshold {s['threshold']:.3f}): known correct {s['open_set_accuracy_known']:.3f}, false reject "
              f"{s['false_reject_rate_known']:.3f}, unknown false accept {s['false_accept_rate_unknown']:.3f} "
              f"(cross-fitted on the enrolled speakers: {s['false_accept_rate_cross_fitted']:.3f})")
    sizes = results.get("speaker-sizes")
    if sizes:
        print(f"\nspeaker id at sizes ({sizes['speakers']} speakers, {sizes['test_clips']} held-out clips)\n"
              "| clips per speaker | GE2E + speakers kind | MFCC nearest centroid (no transfer) | embed s | fit s | "
              "head bytes |\n|---|---|---|---|---|---|")
        for k, r in sizes.items():
            if isinstance(r, dict):
                print(f"| {k} | {r['ge2e_accuracy']:.3f} | {r['mfcc_baseline_accuracy']:.3f} | {r['embed_s']:.1f} | "
                      f"{r['fit_s']:.2f} | {r['head_bytes']} |")
    if "selection" in results:
        print("\n| clips per word | head served by CV (auto) | its accuracy, held-out voices | CV accuracy per head "
              "| fit s |\n|---|---|---|---|---|")
    for k, r in results.get("selection", {}).items():
        cv = ", ".join(f"{h} {a:.3f}" for h, a in r["cv_accuracy"].items())
        print(f"| {k} | {r['served_head']} | {r['test_accuracy']:.3f} | {cv} | {r['fit_s']:.1f} |")
    for name, t in results.get("throughput", {}).items():
        print(f"throughput {name}: {t['clips_per_s']:.1f} clips/s (clips of {t['mean_clip_s']:.2f} s)")
    if "inprocess" in results:
        print("\n| backbone | tasks | in flight | one at a time: clips/s, CPU ms/clip | batched across tasks: clips/s, "
              "CPU ms/clip | head bytes per task |\n|---|---|---|---|---|---|")
    for name, t in results.get("inprocess", {}).items():
        print(f"| {name} | {t['tasks']} | {t['concurrency']} | {t['one_at_a_time_clips_per_s']:.1f}, "
              f"{t['one_at_a_time_cpu_ms_per_clip']:.1f} | {t['batched_clips_per_s']:.1f}, "
              f"{t['batched_cpu_ms_per_clip']:.1f} | {t['head_bytes_per_task']} |")
    if "http" in results:
        print("\n| task (backbone) | clients | requests/s (one clip each) | p50 ms | p99 ms | non-200 |\n"
              "|---|---|---|---|---|---|")
    for name, r in results.get("http", {}).items():
        for n, t in r.items():
            if isinstance(t, dict):
                bad = t["requests"] - t["ok"]
                print(f"| {name} ({r['backbone']}) | {n} | {t['throughput_rps']:.1f} | {t['p50_ms']:.0f} | "
                      f"{t['p99_ms']:.0f} | {bad} |")


if __name__ == "__main__":
    main()
