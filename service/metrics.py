"""Every Prometheus metric Graft exports, defined once (docs/metrics.md documents each).

Names follow ``graft_<scope>_<what>``; histograms have explicit buckets. BentoML serves them on
``/metrics``: ``bentoml serve`` starts each worker with ``PROMETHEUS_MULTIPROC_DIR`` set, so
prometheus_client writes these values to that directory and BentoML's ``/metrics`` handler
aggregates every worker's files. Gauges therefore declare how workers combine (``livesum`` for
per-process quantities, ``livemostrecent`` for store-wide counts every worker reports alike).

Label values are always bounded: endpoints are route templates (not raw paths), statuses are
HTTP codes, backbones and job statuses are small fixed sets, and tenants and generation adapters get
their own value only through :class:`BoundedLabels` (at most N per process, opaque, the rest ``other``). No
metric has a per-task label but the opt-in, bounded, opaque ``adapter`` of the generation metrics.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from prometheus_client import Counter, Gauge, Histogram

from .logs import get as get_logger
from .store.repository import StoreTotals

log = get_logger("metrics")

SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
QUEUE_SECONDS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
RATIOS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
JOB_SECONDS_BUCKETS = (1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
OTHER = "other"

# -- HTTP ---------------------------------------------------------------------------------

HTTP_REQUESTS = Counter(
    "graft_http_requests_total",
    "HTTP requests answered, by route template, method and status.",
    ["endpoint", "method", "status"],
)
HTTP_SECONDS = Histogram(
    "graft_http_request_duration_seconds",
    "Time from request to the end of the response, by route template, method and status.",
    ["endpoint", "method", "status"],
    buckets=SECONDS,
)

# -- backbones and batching ---------------------------------------------------------------

BATCH_SIZE = Histogram(
    "graft_backbone_batch_size",
    "Inputs per backbone pass (predict and training traffic of all tenants together).",
    ["backbone"],
    buckets=BATCH_SIZES,
)
QUEUE_DELAY = Histogram(
    "graft_backbone_queue_delay_seconds",
    "Time a request waited in the batch queue before its first inputs entered a backbone pass.",
    ["backbone"],
    buckets=QUEUE_SECONDS,
)
INFERENCE_SECONDS = Histogram(
    "graft_backbone_inference_seconds",
    "Duration of one backbone pass (tokenise, forward, pool) plus the batch's head step.",
    ["backbone"],
    buckets=SECONDS,
)
PADDING_RATIO = Histogram(
    "graft_backbone_padding_ratio",
    "Share of the token positions in a backbone pass that were padding (0 = none wasted).",
    ["backbone"],
    buckets=RATIOS,
)
QUEUE_INPUTS = Gauge(
    "graft_backbone_queue_inputs",
    "Inputs waiting for a backbone pass.",
    ["backbone"],
    multiprocess_mode="livesum",
)
REJECTED = Counter(
    "graft_backbone_rejected_inputs_total",
    "Predict inputs refused with 503 because the backbone's queue was full.",
    ["backbone"],
)

# -- head cache ---------------------------------------------------------------------------

HEAD_CACHE_HITS = Counter("graft_head_cache_hits_total", "Predict requests whose head was already in memory.")
HEAD_CACHE_MISSES = Counter(
    "graft_head_cache_misses_total",
    "Predict requests that waited for their head to load from the store (own or shared load).",
)
HEAD_CACHE_EVICTIONS = Counter("graft_head_cache_evictions_total", "Heads dropped to stay within the byte budget.")
HEAD_CACHE_BYTES = Gauge("graft_head_cache_bytes", "Bytes of heads held in memory.", multiprocess_mode="livesum")
HEAD_CACHE_HEADS = Gauge("graft_head_cache_heads", "Heads held in memory.", multiprocess_mode="livesum")
HEAD_CACHE_BUDGET = Gauge("graft_head_cache_budget_bytes", "The head cache's byte budget.", multiprocess_mode="livesum")
HEAD_LOAD_SECONDS = Histogram(
    "graft_head_load_seconds",
    "Time to read a head from the store and decode it (one per cache miss load).",
    buckets=SECONDS,
)

# -- predict traffic by tenant (bounded) -----------------------------------------------------

TENANT_INPUTS = Counter(
    "graft_tenant_predict_inputs_total",
    "Inputs predicted, by tenant id; only the first N busy tenants of a process get their own value, the rest `other`.",
    ["tenant"],
)

# -- out-of-distribution inputs, by task kind (bounded: the registered kinds) -------------------

OOD_SCORED = Counter(
    "graft_ood_scored_total",
    "Predicted inputs given an OOD score (their version has an OOD model), by task kind.",
    ["kind"],
)
OOD_FLAGGED = Counter(
    "graft_ood_flagged_total",
    "Predicted inputs flagged out of distribution (`ood: true`), by task kind. The flag rate is "
    "rate(graft_ood_flagged_total) / rate(graft_ood_scored_total); about GRAFT_OOD_FPR in distribution.",
    ["kind"],
)

OOD_SCORE = Histogram(
    "graft_ood_score",
    "OOD scores of predicted inputs (1.0 is the threshold), by task kind: the mean over time is "
    "rate(graft_ood_score_sum) / rate(graft_ood_score_count); a rise is a distribution shift.",
    ["kind"],
    buckets=(0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0, 8.0),
)

# -- shadow versions, by task kind ----------------------------------------------------------

SHADOW_PREDICTIONS = Counter(
    "graft_shadow_predictions_total",
    "Predict inputs a shadow version also answered (recorded, not returned), by task kind.",
    ["kind"],
)
SHADOW_AGREEMENTS = Counter(
    "graft_shadow_agreements_total",
    "Shadow answers equal to the active version's answer, by task kind.",
    ["kind"],
)

# -- generation (bounded labels: the token source, base or adapter; the finish reason) ---------------

GENERATION_TOKENS = Counter(
    "graft_generation_tokens_total",
    "Tokens generated, by source: `adapter` (a generation task's LoRA adapter) or `base` (no adapter).",
    ["source"],
)
GENERATION_SEQUENCES = Counter(
    "graft_generation_sequences_total",
    "Generated sequences (one per input) finished, by finish reason: `stop`, `length` or `cancelled`.",
    ["finish_reason"],
)
GENERATION_REJECTED = Counter(
    "graft_generation_rejected_total", "Generate requests refused with 503 because the generation queue was full."
)
GENERATION_QUEUE_SECONDS = Histogram(
    "graft_generation_queue_seconds",
    "Time a generate request waited before its rows were handed to the decoder (an adapter slot included).",
    buckets=QUEUE_SECONDS,
)
GENERATION_ROWS = Gauge(
    "graft_generation_batch_rows", "Rows in the generation batch after the last step.", multiprocess_mode="livesum"
)
GENERATION_WAITING = Gauge(
    "graft_generation_waiting_inputs",
    "Generate inputs waiting for a row (or an adapter slot).",
    multiprocess_mode="livesum",
)
GENERATION_ADAPTER_LOADS = Counter(
    "graft_generation_adapter_loads_total", "Adapters loaded into a generation slot (a slot cache miss)."
)
GENERATION_ADAPTER_HITS = Counter(
    "graft_generation_adapter_hits_total", "Generate requests whose adapter was already in a slot."
)
GENERATION_ADAPTER_EVICTIONS = Counter(
    "graft_generation_adapter_evictions_total", "Adapters evicted from their slot (least recently used, not in use)."
)
GENERATION_ADAPTER_SLOTS = Gauge(
    "graft_generation_adapter_slots_used", "Generation adapter slots holding an adapter.", multiprocess_mode="livesum"
)
GENERATION_ADAPTER_CAPACITY = Gauge(
    "graft_generation_adapter_slots",
    "Generation adapter slots (GRAFT_GENERATION_ADAPTER_CACHE_MB over one slot's bytes).",
    multiprocess_mode="livesum",
)

# -- generation per adapter (bounded: AdapterLabels names at most N adapters, the rest `other`; `base`) ----------

GENERATION_ADAPTER_REQUESTS = Counter(
    "graft_generation_adapter_requests_total",
    "Generate requests whose rows went to the decoder, by adapter (opaque, at most N named, the rest `other`).",
    ["adapter"],
)
GENERATION_ADAPTER_INPUTS = Counter(
    "graft_generation_adapter_inputs_total",
    "Generate inputs (sequences) that went to the decoder, by adapter.",
    ["adapter"],
)
GENERATION_ADAPTER_TOKENS = Counter(
    "graft_generation_adapter_tokens_total", "Tokens generated, by adapter.", ["adapter"]
)
GENERATION_ADAPTER_QUEUE_SECONDS = Histogram(
    "graft_generation_adapter_queue_seconds",
    "Time a generate request waited before its rows went to the decoder (an adapter slot included), by adapter.",
    ["adapter"],
    buckets=QUEUE_SECONDS,
)
GENERATION_ADAPTER_FIRST_TOKEN = Histogram(
    "graft_generation_adapter_first_token_seconds",
    "Time from a generate request's arrival at the scheduler to an input's first generated token, by adapter.",
    ["adapter"],
    buckets=SECONDS,
)
GENERATION_ADAPTER_TOKEN_SECONDS = Histogram(
    "graft_generation_adapter_token_seconds",
    "Mean time between two generated tokens of one sequence (after the first), by adapter.",
    ["adapter"],
    buckets=SECONDS,
)

# -- training jobs --------------------------------------------------------------------------

JOBS = Counter("graft_training_jobs_total", "Training jobs finished by this process, by outcome.", ["status"])
JOB_SECONDS = Histogram(
    "graft_training_job_duration_seconds",
    "Wall time of a training job run, by outcome.",
    ["status"],
    buckets=JOB_SECONDS_BUCKETS,
)

# -- store-wide counts (refreshed periodically by every worker) ------------------------------

TASKS = Gauge(
    "graft_store_tasks",
    "Tasks in the store, by whether they have a trained version.",
    ["trained"],
    multiprocess_mode="livemostrecent",
)
TENANTS = Gauge("graft_store_tenants", "Tenants in the store.", multiprocess_mode="livemostrecent")
STORE_JOBS = Gauge(
    "graft_store_jobs", "Training jobs in the store, by status.", ["status"], multiprocess_mode="livemostrecent"
)
JOB_STATUSES = ("queued", "running", "succeeded", "failed", "superseded")


_ENDPOINT_LABEL = re.compile(r'^bentoml_[a-z_]+\{[^}]*endpoint="([^"]*)"')
BENTOML_ENDPOINTS = frozenset({"/readyz", "/livez", "/healthz", "/metrics"})  # BentoML's own, fixed


def without_raw_paths(exposition: str) -> str:
    """Drop BentoML's own per-request samples for any path but its fixed endpoints from a /metrics page.

    BentoML labels its ``bentoml_service_request_*`` series with the raw request path (job ids, task
    names, or any random path a client sends): unbounded cardinality. ``graft_http_*`` counts the
    same requests by route template (``unmatched`` for a path with no route).
    """

    def kept(line: str) -> bool:
        found = _ENDPOINT_LABEL.match(line)
        return found is None or found.group(1) in BENTOML_ENDPOINTS

    return "\n".join(line for line in exposition.split("\n") if kept(line))


def observe_request(endpoint: str, method: str, status: int, seconds: float) -> None:
    code = str(status)
    HTTP_REQUESTS.labels(endpoint, method, code).inc()
    HTTP_SECONDS.labels(endpoint, method, code).observe(seconds)


def job_finished(status: str, seconds: float) -> None:
    JOBS.labels(status).inc()
    JOB_SECONDS.labels(status).observe(seconds)


def opaque(key: str, prefix: str = "t-") -> str:
    """A tenant's (or, with ``prefix`` ``a-``, an adapter's task's) label value: not its id (``/metrics`` is
    unauthenticated), but stable, so an operator who knows the id can find its series: the prefix + the first 12
    hex digits of SHA-256(id)."""
    return prefix + hashlib.sha256(key.encode()).hexdigest()[:12]


class BoundedLabels:
    """Bounded label values for metrics per tenant (or per adapter).

    A key gets its own value once it has sent ``admit_after`` inputs, while fewer than ``limit`` keys have
    one; admission is sticky for the life of the process. So the first ``limit`` keys to become busy are
    named and everything else is ``other``: cardinality never exceeds ``limit + 1`` per process. Sticky, not
    the most recent N: a series once written stays in prometheus_client's multiprocess files until the process
    ends (rotating names would add series, not replace them) and a counter that came back would restart at 0.
    Named values are :func:`opaque`, never the id; the default limits (``GRAFT_METRICS_TENANT_LABELS``,
    ``GRAFT_METRICS_ADAPTER_LABELS``) are 0: nothing is named at all.
    """

    def __init__(self, limit: int, admit_after: int = 100, prefix: str = "t-") -> None:
        self.limit = limit
        self.admit_after = admit_after
        self.prefix = prefix
        self._named: set[str] = set()
        self._pending: dict[str, int] = {}
        self._lock = threading.Lock()

    def label(self, key: str, amount: int = 1) -> str:
        if key in self._named:
            return opaque(key, self.prefix)
        with self._lock:
            if len(self._named) >= self.limit:
                self._pending.clear()
                return OTHER
            seen = self._pending.get(key, 0) + amount
            if seen < self.admit_after:
                self._pending[key] = seen
                return OTHER
            self._pending.pop(key, None)
            self._named.add(key)
            return opaque(key, self.prefix)


class TenantLabels(BoundedLabels):
    """Per-tenant predict inputs: the first ``limit`` tenants of a process to send ``admit_after`` inputs."""

    def count(self, tenant: str, inputs: int) -> None:
        TENANT_INPUTS.labels(self.label(tenant, inputs)).inc(inputs)


ADAPTER_ADMIT_AFTER = 10  # generate inputs before an adapter may get its own label value


class AdapterLabels(BoundedLabels):
    """The per-adapter generation metrics' ``adapter`` label: an adapter is its task's (every version of a task
    counts as one adapter), named ``a-`` + :func:`opaque` of the task id once it has generated ``admit_after``
    inputs, for the first ``limit`` such tasks of the process; every other adapter is ``other``, and rows
    decoded without an adapter are ``base``. At most ``limit + 2`` values per process."""

    def __init__(self, limit: int, admit_after: int = ADAPTER_ADMIT_AFTER) -> None:
        super().__init__(limit, admit_after, prefix="a-")

    def of(self, task: str | None, inputs: int) -> str:
        return BASE if task is None else self.label(task, inputs)


BASE = "base"


def generation_admitted(label: str, inputs: int, waited_s: float) -> None:
    """A generate request's rows went to the decoder after ``waited_s`` in the queue."""
    GENERATION_QUEUE_SECONDS.observe(waited_s)
    GENERATION_ADAPTER_REQUESTS.labels(label).inc()
    GENERATION_ADAPTER_INPUTS.labels(label).inc(inputs)
    GENERATION_ADAPTER_QUEUE_SECONDS.labels(label).observe(waited_s)


def generation_finished(
    label: str, source: str, tokens: int, finish_reason: str, first_token_s: float | None, per_token_s: float | None
) -> None:
    """One generated sequence ended: its tokens, and its latencies (None: it had no token, or only one)."""
    GENERATION_TOKENS.labels(source).inc(tokens)
    GENERATION_SEQUENCES.labels(finish_reason).inc()
    GENERATION_ADAPTER_TOKENS.labels(label).inc(tokens)
    if first_token_s is not None:
        GENERATION_ADAPTER_FIRST_TOKEN.labels(label).observe(first_token_s)
    if per_token_s is not None:
        GENERATION_ADAPTER_TOKEN_SECONDS.labels(label).observe(per_token_s)


class StoreGauges:
    """Refreshes the store-wide gauges every ``interval_s`` from a daemon thread."""

    def __init__(self, totals: Callable[[], StoreTotals], interval_s: float = 15.0) -> None:
        self._totals = totals
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="store-gauges", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def refresh(self) -> None:
        totals = self._totals()
        TENANTS.set(totals.tenants)
        TASKS.labels("true").set(totals.trained_tasks)
        TASKS.labels("false").set(totals.untrained_tasks)
        for status in JOB_STATUSES:
            STORE_JOBS.labels(status).set(totals.jobs.get(status, 0))

    def _run(self) -> None:
        while True:
            try:
                self.refresh()
            except Exception:  # a store hiccup must not kill the thread
                log.warning("refreshing store gauges failed", exc_info=True)
            if self._stop.wait(self.interval_s):
                return


class OodWindow:
    """Per task and version, this process's OOD-scored and flagged inputs over the last ``window_s``
    seconds (in ``slices`` time slices), for the monitoring endpoint. Not a Prometheus metric (that would
    be a per-task label); bounded to ``max_tasks`` tasks, the least recently predicted dropped first."""

    def __init__(
        self,
        window_s: float = 3600.0,
        slices: int = 60,
        max_tasks: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window_s, self.slice_s, self.max_tasks, self.clock = window_s, window_s / slices, max_tasks, clock
        # task id -> {slice index: {version: [scored, flagged, sum of scores]}}
        self._tasks: OrderedDict[str, dict[int, dict[int, list[float]]]] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, task_id: str, version: int, scores: Sequence[float]) -> None:
        if not scores:
            return
        now = int(self.clock() // self.slice_s)
        with self._lock:
            slices = self._tasks.setdefault(task_id, {})
            self._tasks.move_to_end(task_id)
            for old in [i for i in slices if i <= now - round(self.window_s / self.slice_s)]:
                del slices[old]
            entry = slices.setdefault(now, {}).setdefault(version, [0.0, 0.0, 0.0])
            entry[0] += len(scores)
            entry[1] += sum(1 for x in scores if x > 1.0)
            entry[2] += float(sum(scores))
            while len(self._tasks) > self.max_tasks:
                self._tasks.popitem(last=False)

    def read(self, task_id: str) -> dict[int, tuple[int, int, float]]:
        """Per version: (inputs scored, inputs flagged, mean score) within the window."""
        oldest = int(self.clock() // self.slice_s) - round(self.window_s / self.slice_s)
        totals: dict[int, list[float]] = {}
        with self._lock:
            for index, versions in self._tasks.get(task_id, {}).items():
                if index <= oldest:
                    continue
                for version, (scored, flagged, total) in versions.items():
                    t = totals.setdefault(version, [0.0, 0.0, 0.0])
                    t[0], t[1], t[2] = t[0] + scored, t[1] + flagged, t[2] + total
        return {v: (int(s), int(f), t / s if s else 0.0) for v, (s, f, t) in sorted(totals.items())}

    def series(self, task_id: str, version: int, windows: int) -> list[tuple[int, int, float]]:
        """One version's (inputs scored, inputs flagged, sum of scores) in ``windows`` consecutive windows
        covering the last ``window_s`` seconds, oldest first (each ``window_s / windows`` long, slices whole)."""
        now = int(self.clock() // self.slice_s)
        per_slice = round(self.window_s / self.slice_s)
        width = max(1, per_slice // windows)
        out = [[0.0, 0.0, 0.0] for _ in range(windows)]
        with self._lock:
            for index, versions in self._tasks.get(task_id, {}).items():
                back = now - index  # 0: the current slice
                w = windows - 1 - back // width
                if back < 0 or w < 0 or version not in versions:
                    continue
                scored, flagged, total = versions[version]
                out[w][0], out[w][1], out[w][2] = out[w][0] + scored, out[w][1] + flagged, out[w][2] + total
        return [(int(n), int(f), t) for n, f, t in out]

    def forget(self, task_id: str) -> None:
        with self._lock:
            self._tasks.pop(task_id, None)
