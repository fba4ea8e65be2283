"""deploy/: every overlay renders with `kubectl kustomize`, every object is valid Kubernetes 1.30
(strict: unknown fields fail), and the manifests keep the promises docs/deploy.md makes."""

from __future__ import annotations

import copy

import kubernetes_validate
import pytest
from cloudcoil.models.prometheus_operator.v1 import PrometheusRule, ServiceMonitor
from kubernetes_validate.utils import ValidationError

from service.config import SETTINGS, Settings

from .conftest import OVERLAYS, one

K8S_VERSION = "1.30.0"
BASE_KINDS = {
    "ServiceAccount",
    "ConfigMap",
    "Deployment",
    "Service",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
    "NetworkPolicy",
    "ServiceMonitor",
    "PrometheusRule",
}
CRDS = {"ServiceMonitor": ServiceMonitor, "PrometheusRule": PrometheusRule}


def validate(doc: dict) -> None:
    """Kubernetes kinds: the JSON schemas kubernetes-validate ships for 1.30, strict mode.
    ServiceMonitor and PrometheusRule are CRDs those schemas lack: they are checked against pydantic models
    generated from prometheus-operator's CRDs (cloudcoil-models-prometheus-operator): types and patterns by
    validation, unknown fields by requiring a lossless round trip (the models drop unknown keys)."""
    if doc["kind"] in CRDS:
        model = CRDS[doc["kind"]].model_validate(doc)
        dumped = model.model_dump(by_alias=True, exclude_unset=True, mode="json")
        assert dumped == doc, f"unknown {doc['kind']} fields"
        return
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_valid_kubernetes_1_30_objects(rendered, overlay: str) -> None:
    docs = rendered[overlay]
    kinds = {d["kind"] for d in docs}
    expected = BASE_KINDS | ({"Secret", "StatefulSet"} if overlay == "dev" else set())
    assert kinds == expected
    for doc in docs:
        validate(doc)


def test_the_validation_can_fail(rendered) -> None:
    """Controls: a misspelt field, a wrong type and an unknown ServiceMonitor key are all caught."""
    deployment = copy.deepcopy(one(rendered["cpu"], "Deployment", "graft"))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {
        "httpGet": {"path": "/livez", "port": 3000}
    }
    with pytest.raises(ValidationError):
        validate(deployment)
    hpa = copy.deepcopy(one(rendered["cpu"], "HorizontalPodAutoscaler", "graft"))
    hpa["spec"]["minReplicas"] = "two"
    with pytest.raises(ValidationError):
        validate(hpa)
    monitor = copy.deepcopy(one(rendered["cpu"], "ServiceMonitor", "graft"))
    monitor["spec"]["endpoints"][0]["intervall"] = "30s"
    with pytest.raises(AssertionError, match="unknown ServiceMonitor fields"):
        validate(monitor)
    monitor["spec"]["endpoints"][0] = {"port": "http", "interval": "thirty seconds"}
    with pytest.raises(ValueError):
        validate(monitor)


DEPLOYMENTS = ("graft", "graft-worker")  # the api and the training workers (GRAFT_ROLE), one image


def container(docs: list[dict], name: str = "graft") -> dict:
    return one(docs, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]


def environment(docs: list[dict], name: str = "graft") -> dict[str, str]:
    """What the container sees: the ConfigMap it loads plus its literal env values."""
    c = container(docs, name)
    names = [ref["configMapRef"]["name"] for ref in c.get("envFrom", []) if "configMapRef" in ref]
    env: dict[str, str] = {}
    for name in names:
        env.update(one(docs, "ConfigMap", name)["data"])
    env.update({e["name"]: e["value"] for e in c.get("env", []) if "value" in e})
    return env


@pytest.mark.parametrize("name", DEPLOYMENTS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_pod_is_locked_down(rendered, overlay: str, name: str) -> None:
    docs = rendered[overlay]
    pod = one(docs, "Deployment", name)["spec"]["template"]["spec"]
    c = container(docs, name)
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert c["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert pod["automountServiceAccountToken"] is False
    account = one(docs, "ServiceAccount", pod["serviceAccountName"])
    assert account["automountServiceAccountToken"] is False

    # the root filesystem is read-only: every directory Graft, BentoML or a library writes to is a scratch volume
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert all("emptyDir" in volumes[name] for name in mounts.values())
    env = environment(docs, name)
    for var in ("TMPDIR", "GRAFT_DATA_DIR", "BENTOML_HOME", "HF_HOME", "XDG_CACHE_HOME"):
        assert any(env[var] == path or env[var].startswith(path + "/") for path in mounts), (
            f"{var}={env[var]} is not writable"
        )


@pytest.mark.parametrize("name", DEPLOYMENTS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_resources_probes_and_graceful_termination(rendered, overlay: str, name: str) -> None:
    docs = rendered[overlay]
    pod = one(docs, "Deployment", name)["spec"]["template"]["spec"]
    c = container(docs, name)
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(c["resources"][kind]), kind
    port = {p["name"]: p["containerPort"] for p in c["ports"]}["http"]
    assert c["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    startup = c["startupProbe"]
    assert startup["httpGet"]["path"] == "/readyz"
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 180, "too little time to load the backbones"

    env = environment(docs, name)
    assert int(env["BENTOML_PORT"]) == port
    settings = Settings.from_env(env)  # every GRAFT_* value parses
    unknown = {k for k in env if k.startswith("GRAFT_")} - {v.env for v in SETTINGS.values()}
    assert not unknown, f"settings Graft does not have: {unknown}"
    # the api sleeps in preStop while its endpoint leaves the Service; a worker takes no traffic
    pre_stop = c["lifecycle"]["preStop"]["exec"]["command"] if name == "graft" else ["sleep", "0"]
    assert pre_stop[0] == "sleep"
    # SIGTERM comes after the preStop sleep; shutdown then waits up to the grace for training jobs
    assert pod["terminationGracePeriodSeconds"] >= int(pre_stop[1]) + settings.shutdown_grace_s + 10
    assert settings.role == {"graft": "api", "graft-worker": "worker"}[name]

    secrets = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"] if "valueFrom" in e}
    assert set(secrets) == {"GRAFT_ADMIN_TOKEN", "GRAFT_DATABASE_URL"}
    assert "GRAFT_ADMIN_TOKEN" not in env and "GRAFT_DATABASE_URL" not in env  # never in the ConfigMap


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_autoscaler_budget_policy_and_monitor_point_at_the_pods(rendered, overlay: str) -> None:
    docs = rendered[overlay]
    deployment = one(docs, "Deployment", "graft")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert "replicas" not in deployment["spec"], "the autoscaler owns the replica count"
    selects = lambda selector: all(pod_labels.get(k) == v for k, v in selector.items())  # noqa: E731

    service = one(docs, "Service", "graft")
    assert selects(service["spec"]["selector"])
    assert {p["targetPort"] for p in service["spec"]["ports"]} == {"http"}
    assert selects(one(docs, "PodDisruptionBudget", "graft")["spec"]["selector"]["matchLabels"])
    assert selects(one(docs, "NetworkPolicy", "graft")["spec"]["podSelector"]["matchLabels"])
    hpa = one(docs, "HorizontalPodAutoscaler", "graft")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "graft"}
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]

    monitor = one(docs, "ServiceMonitor", "graft")
    wanted = monitor["spec"]["selector"]["matchLabels"]
    assert [
        s["metadata"]["name"]
        for s in docs
        if s["kind"] == "Service" and all(s["metadata"].get("labels", {}).get(k) == v for k, v in wanted.items())
    ] == ["graft"]
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"


@pytest.mark.parametrize("name", DEPLOYMENTS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policy_lets_in_http_and_out_only_dns_and_postgres(rendered, overlay: str, name: str) -> None:
    policy = one(rendered[overlay], "NetworkPolicy", name)["spec"]
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    assert [p["port"] for rule in policy["ingress"] for p in rule["ports"]] == ["http"]
    assert {p["port"] for rule in policy["egress"] for p in rule["ports"]} == {53, 5432}


@pytest.mark.parametrize("name", DEPLOYMENTS)
def test_gpu_overlay_takes_one_gpu_on_gpu_nodes(rendered, name: str) -> None:
    docs = rendered["gpu"]
    pod = one(docs, "Deployment", name)["spec"]["template"]["spec"]
    c = container(docs, name)
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1" == c["resources"]["requests"]["nvidia.com/gpu"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert environment(docs, name)["GRAFT_DEVICE"] == "cuda"
    assert c["image"].endswith("-gpu")
    assert (
        container(rendered["cpu"])["image"].endswith("-cpu") and environment(rendered["cpu"])["GRAFT_DEVICE"] == "cpu"
    )


def test_dev_overlay_brings_its_own_postgres(rendered) -> None:
    docs = rendered["dev"]
    postgres = one(docs, "StatefulSet", "graft-postgres")["spec"]
    assert postgres["replicas"] == 1 and postgres["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]
    secret_name = next(
        e["valueFrom"]["secretKeyRef"]["name"] for e in container(docs)["env"] if e["name"] == "GRAFT_DATABASE_URL"
    )
    import base64

    url = base64.b64decode(one(docs, "Secret", secret_name)["data"]["database-url"]).decode()
    service = one(docs, "Service", "graft-postgres")
    assert url.startswith("postgresql+psycopg://") and f"@{service['metadata']['name']}:5432/" in url
    assert one(docs, "HorizontalPodAutoscaler", "graft")["spec"]["minReplicas"] == 1
    # graft's pods may reach the database, nothing else may
    allowed = one(docs, "NetworkPolicy", "graft-postgres")["spec"]["ingress"][0]["from"][0]["podSelector"][
        "matchLabels"
    ]
    for name in DEPLOYMENTS:
        pod_labels = one(docs, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
        assert all(pod_labels.get(k) == v for k, v in allowed.items())


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workers_are_apart_from_the_api_and_scale_on_the_job_queue(rendered, overlay: str) -> None:
    """The worker Deployment takes no API traffic (the Service selects only api pods), has its own budget,
    policy and scrape target, and its autoscaler follows the store's queued + running job gauge."""
    docs = rendered[overlay]
    api_labels = one(docs, "Deployment", "graft")["spec"]["template"]["metadata"]["labels"]
    worker = one(docs, "Deployment", "graft-worker")
    labels = worker["spec"]["template"]["metadata"]["labels"]
    assert "replicas" not in worker["spec"], "the autoscaler owns the replica count"
    selects = lambda selector, pod: all(pod.get(k) == v for k, v in selector.items())  # noqa: E731
    service = one(docs, "Service", "graft")["spec"]["selector"]
    assert selects(service, api_labels) and not selects(service, labels), "workers must not receive API requests"
    for kind in ("PodDisruptionBudget", "NetworkPolicy"):
        spec = one(docs, kind, "graft-worker")["spec"]
        selector = (
            spec["selector"]["matchLabels"] if kind == "PodDisruptionBudget" else spec["podSelector"]["matchLabels"]
        )
        assert selects(selector, labels) and not selects(selector, api_labels)
    scrape = one(docs, "Service", "graft-worker")
    assert selects(scrape["spec"]["selector"], labels) and scrape["spec"]["clusterIP"] == "None"
    wanted = one(docs, "ServiceMonitor", "graft-worker")["spec"]["selector"]["matchLabels"]
    assert [
        s["metadata"]["name"]
        for s in docs
        if s["kind"] == "Service" and selects(wanted, s["metadata"].get("labels", {}))
    ] == ["graft-worker"]

    hpa = one(docs, "HorizontalPodAutoscaler", "graft-worker")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "graft-worker"}
    (metric,) = hpa["metrics"]
    assert metric["type"] == "External" and metric["external"]["metric"]["name"] == "graft_store_jobs"
    assert metric["external"]["metric"]["selector"]["matchExpressions"] == [
        {"key": "status", "operator": "In", "values": ["queued", "running"]}
    ]
    from service import metrics

    assert metrics.STORE_JOBS.describe()[0].name == "graft_store_jobs" and {"queued", "running"} <= set(
        metrics.JOB_STATUSES
    )


def quantity_bytes(value: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9}
    for unit, factor in units.items():
        if value.endswith(unit):
            return int(value[: -len(unit)]) * factor
    return int(value)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_upload_spool_volume_holds_several_maximal_uploads(rendered, overlay: str) -> None:
    """Uploads spool to GRAFT_UPLOAD_SPOOL_DIR: its volume must hold more than the largest upload (a
    full volume would fail the upload; 512Mi once held barely two 256 MiB bodies)."""
    docs = rendered[overlay]
    pod = one(docs, "Deployment", "graft")["spec"]["template"]["spec"]
    env = environment(docs)
    settings = Settings.from_env({k: v for k, v in env.items() if k.startswith("GRAFT_")})
    spool = str(settings.spool_path)
    mounts = {m["mountPath"]: m["name"] for m in container(docs)["volumeMounts"]}
    holder = max((path for path in mounts if spool == path or spool.startswith(path + "/")), key=len)
    volume = next(v for v in pod["volumes"] if v["name"] == mounts[holder])
    assert quantity_bytes(volume["emptyDir"]["sizeLimit"]) >= 4 * settings.max_upload_bytes, (holder, volume)
