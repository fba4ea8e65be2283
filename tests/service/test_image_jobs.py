"""Training jobs for image tasks: stored images are decoded, preprocessed and embedded in chunks,
with progress reported while embedding."""

from __future__ import annotations

from service import images, pipeline
from service.backbones.image import TorchImageBackbone
from service.batching import Batcher
from service.config import Settings
from service.jobs import EMBED_SHARE, JobRunner
from service.store.repository import Store
from tests.conftest import load_jsonl, per_label


def test_image_job_embeds_stored_examples_and_reports_progress(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(pipeline, "EMBED_CHUNK", 16)
    backbone = TorchImageBackbone("mobilenet_v2", "mobilenet_v2")
    rows = [r for r in per_label(load_jsonl("digits.train.jsonl"), 10, seed=0) if r["label"] in "0123"]  # 40: 3 chunks
    examples = [
        (
            images.to_stored(
                images.decode(images.from_base64(r["input"]), images.STORED_LIMITS), backbone.preprocessing
            ),
            r["label"],
        )
        for r in rows
    ]
    store = Store(f"sqlite:///{tmp_path / 'g.db'}")
    store.create_schema()
    batcher = Batcher(backbone)
    runner = JobRunner(store, lambda _: batcher, Settings.from_env({}, data_dir=str(tmp_path)))
    progress: list[float] = []
    heartbeat = store.heartbeat

    def recording(job_id: str, worker_id: str, value: float) -> bool:
        progress.append(value)
        return heartbeat(job_id, worker_id, value)

    store.heartbeat = recording  # type: ignore[method-assign]
    try:
        tenant, _ = store.create_tenant("acme")
        task, job = store.create_task(
            tenant.id, "digits", modality="image", backbone="mobilenet_v2", head="linear", examples=examples
        )
        runner.run(store.claim_job(runner.worker_id, lease_s=60, max_attempts=3))
        done = store.get_job(tenant.id, job.id)
        assert (done.status, done.version, done.progress) == ("succeeded", 1, 1.0), done.error
        version = store.version(task.id, 1)
        assert (version.backbone, version.backbone_revision, version.n_examples) == (
            "mobilenet_v2",
            backbone.revision,
            len(rows),
        )
        assert version.metrics["accuracy"] > 0.6  # 4 digits, 10 each: far above chance (0.25)
        embedding = [p for p in progress if 0 < p <= EMBED_SHARE]
        assert embedding == sorted(embedding) and len(set(embedding)) == 3, progress  # one step per chunk
    finally:
        batcher.close()
        store.close()
