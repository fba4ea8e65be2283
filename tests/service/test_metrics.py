from __future__ import annotations

from prometheus_client import REGISTRY

from service import metrics
from service.caching import HeadCache
from tests.service.test_caching import linear


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_tenant_labels_are_bounded() -> None:
    labels = metrics.TenantLabels(limit=2, admit_after=10)
    assert labels.label("quiet", 3) == metrics.OTHER  # not busy yet
    assert labels.label("busy-1", 10) == metrics.opaque("busy-1")  # never the tenant id itself
    assert labels.label("quiet", 3) == metrics.OTHER
    assert labels.label("busy-2", 50) == metrics.opaque("busy-2")
    assert labels.label("busy-3", 1000) == metrics.OTHER  # the two slots are taken for good
    assert labels.label("busy-1") == metrics.opaque("busy-1")
    before = sample("graft_tenant_predict_inputs_total", tenant=metrics.OTHER)
    labels.count("busy-4", 7)
    assert sample("graft_tenant_predict_inputs_total", tenant=metrics.OTHER) == before + 7


def test_ten_thousand_generation_adapters_make_a_bounded_number_of_series() -> None:
    labels = metrics.AdapterLabels(limit=5, admit_after=1)
    tasks = [f"task-{i}" for i in range(10_000)]
    for task in tasks:
        label = labels.of(task, 1)
        metrics.generation_admitted(label, 1, 0.001)
        metrics.generation_finished(label, "adapter", 3, "length", 0.01, 0.002)
    values = {
        s.labels["adapter"]
        for family in REGISTRY.collect()
        if family.name.startswith("graft_generation_adapter_")
        for s in family.samples
        if "adapter" in s.labels
    }
    mine = values & {metrics.opaque(t, "a-") for t in tasks}
    assert mine == {metrics.opaque(t, "a-") for t in tasks[:5]}  # the first five busy ones, opaque
    assert not any(t in value for value in values for t in ("task-1", "task-9999"))  # never the id itself
    assert labels.of(None, 1) == metrics.BASE and labels.of("task-9999", 100) == metrics.OTHER
    assert sample("graft_generation_adapter_tokens_total", adapter=metrics.OTHER) >= 3 * 9_995
    off = metrics.AdapterLabels(0)  # the default (GRAFT_METRICS_ADAPTER_LABELS=0): no adapter is named
    assert {off.of(t, 1_000) for t in tasks[:50]} == {metrics.OTHER}


def test_requests_are_counted_by_route_template() -> None:
    before = sample("graft_http_requests_total", endpoint="/v1/tasks/{name}/predict", method="POST", status="503")
    metrics.observe_request("/v1/tasks/{name}/predict", "POST", 503, 0.02)
    after = sample("graft_http_requests_total", endpoint="/v1/tasks/{name}/predict", method="POST", status="503")
    assert after == before + 1
    assert (
        sample(
            "graft_http_request_duration_seconds_bucket",
            endpoint="/v1/tasks/{name}/predict",
            method="POST",
            status="503",
            le="0.025",
        )
        >= 1
    )


def test_head_cache_reports_hits_misses_evictions_and_bytes() -> None:
    hits, misses, evictions = (sample(f"graft_head_cache_{n}_total") for n in ("hits", "misses", "evictions"))
    cache = HeadCache(lambda i: linear(3, seed=i), budget_bytes=12_000)
    for key in (1, 1, 2, 3, 1):
        cache.get(key)
    assert sample("graft_head_cache_hits_total") - hits == cache.hits == 1
    assert sample("graft_head_cache_misses_total") - misses == cache.misses == 4
    assert sample("graft_head_cache_evictions_total") - evictions == cache.evictions >= 1
    assert sample("graft_head_cache_bytes") == cache.bytes <= 12_000


def test_bentoml_raw_path_samples_are_dropped() -> None:
    page = "\n".join(
        [
            "# TYPE bentoml_service_request_total counter",
            'bentoml_service_request_total{endpoint="/v1/jobs/job_abc",http_response_code="200"} 3.0',
            'bentoml_service_request_total{endpoint="/readyz",http_response_code="200"} 9.0',
            'graft_http_requests_total{endpoint="/v1/jobs/{job_id}",method="GET",status="200"} 3.0',
        ]
    )
    kept = metrics.without_raw_paths(page)
    assert "job_abc" not in kept and "/readyz" in kept and "{job_id}" in kept


def exported_names() -> set[str]:
    from prometheus_client import Counter as PromCounter
    from prometheus_client.metrics import MetricWrapperBase

    names = set()
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            (family,) = value.describe()  # public: the metric family this object exports
            names.add(family.name + ("_total" if isinstance(value, PromCounter) else ""))
    return names


def test_every_metric_is_documented_and_the_dashboard_uses_only_real_ones() -> None:
    import json
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    names = exported_names()
    assert len(names) >= 20 and all(n.startswith("graft_") for n in names)
    doc = (root / "docs" / "metrics.md").read_text()
    assert not [n for n in names if f"`{n}`" not in doc]
    dashboard = json.loads((root / "deploy" / "grafana" / "graft-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {re.sub(r"_(bucket|sum|count)$", "", n) for e in exprs for n in re.findall(r"graft_[a-z_]+", e)}
    assert used and used <= names, used - names
    assert names - used <= {"graft_head_cache_heads"}, names - used  # (nearly) everything is on the dashboard


def test_alert_rules_use_only_real_metrics() -> None:
    import re
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[2]
    rules = yaml.safe_load((root / "deploy" / "base" / "prometheusrule.yaml").read_text())
    exprs = [r["expr"] for g in rules["spec"]["groups"] for r in g["rules"]]
    recorded = {r["record"] for g in rules["spec"]["groups"] for r in g["rules"] if "record" in r}
    used = {n for e in exprs for n in re.findall(r"graft[a-z0-9_:]*[a-z0-9_]", e)}
    assert {"graft_ood_flagged_total", "graft_ood_scored_total"} <= used
    assert used <= exported_names() | recorded, used - exported_names() - recorded


def test_ood_window_counts_per_task_and_version_and_forgets_old_slices() -> None:
    now = [0.0]
    window = metrics.OodWindow(window_s=60.0, slices=6, max_tasks=2, clock=lambda: now[0])
    window.add("t1", 1, [0.5, 2.0, 0.2])
    window.add("t1", 2, [3.0])
    assert window.read("t1") == {1: (3, 1, 0.9), 2: (1, 1, 3.0)}
    now[0] = 45.0
    window.add("t1", 1, [1.5])
    assert window.read("t1")[1][:2] == (4, 2)
    now[0] = 65.0  # the first slice (0-10 s) left the 60 s window; the one at 45 s did not
    assert window.read("t1") == {1: (1, 1, 1.5)}
    window.add("t2", 1, [0.1])
    window.add("t3", 1, [0.1])  # a third task: the least recently predicted (t1) is dropped
    assert window.read("t1") == {} and window.read("t3") == {1: (1, 0, 0.1)}
