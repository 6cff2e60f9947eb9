"""The rendered Deployment's probes and scrape target, asked of a real `cnn-serve` process.

The process gets exactly the environment the rendered ConfigMap gives the container. It
listens on a free port that stands for the container port (as `docker run -p` maps one): the
test first checks that every probe's port resolves to that container port, which is the
port the settings say the service listens on.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.deploy.manifests import (
    config_env,
    container,
    container_port,
    one,
    probes,
    settings_from,
)
from tests.helpers import Digits, running_server


def test_probes_and_metrics_answer_on_a_server_configured_by_the_configmap(
    rendered: dict[str, list[dict[str, object]]], tmp_path: Path, digits: Digits
) -> None:
    objects = rendered["cpu"]
    deployment = one(objects, "Deployment")
    c = container(deployment)
    env = config_env(objects, deployment)
    served_port = settings_from(env).port
    checks = [(kind, p["httpGet"]["path"], p["httpGet"]["port"]) for kind, p in probes(c)]
    assert {container_port(c, port) for _, _, port in checks} == {served_port}
    service = one(objects, "Service")
    endpoint = one(objects, "ServiceMonitor")["spec"]["endpoints"][0]
    scrape_port = next(p for p in service["spec"]["ports"] if p["name"] == endpoint["port"])
    assert container_port(c, scrape_port["targetPort"]) == served_port

    with running_server(tmp_path, env=env) as server:
        answers = {kind: httpx.get(server.base_url + path, timeout=5) for kind, path, _ in checks}
        for _ in range(3):
            httpx.post(
                f"{server.base_url}/v1/classify",
                content=digits.png(0),
                headers={"content-type": "image/png"},
                timeout=30,
            ).raise_for_status()
        scraped = httpx.get(server.base_url + endpoint["path"], timeout=5)
    # The kubelet counts 200-399 as success.
    assert {kind: r.status_code for kind, r in answers.items()} == {
        "startupProbe": 200,
        "readinessProbe": 200,
        "livenessProbe": 200,
    }
    assert answers["readinessProbe"].json()["status"] == "ready"
    assert scraped.status_code == 200
    # The series the prometheus-adapter rule reads, counting the three images.
    counts = [
        line
        for line in scraped.text.splitlines()
        if line.startswith("cnn_queue_wait_seconds_count{") and 'model="mnist-cnn"' in line
    ]
    assert len(counts) == 1 and float(counts[0].rsplit(" ", 1)[1]) == 3.0
    assert any(line.startswith("cnn_queue_depth{") for line in scraped.text.splitlines())
