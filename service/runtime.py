"""The process-wide runtime: store, backbones and their batchers, head cache, router, jobs.

Built once per worker process by the BentoML service; routes reach it via ``app.state``.
"""

from __future__ import annotations

import sys
import tempfile

from adapters.generation import DecodeLimits

from . import logs, metrics
from .backbones.registry import BUILTIN, Registry, parse_extra
from .backbones.runtimes import RuntimeConfig
from .batching import Batcher, MapBatcher, TokenBatcher, feature_source, text_trunk
from .caching import HeadCache
from .config import Settings
from .engine.generation import GenerationEngine, ModelSpec
from .engine.shadow import ShadowLog
from .jobs import JobRunner
from .ratelimit import RateLimiter
from .router import Router, store_head_loader
from .store.db import private_dir
from .store.repository import Store
from .tenancy import Auth, Throttle, load_admin_token

log = logs.get("runtime")


def generation_engine(settings: Settings) -> GenerationEngine:
    """The generation engine the settings describe (nothing is loaded until it is used)."""
    spec = ModelSpec(
        settings.generation_model or None,
        settings.generation_gguf_file or None,
        settings.generation_cache_path,
    )
    limits = DecodeLimits(
        max_batch=settings.generation_max_batch,
        max_prompt_tokens=settings.generation_max_prompt_tokens,
        max_new_tokens=settings.generation_max_tokens,
    )
    return GenerationEngine(
        spec,
        limits,
        adapter_cache_bytes=int(settings.generation_adapter_cache_mb * 2**20),
        queue_size=settings.generation_queue_size,
        adapter_labels=settings.metrics_adapter_labels,
    )


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        private_dir(settings.data_path)  # 0700: the database, admin token and caches live here
        # upload bodies (and any other temporary file of this process) spool here: see GRAFT_UPLOAD_SPOOL_DIR
        settings.spool_path.mkdir(parents=True, exist_ok=True)
        tempfile.tempdir = str(settings.spool_path)
        self.store = Store(
            settings.resolved_database_url, max_queued_jobs_per_tenant=settings.max_queued_jobs_per_tenant
        )
        self.store.migrate()  # under a lock: replicas starting together migrate once
        token, token_path = load_admin_token(settings)
        if token_path is not None:
            print(f"graft: admin token is in {token_path}", file=sys.stderr, flush=True)
        self.predict_rate = RateLimiter(settings.predict_rate_per_s, settings.predict_burst)
        self.auth = Auth(self.store, token, cache_ttl_s=settings.task_cache_ttl_s)
        self.auth_throttle = Throttle(settings.auth_failure_rate_per_s, settings.auth_failure_burst)

        specs = {**BUILTIN, **parse_extra(settings.extra_backbones)}
        runtimes = RuntimeConfig(settings.backbone_runtime, settings.onnx_cache_path, settings.onnx_threads)
        self.backbones = Registry(specs, settings.device, settings.torch_threads, runtimes)
        self.backbones.load_all()
        for env, name, modality in (
            ("GRAFT_DEFAULT_TEXT_BACKBONE", settings.default_text_backbone, "text"),
            ("GRAFT_DEFAULT_IMAGE_BACKBONE", settings.default_image_backbone, "image"),
            ("GRAFT_DEFAULT_AUDIO_BACKBONE", settings.default_audio_backbone, "audio"),
        ):
            if name not in self.backbones.loaded or self.backbones.specs[name].modality != modality:
                raise ValueError(f"{env}={name!r} is not a configured {modality} backbone")
        self._batchers = {
            name: Batcher(
                bb,
                settings.batch_max_size,
                settings.batch_max_delay_ms / 1000,
                settings.batch_queue_size,
                settings.batch_tenant_queue_size,
                max_seconds=settings.batch_max_audio_seconds,
            )
            for name, bb in self.backbones.loaded.items()
        }
        # the token lanes (per-token states for entities and answers) of the backbones with a transformer
        self._token_batchers = {
            name: TokenBatcher(
                bb,
                settings.batch_max_size,
                settings.batch_max_delay_ms / 1000,
                settings.batch_queue_size,
                settings.batch_tenant_queue_size,
            )
            for name, bb in self.backbones.loaded.items()
            if text_trunk(bb) is not None
        }
        # the map lanes (multi-scale feature maps for detection) of the image backbones with a torch CNN (an
        # ONNX-served one: its torch origin)
        self._map_batchers = {
            name: MapBatcher(
                bb,
                settings.batch_max_size,
                settings.batch_max_delay_ms / 1000,
                settings.batch_queue_size,
                settings.batch_tenant_queue_size,
            )
            for name, bb in self.backbones.loaded.items()
            if feature_source(bb) is not None
        }
        self.shadow_log = ShadowLog(
            self.store,
            retention_days=settings.feedback_retention_days,
            max_rows_per_task=settings.max_shadow_records_per_task,
        )
        self.generation = generation_engine(settings)  # the causal LM loads on first use
        head_cache = HeadCache(store_head_loader(self.store, self.trunk), int(settings.head_cache_mb * 2**20))
        self.router = Router(
            self.store,
            self.batcher,
            head_cache,
            settings.task_cache_ttl_s,
            metrics.TenantLabels(settings.metrics_tenant_labels),
            self.token_batcher,
            self.shadow_log,
            map_batchers=self.map_batcher,
        )
        self.jobs = JobRunner(
            self.store,
            self.batcher,
            settings,
            self.backbones.names,
            on_version=lambda job: self.router.forget(job.tenant_id, job.task_name),
            token_batchers=self.token_batcher,
            map_batchers=self.map_batcher,
            generation=self.generation,
        )
        if self.trains:
            self.jobs.start()
        self.store_gauges = metrics.StoreGauges(self.store.totals)
        self.store_gauges.start()
        self.ready = True
        log.info(
            "graft ready",
            extra={"role": settings.role, "backbones": sorted(self._batchers), "device": self.backbones.device},
        )

    @property
    def trains(self) -> bool:
        """Whether this process claims and runs training jobs (GRAFT_ROLE worker or all)."""
        return self.settings.role in ("worker", "all")

    @property
    def serves(self) -> bool:
        """Whether this process answers the API (GRAFT_ROLE api or all); a worker answers 503."""
        return self.settings.role in ("api", "all")

    def batcher(self, backbone: str) -> Batcher:
        return self._batchers[backbone]

    def token_batcher(self, backbone: str) -> TokenBatcher:
        """The token lane of a text backbone; KeyError for a backbone without per-token states."""
        return self._token_batchers[backbone]

    def map_batcher(self, backbone: str) -> MapBatcher:
        """The map lane of an image backbone; KeyError for a backbone without feature maps (not a torch CNN)."""
        return self._map_batchers[backbone]

    def trunk(self, backbone: str) -> object | None:
        """What fine-tuned heads of a loaded backbone bind to, if it has it: its torch text model, or (an image
        CNN) its torch image backbone with feature maps (detection)."""
        if backbone not in self.backbones.loaded:
            return None
        bb = self.backbones.get(backbone)
        return text_trunk(bb) or feature_source(bb)

    def default_backbone(self, modality: str) -> str:
        defaults = {"image": self.settings.default_image_backbone, "audio": self.settings.default_audio_backbone}
        return defaults.get(modality, self.settings.default_text_backbone)

    def close(self) -> None:
        """Graceful shutdown: finish running jobs (up to the grace period), drain batches, close the store."""
        self.ready = False
        self.jobs.stop(self.settings.shutdown_grace_s)
        self.store_gauges.stop()
        for batcher in [*self._batchers.values(), *self._token_batchers.values(), *self._map_batchers.values()]:
            batcher.close()
        self.shadow_log.close()
        self.generation.close()
        self.store.close()
        log.info("graft stopped")
