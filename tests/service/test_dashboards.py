"""The Grafana dashboard and the alert rules query only metrics a real app exports."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import promql_parser
import pytest
import torch
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from service.gpu_metrics import GpuCollector, GpuReading
from tests.conftest import AppClientFactory
from tests.helpers import ROOT, Digits
from tests.service.test_metrics import parse

DASHBOARD = ROOT / "deploy" / "grafana" / "cnn-serve.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yaml"
# Labels Prometheus itself adds to every scraped series.
TARGET_LABELS = {"job", "instance", "namespace", "pod", "service", "container"}


def dashboard_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) for every target, nested rows included."""
    for panel in dashboard["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            for target in inner.get("targets", []):
                yield inner["title"], target["expr"]


def alert_rules(rules: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for group in rules["groups"]:
        yield from group["rules"]


def as_promql(expr: str) -> str:
    """Grafana variables made concrete: intervals to 5m, the rest to a label value."""
    expr = re.sub(r"\$__\w+", "5m", expr)
    return re.sub(r"\$\{?\w+\}?", "x", expr)


def selectors(expr: str) -> list[promql_parser.VectorSelector]:
    found: list[promql_parser.VectorSelector] = []

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)

    promql_parser.walk(promql_parser.parse(as_promql(expr)), visit)
    return found


def quantiles_of(expr: str, metric: str) -> set[float]:
    """The q of every histogram_quantile(q, ...) whose argument reads `metric`."""
    found: set[float] = set()

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.Call) and node.func.name == "histogram_quantile":
            q, inner = node.args
            names = {s.name for s in selectors(str(inner))}
            if metric in names and isinstance(q, promql_parser.NumberLiteral):
                found.add(q.val)

    promql_parser.walk(promql_parser.parse(as_promql(expr)), visit)
    return found


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


@pytest.fixture(scope="module")
def rules() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(ALERTS.read_text())
    return loaded


def _gpu_label_sets() -> dict[str, set[str]]:
    """The CUDA-only families, from the real collector over a stand-in device reader."""
    collector = GpuCollector(read=lambda _: GpuReading(1.0, 2.0, 0.5, 8.0))
    collector.devices.append(torch.device("cuda", 0))
    registry = CollectorRegistry()
    registry.register(collector)
    return _label_sets(generate_latest(registry).decode())


def _label_sets(text: str) -> dict[str, set[str]]:
    """Every exported sample name with the union of its label names."""
    labels: dict[str, set[str]] = {}
    for name, label_set in parse(text):
        labels.setdefault(name, set()).update(key for key, _ in label_set)
    return labels


async def exported(client: httpx.AsyncClient, digits: Digits) -> dict[str, set[str]]:
    """Sample names a real app exports after one good and one bad request."""
    ok = await client.post(
        "/v1/classify", content=digits.png(0), headers={"content-type": "image/png"}
    )
    assert ok.status_code == 200
    await client.post("/v1/classify", content=b"bad", headers={"content-type": "image/png"})
    return {**_label_sets((await client.get("/metrics")).text), **_gpu_label_sets()}


def _check(expr: str, where: str, metrics: dict[str, set[str]]) -> None:
    used = selectors(expr)
    assert used, f"{where}: no metric in {expr!r}"
    for selector in used:
        assert selector.name in metrics, f"{where}: {selector.name} is not exported"
        for matcher in selector.matchers.matchers:
            label = matcher.name
            known = metrics[selector.name] | TARGET_LABELS
            assert label in known, f"{where}: {selector.name} has no label {label!r}"


async def test_every_query_uses_exported_metrics_and_labels(
    app_client: AppClientFactory,
    digits: Digits,
    dashboard: dict[str, Any],
    rules: dict[str, Any],
) -> None:
    async with app_client(activation_sample_rate=1.0) as client:  # every batch monitored
        metrics = await exported(client, digits)
    queries = list(dashboard_queries(dashboard))
    assert len(queries) >= 20
    for title, expr in queries:
        _check(expr, f"panel {title!r}", metrics)
    for rule in alert_rules(rules):
        _check(rule["expr"], f"alert {rule['alert']}", metrics)
    variable = dashboard["templating"]["list"][1]["query"]["query"]
    assert (
        variable == "label_values(cnn_model_info, model)" and "model" in metrics["cnn_model_info"]
    )


def test_dashboard_shows_what_an_sre_needs(dashboard: dict[str, Any]) -> None:
    queries = [expr for _, expr in dashboard_queries(dashboard)]
    used = {s.name for expr in queries for s in selectors(expr)}
    assert {
        "cnn_requests_total",  # request rate and error ratio
        "cnn_request_duration_seconds_bucket",  # latency quantiles
        "cnn_queue_wait_seconds_bucket",
        "cnn_batch_size_bucket",
        "cnn_queue_depth",
        "cnn_gpu_memory_allocated_bytes",
        "cnn_gpu_memory_reserved_bytes",
        "cnn_preprocess_duration_seconds_bucket",
        "cnn_inference_duration_seconds_bucket",
        "cnn_activation_drift_psi",  # what the layers see on live traffic
        "cnn_activation_zero_ratio",
        "cnn_prediction_drift_psi",
    } <= used
    latency = set().union(
        *(quantiles_of(e, "cnn_request_duration_seconds_bucket") for e in queries)
    )
    assert {0.5, 0.95, 0.99} <= latency
    assert any('code=~"5.."' in expr and "/" in expr for expr in queries)  # an error ratio
    heatmaps = [p for p in dashboard["panels"] if p["type"] == "heatmap"]
    assert any("cnn_batch_size_bucket" in t["expr"] for p in heatmaps for t in p["targets"])
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_alert_rules_cover_latency_errors_saturation_and_readiness(rules: dict[str, Any]) -> None:
    by_name = {rule["alert"]: rule for rule in alert_rules(rules)}
    assert {
        "CnnServeHighP99Latency",
        "CnnServeHigh5xxRatio",
        "CnnServeQueueSaturated",
        "CnnServeQueueFull",
        "CnnServeNotReady",
        "CnnServeActivationDrift",
        "CnnServeDeadUnitsJump",
    } <= set(by_name)
    p99 = quantiles_of(
        by_name["CnnServeHighP99Latency"]["expr"], "cnn_request_duration_seconds_bucket"
    )
    assert p99 == {0.99}
    assert 'code=~"5.."' in by_name["CnnServeHigh5xxRatio"]["expr"]
    assert {s.name for s in selectors(by_name["CnnServeNotReady"]["expr"])} == {"cnn_ready"}
    for rule in by_name.values():
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"]


def test_a_misspelled_metric_is_caught() -> None:
    """The check itself: a typo in a query must fail it."""
    metrics = {"cnn_queue_depth": {"model"}}
    _check("sum(cnn_queue_depth)", "ok", metrics)
    with pytest.raises(AssertionError, match="cnn_queue_dept is not exported"):
        _check("sum(cnn_queue_dept)", "typo", metrics)
    with pytest.raises(AssertionError, match="has no label 'endpoint'"):
        _check('cnn_queue_depth{endpoint="/x"}', "label", metrics)
