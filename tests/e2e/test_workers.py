"""End to end: `cnn-serve --workers 2`, a supervisor, an engine and two HTTP workers, over HTTP.

Every answer must be the single-process answer (computed here in process), every
counter in /metrics must sum over all the processes exactly, the queue bound must
hold for the pod as a whole, and the HTTP workers must stay free of torch.
"""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
import tritonclient.http as triton

import models
from tests.e2e.pod import (
    CLASSIFY,
    PNG,
    WORKER_ARGS,
    classify_one,
    port_is_free,
    problem_code,
    scrape,
    scrape_counting,
    served_by,
    started_by,
    total,
    whole_pod,
)
from tests.helpers import Digits, ServerProcess, free_port, running_server
from tests.reliability.raw_http import rss_bytes
from tests.reliability.test_shutdown import slow_checkpoint
from tests.reliability.test_startup import CLI, assert_each_fails_in_one_line, broken_checkpoints
from tests.service.test_explain_api import attribution, close
from tests.service.test_feature_maps import MAPS, assert_maps_equal
from tests.service.test_v2 import _input, _outputs, _post_tensors

COUNT = 48  # distinct digits in the requests
MAX_WORKER_RSS = 150 * 1024 * 1024


@pytest.fixture(scope="module")
def pod_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One pod for the tests that only read from it (each compares counters before and after)."""
    with running_server(tmp_path_factory.mktemp("pod"), args=WORKER_ARGS) as server:
        yield server


def in_process_probabilities(digits: Digits, count: int) -> np.ndarray:
    loaded = models.load(models.default_model_path())
    batch = torch.stack([loaded.preprocess(image) for image in digits.images[:count]])
    with torch.inference_mode():
        return torch.softmax(loaded.module(batch), dim=1).numpy()


def multipart(digits: Digits, indices: list[int]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("images", (f"{i}.png", digits.png(i), "image/png")) for i in indices]


async def classify_groups(base_url: str, digits: Digits, groups: list[list[int]]) -> list[dict]:
    """Each group as one request (multipart when it has several images), 8 connections at once."""
    limits = httpx.Limits(max_connections=8, max_keepalive_connections=8)
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as client:

        async def one(group: list[int]) -> dict:
            if len(group) == 1:
                response = await client.post(
                    f"{CLASSIFY}?top_k=10", content=digits.png(group[0]), headers=PNG
                )
            else:
                response = await client.post(f"{CLASSIFY}?top_k=10", files=multipart(digits, group))
            assert response.status_code == 200, response.text
            return response.json()

        return list(await asyncio.gather(*(one(group) for group in groups)))


def probabilities_of(prediction: dict) -> np.ndarray:
    row = np.zeros(len(prediction["top_k"]), dtype=np.float32)
    for entry in prediction["top_k"]:
        row[entry["index"]] = entry["probability"]
    return row


@pytest.mark.slow
def test_counters_sum_over_the_workers_and_answers_equal_in_process(
    pod_server: ServerProcess, digits: Digits
) -> None:
    expected = in_process_probabilities(digits, COUNT)
    pod = whole_pod(pod_server)
    before = scrape(pod_server.base_url)
    groups = [[(r * 7 + k) % COUNT for k in range(1 + r % 4)] for r in range(60)]
    answers = asyncio.run(classify_groups(pod_server.base_url, digits, groups))
    # Then single requests, each on its own connection, until both workers have answered some.
    extra = 0
    while min(served_by(pod, worker) for worker in pod.workers) == 0 and extra < 200:
        response = classify_one(pod_server.base_url, digits.png(extra % COUNT))
        assert response.status_code == 200, response.text
        assert response.json()["predictions"][0]["index"] == expected[extra % COUNT].argmax()
        extra += 1
    requests = len(groups) + extra
    after = scrape_counting(
        pod_server.base_url,
        total(before, "cnn_requests_total", endpoint=CLASSIFY) + requests,
        endpoint=CLASSIFY,
    )

    for group, answer in zip(groups, answers, strict=True):
        assert [p["index"] for p in answer["predictions"]] == expected[group].argmax(1).tolist()
        got = np.stack([probabilities_of(p) for p in answer["predictions"]])
        np.testing.assert_allclose(got, expected[group], atol=1e-5)
    images = sum(len(group) for group in groups) + extra

    def rise(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert rise("cnn_requests_total", endpoint=CLASSIFY, code="200") == requests
    assert rise("cnn_images_total", model="mnist-cnn") == images
    assert rise("cnn_requests_total", endpoint=CLASSIFY) == requests  # no other code
    per_worker = {worker: served_by(pod, worker) for worker in pod.workers}
    assert all(count > 0 for count in per_worker.values()), per_worker
    # The scrape (answered by one worker) is the sum of every worker's own file.
    assert sum(per_worker.values()) == total(
        after, "cnn_requests_total", endpoint=CLASSIFY, code="200"
    )
    assert total(after, "cnn_ready") == 1


@pytest.mark.slow
async def test_v2_feature_maps_and_explanations_through_the_workers_equal_one_process(
    pod_server: ServerProcess, client: httpx.AsyncClient, digits: Digits
) -> None:
    """The same requests to the pod and to the in-process app (`client`): the same answers."""
    async with httpx.AsyncClient(base_url=pod_server.base_url, timeout=60) as pod:
        sides = (pod, client)
        pngs = np.array([digits.png(i) for i in range(6)], dtype=np.object_)
        wanted = [triton.InferRequestedOutput(n, binary_data=True) for n in ("probabilities",
                  "logits", "conv1")]  # fmt: skip
        by_image = [
            _outputs(await _post_tensors(side, [_input("image", pngs, "BYTES", True)], wanted))
            for side in sides
        ]
        for name in ("probabilities", "logits", "conv1"):
            assert by_image[0].as_numpy(name).shape[0] == 6
            assert_maps_equal(by_image[0].as_numpy(name), by_image[1].as_numpy(name))
        loaded = models.load(models.default_model_path())
        pixels = np.stack([loaded.preprocess.to_uint8(digits.images[i]) for i in range(6)])
        by_pixels = [
            _outputs(await _post_tensors(side, [_input("input", pixels, "UINT8", True)]))
            for side in sides
        ]
        for result in by_pixels:
            assert_maps_equal(
                result.as_numpy("probabilities"), by_image[1].as_numpy("probabilities")
            )

        maps = [
            await side.post(f"{MAPS}?include=values", content=digits.png(3), headers=PNG)
            for side in sides
        ]
        layers = [response.json()["layers"] for response in maps]
        assert [entry["name"] for entry in layers[0]] == [entry["name"] for entry in layers[1]]
        assert len(layers[0]) > 5
        for ours, theirs in zip(*layers, strict=True):
            assert ours["shape"] == theirs["shape"]
            assert_maps_equal(ours["values"], np.asarray(theirs["values"], dtype=np.float32))
        npz = [
            await side.post(
                f"{MAPS}?format=npz&layers=relu4,conv1", content=digits.png(3), headers=PNG
            )
            for side in sides
        ]
        assert npz[0].headers["x-prediction-index"] == npz[1].headers["x-prediction-index"]
        assert npz[0].headers["x-prediction-index"] == str(int(digits.labels[3]))
        arrays = [np.load(io.BytesIO(response.content)) for response in npz]
        assert arrays[0].files == arrays[1].files == ["conv1", "relu4"]
        for name in arrays[0].files:
            assert_maps_equal(arrays[0][name], arrays[1][name])

        explained = {}
        for method in ("saliency", "gradcam", "integrated_gradients"):
            pair = [
                await side.post(
                    f"/v1/models/mnist-cnn/explain?method={method}",
                    content=digits.png(5),
                    headers=PNG,
                )
                for side in sides
            ]
            assert pair[0].json()["target"] == pair[1].json()["target"]
            close(attribution(pair[0]), attribution(pair[1]))
            explained[method] = attribution(pair[0])
        as_npz = await pod.post(
            "/v1/models/mnist-cnn/explain?method=saliency&format=npz",
            content=digits.png(5),
            headers=PNG,
        )
    np.testing.assert_array_equal(
        np.load(io.BytesIO(as_npz.content))["attribution"], explained["saliency"]
    )


def mapped_files(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


@pytest.mark.slow
def test_http_workers_do_not_load_torch(pod_server: ServerProcess, digits: Digits) -> None:
    pod = whole_pod(pod_server)
    assert classify_one(pod_server.base_url, digits.png(0)).status_code == 200
    assert "libtorch" in mapped_files(pod.engine)  # the check sees torch where it is
    for pid in (*pod.workers, pod.supervisor):
        assert "libtorch" not in mapped_files(pid), pid
        assert rss_bytes(pid) < MAX_WORKER_RSS, (pid, rss_bytes(pid))


@pytest.mark.slow
def test_the_queue_bound_holds_across_workers_and_every_refusal_is_counted(
    tmp_path: Path, digits: Digits
) -> None:
    env = {
        "CNN_MODELS": f"slow={slow_checkpoint(tmp_path)}",
        "CNN_DEVICE": "cpu",  # slow enough for a burst to overflow the queue, on any machine
        "CNN_MAX_QUEUE_SIZE": "4",
        "CNN_MAX_BATCH_SIZE": "1",
        "CNN_TORCH_THREADS": "1",
        "CNN_REQUEST_TIMEOUT_S": "60",
    }

    async def burst(base_url: str) -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=48)
        async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as client:
            groups = [[i, i + 1, i + 2, i + 3] for i in range(48)]  # each fills the queue
            return list(
                await asyncio.gather(
                    *(client.post(CLASSIFY, files=multipart(digits, group)) for group in groups)
                )
            )

    with running_server(tmp_path, env=env, args=WORKER_ARGS) as server:
        responses = asyncio.run(burst(server.base_url))
        samples = scrape_counting(server.base_url, len(responses), endpoint=CLASSIFY)
    outcomes = [problem_code(response) for response in responses]
    assert set(outcomes) == {"200", "503 overloaded"}, outcomes
    refused = [response for response in responses if response.status_code == 503]
    for response in refused:
        assert int(response.headers["retry-after"]) >= 1
    answered = len(responses) - len(refused)
    assert total(samples, "cnn_rejected_total", reason="queue_full") == len(refused)
    assert total(samples, "cnn_requests_total", endpoint=CLASSIFY, code="503") == len(refused)
    assert total(samples, "cnn_requests_total", endpoint=CLASSIFY, code="200") == answered
    assert total(samples, "cnn_images_total", model="slow") == 4 * answered


@pytest.mark.slow
def test_a_start_up_failure_prints_one_line_and_leaves_no_process(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [CLI, "--host", "127.0.0.1", "--port", str(port), *WORKER_ARGS],
        env={**os.environ, "CNN_LOG_FORMAT": "json", "CNN_MODELS": "bad=/nonexistent.pt"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = process.communicate(timeout=120)
    assert process.returncode not in (0, None)
    plain = [line for line in err.splitlines() if not line.startswith("{")]
    assert len(plain) == 1 and plain[0].startswith("cnn-serve:"), err
    assert "nonexistent" in plain[0]
    assert "Traceback" not in out + err
    assert started_by(process.pid) == set()
    assert port_is_free(f"http://127.0.0.1:{port}")


@pytest.mark.slow
def test_failures_found_by_the_engine_print_one_line(tmp_path: Path) -> None:
    cases = broken_checkpoints(tmp_path)
    assert_each_fails_in_one_line(
        {
            name: ([*args, *WORKER_ARGS], env, words)
            for name, (args, env, words) in cases.items()
            if name in ("corrupt weights", "sha256 mismatch", "CUDA requested but absent")
        }
    )


@pytest.mark.slow
def test_the_pod_starts_in_a_directory_that_holds_a_models_folder(
    tmp_path: Path, digits: Digits
) -> None:
    """As one process does: checkpoints kept in ./models are an ordinary layout."""
    (tmp_path / "models").mkdir()
    with running_server(tmp_path, args=WORKER_ARGS, cwd=tmp_path) as server:
        response = classify_one(server.base_url, digits.png(2))
    assert response.json()["predictions"][0]["index"] == int(digits.labels[2])
