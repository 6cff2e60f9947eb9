"""The Kubernetes manifests: they render, validate against the API schemas, and fit the app.

Every check reads the objects `kubectl kustomize` renders for each overlay, and compares them
with the real thing they point at: the app's routes, its settings, the Dockerfile's user and
port, the prometheus-adapter rule the autoscaler depends on.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from fastapi import FastAPI
from pydantic_settings import BaseSettings

from service.app import create_app
from service.settings import Settings
from tests.deploy.dockerfile import parse
from tests.deploy.manifests import (
    K8S,
    OVERLAYS,
    Obj,
    config_env,
    container,
    container_port,
    load_yaml,
    one,
    pod_spec,
    probes,
    settings_from,
)
from tests.deploy.schemas import seconds, validate_object, validate_part
from tests.helpers import ROOT

CUSTOM_KINDS = {"ServiceMonitor"}
ADAPTER_VALUES = K8S / "prometheus-adapter" / "values.yaml"


@pytest.fixture(scope="module")
def app() -> FastAPI:
    return create_app(Settings())


def app_paths(app: FastAPI) -> set[str]:
    """Documented routes plus undocumented ones (/metrics is not in the OpenAPI schema)."""
    return set(app.openapi()["paths"]) | {str(getattr(r, "path", "")) for r in app.routes}


def overlays() -> list[Any]:
    return [pytest.param(o, id=o) for o in OVERLAYS]


@pytest.mark.parametrize("overlay", overlays())
def test_every_rendered_object_validates_strictly(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    kinds = {o["kind"] for o in rendered[overlay]}
    assert {"Deployment", "Service", "ConfigMap", "HorizontalPodAutoscaler"} <= kinds
    assert {"PodDisruptionBudget", "NetworkPolicy", "ServiceMonitor", "Namespace"} <= kinds
    for obj in rendered[overlay]:
        if obj["kind"] in CUSTOM_KINDS:
            with pytest.raises(kubernetes_validate.SchemaNotFoundError):
                validate_object(obj)  # no schema: its parts are validated below
        else:
            validate_object(obj)


def test_validation_is_strict(rendered: dict[str, list[Obj]]) -> None:
    broken = copy.deepcopy(one(rendered["cpu"], "Deployment"))
    container(broken)["readinessProbe"]["httpGet"]["paht"] = "/readyz"  # a typo
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_object(broken)


@pytest.mark.parametrize("overlay", overlays())
def test_probes_point_at_real_routes_on_the_served_port(
    rendered: dict[str, list[Obj]], overlay: str, app: FastAPI
) -> None:
    objects = rendered[overlay]
    deployment = one(objects, "Deployment")
    c = container(deployment)
    settings = settings_from(config_env(objects, deployment))
    found = dict(probes(c))
    assert set(found) == {"startupProbe", "readinessProbe", "livenessProbe"}
    assert found["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert found["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in found.values():
        assert probe["httpGet"]["path"] in app_paths(app)
        assert container_port(c, probe["httpGet"]["port"]) == settings.port
    exposed = parse(ROOT / "Dockerfile").stage("runtime").all("EXPOSE")[0].args
    assert exposed == str(settings.port)
    startup = found["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300  # model warm-up


@pytest.mark.parametrize("overlay", overlays())
def test_configmap_holds_valid_settings_only(rendered: dict[str, list[Obj]], overlay: str) -> None:
    objects = rendered[overlay]
    env = config_env(objects, one(objects, "Deployment"))
    unknown = [k for k in env if k.removeprefix("CNN_").lower() not in Settings.model_fields]
    assert unknown == []
    settings = settings_from(env)
    assert str(settings.temp_dir) == "/tmp"
    assert settings.device == ("cuda" if overlay == "gpu" else "cpu")
    assert isinstance(settings, BaseSettings)


@pytest.mark.parametrize("overlay", overlays())
def test_resources_and_threads_fit_the_cpu_limit(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    objects = rendered[overlay]
    deployment = one(objects, "Deployment")
    resources = container(deployment)["resources"]
    for kind in ("cpu", "memory"):
        assert kind in resources["requests"] and kind in resources["limits"]
    cpus = float(resources["limits"]["cpu"])
    settings = settings_from(config_env(objects, deployment))
    # torch would size its pool by the node's cores, not the pod's share of them.
    assert settings.torch_threads <= cpus
    assert settings.preprocess_workers <= cpus
    if overlay == "gpu":
        assert resources["limits"]["nvidia.com/gpu"] == 1
        spec = pod_spec(deployment)
        assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        assert {t["key"] for t in spec["tolerations"]} == {"nvidia.com/gpu"}
        assert container(deployment)["image"].endswith("-cuda")
        cpu = settings_from(config_env(rendered["cpu"], one(rendered["cpu"], "Deployment")))
        assert settings.max_batch_size > cpu.max_batch_size
    else:
        assert "nvidia.com/gpu" not in resources["limits"]
        assert container(deployment)["image"].endswith("-cpu")


def _uid_from_dockerfile() -> int:
    user = parse(ROOT / "Dockerfile").stage("runtime").all("USER")[0].args
    return int(user.split(":")[0])


@pytest.mark.parametrize("overlay", overlays())
def test_pod_runs_non_root_read_only_without_capabilities(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    deployment = one(rendered[overlay], "Deployment")
    spec = pod_spec(deployment)
    pod, ctx = spec["securityContext"], container(deployment)["securityContext"]
    assert pod["runAsNonRoot"] is True and ctx["runAsNonRoot"] is True
    assert pod["runAsUser"] == _uid_from_dockerfile() == 10001
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"]["drop"] == ["ALL"]
    assert pod["seccompProfile"] == ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    mounts = {m["mountPath"]: m["name"] for m in container(deployment)["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False


@pytest.mark.parametrize("overlay", overlays())
def test_termination_grace_outlasts_the_service_shutdown(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    objects = rendered[overlay]
    deployment = one(objects, "Deployment")
    env = config_env(objects, deployment)
    settings = settings_from(env)
    pre_stop = container(deployment)["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pre_stop >= 5
    assert float(env["CNN_SHUTDOWN_GRACE_S"]) == settings.shutdown_grace_s
    drain = float(getattr(settings, "shutdown_drain_s", 0.0))
    # Worst case: preStop, the drain window, in-flight HTTP, then the batch queues.
    needed = pre_stop + drain + 2 * settings.shutdown_grace_s
    assert pod_spec(deployment)["terminationGracePeriodSeconds"] > needed


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("overlay", overlays())
def test_service_pdb_and_network_policy_select_the_pods(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    objects = rendered[overlay]
    deployment = one(objects, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = one(objects, "Service")
    assert _matches(service["spec"]["selector"], labels)
    target = service["spec"]["ports"][0]["targetPort"]
    assert container_port(container(deployment), target) == 8000
    assert _matches(one(objects, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"], labels)
    policy = one(objects, "NetworkPolicy")["spec"]
    assert _matches(policy["podSelector"]["matchLabels"], labels)
    assert [p["port"] for rule in policy["ingress"] for p in rule["ports"]] == [target]
    assert policy.get("egress", []) == [] and "Egress" in policy["policyTypes"]
    for constraint in pod_spec(deployment)["topologySpreadConstraints"]:
        assert _matches(constraint["labelSelector"]["matchLabels"], labels)
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(container_port(container(deployment), target))


def _adapter_rule() -> dict[str, Any]:
    rules = load_yaml(ADAPTER_VALUES)[0]["rules"]["custom"]
    assert len(rules) == 1
    rule: dict[str, Any] = rules[0]
    return rule


@pytest.mark.parametrize("overlay", overlays())
def test_autoscaler_reads_the_adapter_metric(rendered: dict[str, list[Obj]], overlay: str) -> None:
    objects = rendered[overlay]
    hpa = one(objects, "HorizontalPodAutoscaler")["spec"]
    deployment = one(objects, "Deployment")
    assert hpa["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert "replicas" not in deployment["spec"]  # the HPA owns it
    assert hpa["minReplicas"] > one(objects, "PodDisruptionBudget")["spec"]["maxUnavailable"]
    by_type = {m["type"]: m for m in hpa["metrics"]}
    rule = _adapter_rule()
    assert by_type["Pods"]["pods"]["metric"]["name"] == rule["name"]["as"]
    assert by_type["Pods"]["pods"]["target"]["type"] == "AverageValue"
    if overlay == "cpu":
        assert by_type["Resource"]["resource"]["name"] == "cpu"
    assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 60


def test_adapter_rule_shape() -> None:
    rule = _adapter_rule()
    series = rule["seriesQuery"].split("{")[0]
    assert series == "cnn_queue_wait_seconds_count"
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
    query = rule["metricsQuery"]
    for needed in ("cnn_queue_wait_seconds_sum", series, "<<.LabelMatchers>>", "<<.GroupBy>>"):
        assert needed in query
    assert "clamp_min" in query  # 0, not NaN, while idle: the HPA can still scale down


@pytest.mark.parametrize("overlay", overlays())
def test_service_monitor_scrapes_the_metrics_route(
    rendered: dict[str, list[Obj]], overlay: str, app: FastAPI
) -> None:
    objects = rendered[overlay]
    monitor = one(objects, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    validate_part(monitor["metadata"], "objectmeta-meta-v1")
    validate_part(monitor["spec"]["selector"], "labelselector-meta-v1")
    service = one(objects, "Service")
    assert _matches(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"]
    allowed = {"port", "path", "interval", "scrapeTimeout", "scheme", "honorLabels"}
    for endpoint in monitor["spec"]["endpoints"]:
        assert set(endpoint) <= allowed
        assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
        assert endpoint["path"] in app_paths(app)
        assert seconds(endpoint["scrapeTimeout"]) <= seconds(endpoint["interval"])


def test_kserve_predictor_runs_the_image_safely(app: FastAPI) -> None:
    (isvc,) = load_yaml(ROOT / "deploy" / "kserve" / "inferenceservice.yaml")
    assert (isvc["apiVersion"], isvc["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    validate_part(isvc["metadata"], "objectmeta-meta-v1")
    predictor = isvc["spec"]["predictor"]
    (c,) = predictor["containers"]
    validate_part(c, "container-v1")
    for volume in predictor["volumes"]:
        validate_part(volume, "volume-v1")
    assert c["name"] == "kserve-container"
    env = {e["name"]: e["value"] for e in c["env"]}
    settings = settings_from(env)
    assert [p["containerPort"] for p in c["ports"]] == [settings.port]
    for _, probe in probes(c):
        assert probe["httpGet"]["path"] in app_paths(app)
        assert probe["httpGet"]["port"] == settings.port
    assert c["securityContext"]["runAsUser"] == _uid_from_dockerfile()
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert {m["mountPath"] for m in c["volumeMounts"]} == {"/tmp"}
    assert predictor["minReplicas"] <= predictor["maxReplicas"]


def test_repository_overlay_reads_a_volume_that_a_publisher_writes(
    rendered: dict[str, list[Obj]],
) -> None:
    objects = rendered["repository"]
    deployment = one(objects, "Deployment")
    env = config_env(objects, deployment)
    claim = one(objects, "PersistentVolumeClaim")
    volume = next(v for v in pod_spec(deployment)["volumes"] if "persistentVolumeClaim" in v)
    assert volume["persistentVolumeClaim"] == {"claimName": claim["metadata"]["name"],
                                               "readOnly": True}  # fmt: skip
    mount = next(m for m in container(deployment)["volumeMounts"] if m["name"] == volume["name"])
    assert mount["readOnly"] is True
    assert env["CNN_MODEL_REPOSITORY"] == mount["mountPath"]
    assert env["CNN_MODEL_CONTROL"] == "poll"
    admin = next(e for e in container(deployment)["env"] if e["name"] == "CNN_ADMIN_API_KEY")
    assert admin["valueFrom"]["secretKeyRef"]["optional"] is True
    # The publisher writes the same claim, where the pods read it.
    job = load_yaml(K8S / "overlays" / "repository" / "publish-version.yaml")[0]
    validate_object({**job, "metadata": {**job["metadata"], "name": "publish-version-x"}})
    job_pod = job["spec"]["template"]["spec"]
    job_volume = next(v for v in job_pod["volumes"] if "persistentVolumeClaim" in v)
    assert job_volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    job_mount = job_pod["containers"][0]["volumeMounts"][0]
    assert job_mount["mountPath"] == mount["mountPath"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]


def test_overlays_render_from_files_in_the_tree() -> None:
    for overlay in OVERLAYS:
        assert (K8S / "overlays" / overlay / "kustomization.yaml").is_file()
    assert Path(K8S / "base" / "kustomization.yaml").is_file()
