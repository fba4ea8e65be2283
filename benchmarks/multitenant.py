"""Shared pieces of the multi-tenant benchmarks: trained heads on real embeddings, tasks seeded
through the store's own API, and result reporting (a printed table plus JSON in benchmarks/results/)."""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from adapters import heads
from adapters.heads import LinearHead
from adapters.ood import OodModel
from service.backbones.base import Backbone
from service.store.repository import NewVersion, Store

from .short_texts import labelled_sentences

RESULTS = Path(__file__).resolve().parent / "results"


def train_heads(backbone: Backbone, n: int, seed: int = 0, per_label: int = 8, pool: int = 40) -> list[LinearHead]:
    """``n`` distinct linear heads, each fitted on its own draw of real BBC sentences: a random
    2–5 topic subset with ``per_label`` examples per topic, drawn from the first ``pool`` sentences
    of each topic (the backbone embeds each pooled sentence once)."""
    pairs, seen = [], {}
    for text, label in labelled_sentences("train"):
        if seen.get(label, 0) < pool:
            seen[label] = seen.get(label, 0) + 1
            pairs.append((text, label))
    vectors = backbone.embed([text for text, _ in pairs])
    by_label: dict[str, np.ndarray] = {}
    for label in sorted({label for _, label in pairs}):
        by_label[label] = np.array([i for i, (_, lab) in enumerate(pairs) if lab == label])
    topics = sorted(by_label)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        chosen = sorted(rng.choice(topics, size=int(rng.integers(2, len(topics) + 1)), replace=False))
        rows = np.concatenate([rng.choice(by_label[t], size=per_label, replace=False) for t in chosen])
        y = np.repeat(np.arange(len(chosen)), per_label)
        out.append(LinearHead(list(chosen), c=10.0).fit(vectors[rows], y))
    return out


def install(
    store: Store, tenant_id: str, name: str, head: heads.Head, backbone: Backbone, ood: OodModel | None = None
) -> tuple[str, int]:
    """Create task ``name`` and make ``head`` its active version (with ``ood``, its OOD model), through the
    same store calls a training job makes (create → claim → complete). Returns (task id, version)."""
    examples = [(f"example of {label}", label) for label in head.labels]
    task, _ = store.create_task(
        tenant_id, name, modality="text", backbone=backbone.name, head=head.kind, examples=examples
    )
    job = store.claim_job("benchmark-seeder", lease_s=600, max_attempts=3)
    assert job is not None and job.task_id == task.id, "another job was queued in the benchmark store"
    blob = heads.to_bytes(
        head,
        ood=ood,
        backbone=backbone.name,
        backbone_revision=backbone.revision,
        runtime=backbone.runtime,
        dim=backbone.dim,
    )
    number = store.complete_job(
        job.id,
        "benchmark-seeder",
        NewVersion(
            head=head.kind,
            backbone=backbone.name,
            backbone_revision=backbone.revision,
            runtime=backbone.runtime,
            labels=head.labels,
            metrics={},
            n_examples=len(examples),
            weights=blob,
        ),
    )
    assert number is not None
    return task.id, number


def zipf_indices(n_items: int, size: int, s: float, rng: np.random.Generator) -> np.ndarray:
    """``size`` draws from a Zipf(s) law over ``n_items`` ranks (0 = most popular), shuffled ids."""
    weights = 1.0 / np.arange(1, n_items + 1) ** s
    ranks = rng.choice(n_items, size=size, p=weights / weights.sum())
    return rng.permutation(n_items)[ranks]


def percentile_ms(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q)) if len(values) else float("nan")


def report(name: str, columns: Sequence[str], rows: list[dict], **meta: object) -> Path:
    """Print ``rows`` as a table and write them with ``meta`` to benchmarks/results/<name>.json."""
    widths = [max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns]
    print("  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True)))
    for r in rows:
        print("  ".join(_fmt(r.get(c)).rjust(w) for c, w in zip(columns, widths, strict=True)))
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    env = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    path.write_text(json.dumps({"benchmark": name, "env": env, **meta, "rows": rows}, indent=2, default=str))
    print(f"→ {path.relative_to(RESULTS.parents[1])}")
    return path


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return "" if value is None else str(value)
