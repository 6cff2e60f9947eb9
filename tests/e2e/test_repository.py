"""End to end: a model repository served by real `cnn-serve` processes, versions changing live.

Explicit control through Triton's own client (index, load, unload, versioned inference),
the admin key against the inference key, polling that meets a broken version, and the
version policy of a model's config.json. The new versions are a differently seeded
random model, so every answer is checked against the weights of the version naming it.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

import models
from models.pack import main as pack
from models.repository import publish_version
from tests.e2e.pod import scrape, total
from tests.helpers import Digits, ServerProcess, running_server
from tests.reliability.test_startup import assert_each_fails_in_one_line

MODEL = "mnist-cnn"
SHIPPED = models.default_model_path()
ADMIN_KEY = "adm-7f3c"
INFERENCE_KEY = "inf-91d2"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
COUNT = 8
PNG = {"content-type": "image/png"}
POLL_S = 0.3
RETIRE_S = 2.0  # CNN_REQUEST_TIMEOUT_S: a retired version stops this long after
UNLOADED = {"UNLOADING", "UNAVAILABLE"}


# ---- checkpoints and the repository ----------------------------------------------


@pytest.fixture(scope="module")
def seeded_card(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init mnist_cnn under the shipped model's name and input: another version."""
    out = tmp_path_factory.mktemp("seeded")
    assert (
        pack(
            [
                *("--arch", "mnist_cnn", "--random-init", "--seed", "7", "--num-classes", "10"),
                *("--input", "1x28x28", "--mean", "0.1307", "--std", "0.3081"),
                *("--name", MODEL, "--out", str(out)),
            ]
        )
        == 0
    )
    return out / f"{MODEL}.json"


def copy_checkpoint(card: Path, folder: Path, *, truncate_weights: bool = False) -> None:
    """The card and its weights into `folder`; truncated weights keep the card's sha256."""
    folder.mkdir(parents=True, exist_ok=True)
    weights = json.loads(card.read_text())["weights_file"]
    shutil.copy(card, folder / card.name)
    shutil.copy(card.parent / weights, folder / weights)
    if truncate_weights:
        target = folder / weights
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])


def repository(tmp_path: Path, *cards: Path) -> Path:
    """A repository holding MODEL in versions 1, 2, ... made of `cards`, in order."""
    root = tmp_path / "repository"
    for number, card in enumerate(cards, start=1):
        copy_checkpoint(card, root / MODEL / str(number))
    return root


def publish(root: Path, card: Path, *, truncate_weights: bool = False) -> str:
    """Publish `card` as MODEL's next version, by rename; its number."""

    def write(folder: Path, _version: int) -> None:
        copy_checkpoint(card, folder, truncate_weights=truncate_weights)

    return publish_version(root, MODEL, write).name


def write_config(root: Path, policy: dict[str, object]) -> None:
    """config.json replaced whole, by rename: a scan never reads half of it."""
    tmp = root / MODEL / ".config.json.tmp"
    tmp.write_text(json.dumps({"version_policy": policy}))
    os.replace(tmp, root / MODEL / "config.json")


def repository_env(root: Path, control: str, workers: str = "1", **extra: str) -> dict[str, str]:
    return {
        "CNN_MODEL_REPOSITORY": str(root),
        "CNN_MODEL_CONTROL": control,
        "CNN_REQUEST_TIMEOUT_S": str(RETIRE_S),
        "CNN_WORKERS": workers,
        **extra,
    }


# ---- what each version answers, computed here ------------------------------------


def expected_probabilities(card: Path, digits: Digits) -> np.ndarray:
    loaded = models.load(card)
    batch = torch.stack([loaded.preprocess(image) for image in digits.images[:COUNT]])
    with torch.inference_mode():
        return torch.softmax(loaded.module(batch), dim=1).numpy()


def pixels(digits: Digits) -> np.ndarray:
    loaded = models.load(SHIPPED)
    return np.stack([loaded.preprocess.to_uint8(image) for image in digits.images[:COUNT]])


def pixel_input(array: np.ndarray) -> list[triton.InferInput]:
    tensor = triton.InferInput("input", list(array.shape), "UINT8")
    tensor.set_data_from_numpy(array, binary_data=True)
    return [tensor]


# ---- HTTP ------------------------------------------------------------------------


def index(base_url: str) -> dict[str, tuple[str, str]]:
    """version -> (state, reason) of MODEL, from the repository index."""
    response = httpx.post(f"{base_url}/v2/repository/index", headers=ADMIN, timeout=30)
    assert response.status_code == 200, response.text
    entries = response.json()
    assert all(entry["name"] == MODEL for entry in entries), entries
    return {entry["version"]: (entry["state"], entry["reason"]) for entry in entries}


def states(base_url: str) -> dict[str, str]:
    return {version: state for version, (state, _) in index(base_url).items()}


def classify(base_url: str, png: bytes, path: str = "/v1/classify") -> httpx.Response:
    return httpx.post(f"{base_url}{path}?top_k=10", content=png, headers=PNG, timeout=60)


def classify_answer(base_url: str, digits: Digits, path: str = "/v1/classify") -> tuple[str, int]:
    """(version, top class) of digit 0."""
    response = classify(base_url, digits.png(0), path)
    assert response.status_code == 200, response.text
    body = response.json()
    return body["version"], body["predictions"][0]["index"]


def problem(response: httpx.Response) -> tuple[int, str]:
    """/v1: the status and the problem's code."""
    return response.status_code, response.json().get("code", "")


def v2_error(response: httpx.Response) -> tuple[int, str]:
    """/v2 (the Open Inference Protocol's shape): the status and the error message."""
    return response.status_code, response.json()["error"]


def eventually(
    condition: Callable[[], bool], timeout: float, what: str, server: ServerProcess
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {timeout} s:\n{server.log()[-3000:]}"
        time.sleep(0.1)


def model_counter(base_url: str, name: str, **labels: str) -> float:
    return total(scrape(base_url), name, model=MODEL, **labels)


def served_versions(base_url: str) -> set[str]:
    samples = scrape(base_url)
    return {
        dict(labels)["version"]
        for (name, labels), value in samples.items()
        if name == "cnn_model_info" and dict(labels).get("model") == MODEL and value == 1
    }


@pytest.fixture
def triton_client() -> Iterator[Callable[[str], triton.InferenceServerClient]]:
    clients: list[triton.InferenceServerClient] = []

    def connect(base_url: str) -> triton.InferenceServerClient:
        client = triton.InferenceServerClient(
            url=base_url.removeprefix("http://"), network_timeout=120
        )
        clients.append(client)
        return client

    yield connect
    for client in clients:
        client.close()


def failure_status(call: Callable[[], object]) -> str:
    """The HTTP status of a client call that must fail."""
    with pytest.raises(InferenceServerException) as failure:
        call()
    return str(failure.value.status())


# ---- a. explicit control through tritonclient ------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2"])
def test_tritonclient_loads_a_new_version_retires_the_old_unloads_and_loads_again(
    tmp_path: Path,
    digits: Digits,
    seeded_card: Path,
    workers: str,
    triton_client: Callable[[str], triton.InferenceServerClient],
) -> None:
    shipped, seeded = (
        expected_probabilities(SHIPPED, digits),
        expected_probabilities(seeded_card, digits),
    )
    assert (shipped.argmax(1) != seeded.argmax(1)).any()  # the versions tell themselves apart
    inputs = pixel_input(pixels(digits))
    root = repository(tmp_path, SHIPPED)
    env = repository_env(root, "explicit", workers, CNN_ADMIN_API_KEY=ADMIN_KEY)

    with running_server(tmp_path, env=env) as server:
        base = server.base_url
        client = triton_client(base)

        def infer(version: str = "") -> tuple[str, np.ndarray]:
            result = client.infer(MODEL, inputs, model_version=version)
            return result.get_response()["model_version"], result.as_numpy("probabilities")

        index_1 = client.get_model_repository_index(headers=ADMIN)
        assert index_1 == [{"name": MODEL, "version": "1", "state": "READY", "reason": ""}]
        version, probabilities = infer()
        assert version == "1"
        np.testing.assert_allclose(probabilities, shipped, atol=1e-4)

        # Published, but explicit control loads nothing by itself.
        assert publish(root, seeded_card) == "2"
        assert infer()[0] == "1"
        assert states(base) == {"1": "READY"}

        client.load_model(MODEL, headers=ADMIN)
        after_load = states(base)
        assert after_load["2"] == "READY" and after_load["1"] in UNLOADED, after_load
        assert set(after_load) == {"1", "2"}
        for asked in ("2", ""):
            version, probabilities = infer(asked)
            assert version == "2", asked
            np.testing.assert_allclose(probabilities, seeded, atol=1e-4)
        assert failure_status(lambda: infer("1")) == "404"
        assert client.is_model_ready(MODEL, "2") and not client.is_model_ready(MODEL, "1")
        assert classify_answer(base, digits) == ("2", int(seeded[0].argmax()))
        eventually(
            lambda: states(base) == {"1": "UNAVAILABLE", "2": "READY"},
            RETIRE_S + 10,
            "version 1 stopped",
            server,
        )
        assert served_versions(base) == {"2"}

        client.unload_model(MODEL, headers=ADMIN)
        assert not client.is_model_ready(MODEL)
        assert not client.is_model_ready(MODEL, "2")
        unloaded = states(base)
        assert unloaded["2"] in UNLOADED and unloaded["1"] == "UNAVAILABLE", unloaded
        assert index(base)["2"][1] == "unloaded"
        assert problem(classify(base, digits.png(0))) == (404, "unknown_model")
        assert failure_status(lambda: infer()) == "404"
        # Nothing loaded is not "unknown": unloading twice is harmless.
        client.unload_model(MODEL, headers=ADMIN)

        client.load_model(MODEL, headers=ADMIN)
        assert client.is_model_ready(MODEL) and client.is_model_ready(MODEL, "2")
        version, probabilities = infer()
        assert version == "2"
        np.testing.assert_allclose(probabilities, seeded, atol=1e-4)
        assert classify_answer(base, digits) == ("2", int(seeded[0].argmax()))
        assert states(base) == {"1": "UNAVAILABLE", "2": "READY"}
        # A version unloaded and loaded again within CNN_REQUEST_TIMEOUT_S: the old copy's
        # stop must not mark the new one.
        time.sleep(RETIRE_S + 1)
        assert states(base) == {"1": "UNAVAILABLE", "2": "READY"}
        assert client.is_model_ready(MODEL, "2")
        assert infer()[0] == "2"

        loads = model_counter(base, "cnn_model_loads_total", outcome="loaded")
        assert loads == 3  # 1 at start-up, 2, and 2 again
        assert model_counter(base, "cnn_model_loads_total", outcome="failed") == 0
        assert model_counter(base, "cnn_model_unloads_total") == 2
        assert model_counter(base, "cnn_model_load_duration_seconds_count") == 3
        assert served_versions(base) == {"2"}

        # Refusals travel back as the client expects them, from the engine process too.
        unknown = failure_status(lambda: client.load_model("no-such-model", headers=ADMIN))
        assert unknown == "404"
        given = failure_status(lambda: client.load_model(MODEL, headers=ADMIN, config="{}"))
        assert given == "400"
        (root / MODEL / "config.json").write_text('{"version_policy": {"latest": {}, "all": {}}}')
        with pytest.raises(InferenceServerException) as unreadable:
            client.load_model(MODEL, headers=ADMIN)
        assert unreadable.value.status() == "400"
        assert "config.json" in unreadable.value.message()
        assert infer()[0] == "2" and client.is_model_ready(MODEL, "2")
        assert index(base)[""][0] == "UNAVAILABLE"  # the model's own entry, with the error


# ---- b. the admin key ---------------------------------------------------------------


@pytest.mark.slow
def test_admin_key_alone_opens_the_repository_api_and_never_inference(
    tmp_path: Path, digits: Digits
) -> None:
    root = repository(tmp_path, SHIPPED)
    keys = {"CNN_API_KEY": INFERENCE_KEY, "CNN_ADMIN_API_KEY": ADMIN_KEY}
    with running_server(tmp_path, env=repository_env(root, "none", **keys)) as server:
        base = server.base_url
        index_url = f"{base}/v2/repository/index"

        def post(url: str, key: str | None) -> httpx.Response:
            headers = {} if key is None else {"Authorization": f"Bearer {key}"}
            return httpx.post(url, headers=headers, timeout=30)

        status, message = v2_error(post(index_url, INFERENCE_KEY))
        assert status == 403 and "inference key cannot manage models" in message
        unauthenticated = post(index_url, None)
        assert v2_error(unauthenticated)[0] == 401
        assert unauthenticated.headers["www-authenticate"] == 'Bearer realm="cnn-serve"'
        wrong = post(index_url, "not-a-key")
        assert v2_error(wrong)[0] == 401
        assert 'error="invalid_token"' in wrong.headers["www-authenticate"]
        as_admin = post(index_url, ADMIN_KEY)
        assert as_admin.status_code == 200
        assert as_admin.json() == [{"name": MODEL, "version": "1", "state": "READY", "reason": ""}]
        ready_only = httpx.post(index_url, headers=ADMIN, json={"ready": True}, timeout=30)
        assert ready_only.json() == as_admin.json()
        for bad in ('{"ready": "yes"}', "[1]", "{"):
            refused = httpx.post(index_url, headers=ADMIN, content=bad, timeout=30)
            assert v2_error(refused)[0] == 400, bad
        # Every path under /v2/repository: load as well.
        load_url = f"{base}/v2/repository/models/{MODEL}/load"
        assert v2_error(post(load_url, INFERENCE_KEY))[0] == 403
        assert v2_error(post(load_url, None))[0] == 401
        status, message = v2_error(post(load_url, ADMIN_KEY))
        assert status == 409 and "CNN_MODEL_CONTROL=none" in message

        # The admin key is no inference key.
        png = digits.png(0)
        for path in ("/v1/classify", f"/v1/models/{MODEL}/versions/1/classify"):
            refused = httpx.post(
                f"{base}{path}",
                content=png,
                headers={**PNG, "Authorization": f"Bearer {ADMIN_KEY}"},
                timeout=30,
            )
            assert problem(refused) == (401, "unauthorized"), path
        metadata = httpx.get(f"{base}/v2/models/{MODEL}", headers=ADMIN, timeout=30)
        assert v2_error(metadata)[0] == 401
        allowed = httpx.post(
            f"{base}/v1/classify",
            content=png,
            headers={**PNG, "Authorization": f"Bearer {INFERENCE_KEY}"},
            timeout=30,
        )
        assert allowed.status_code == 200, allowed.text
        assert allowed.json()["version"] == "1"


@pytest.mark.slow
def test_without_an_admin_key_the_repository_api_is_off(tmp_path: Path) -> None:
    root = repository(tmp_path, SHIPPED)
    env = repository_env(root, "explicit", CNN_API_KEY=INFERENCE_KEY)
    with running_server(tmp_path, env=env) as server:
        for key in (INFERENCE_KEY, ADMIN_KEY, None):
            headers = {} if key is None else {"Authorization": f"Bearer {key}"}
            for path in ("index", f"models/{MODEL}/load", f"models/{MODEL}/unload"):
                response = httpx.post(
                    f"{server.base_url}/v2/repository/{path}", headers=headers, timeout=30
                )
                status, message = v2_error(response)
                assert status == 403 and "model management is off" in message, (key, path)
        # The model is still served, to the inference key.
        served = httpx.get(
            f"{server.base_url}/v2/models/{MODEL}/versions/1/ready",
            headers={"Authorization": f"Bearer {INFERENCE_KEY}"},
            timeout=30,
        )
        assert served.status_code == 200


@pytest.mark.slow
def test_an_admin_key_equal_to_the_inference_key_is_refused_at_start_up(tmp_path: Path) -> None:
    same = tmp_path / "same-key"
    same.write_text(f"{INFERENCE_KEY}\n")
    root = repository(tmp_path, SHIPPED)
    cases: dict[str, tuple[list[str], dict[str, str], str]] = {
        "admin key equals the inference key": (
            [],
            {"CNN_API_KEY": INFERENCE_KEY, "CNN_ADMIN_API_KEY": INFERENCE_KEY},
            "CNN_ADMIN_API_KEY",
        ),
        "admin key file holds the inference key": (
            [],
            {"CNN_API_KEY": INFERENCE_KEY, "CNN_ADMIN_API_KEY_FILE": str(same)},
            "CNN_ADMIN_API_KEY",
        ),
        "empty admin key": ([], {"CNN_ADMIN_API_KEY": " "}, "CNN_ADMIN_API_KEY: is empty"),
        "model control without a repository": (
            [],
            {"CNN_MODEL_CONTROL": "explicit"},
            "CNN_MODEL_CONTROL",
        ),
        "repository and models both": (
            [],
            {"CNN_MODEL_REPOSITORY": str(root), "CNN_MODELS": f"a={SHIPPED}"},
            "CNN_MODEL_REPOSITORY",
        ),
    }
    assert_each_fails_in_one_line(cases)


# ---- c. polling --------------------------------------------------------------------


@pytest.mark.slow
def test_polling_keeps_serving_through_a_broken_version_then_takes_a_good_one(
    tmp_path: Path, digits: Digits, seeded_card: Path
) -> None:
    shipped_top = int(expected_probabilities(SHIPPED, digits)[0].argmax())
    seeded_top = int(expected_probabilities(seeded_card, digits)[0].argmax())
    root = repository(tmp_path, SHIPPED)
    env = repository_env(
        root, "poll", CNN_REPOSITORY_POLL_S=str(POLL_S), CNN_ADMIN_API_KEY=ADMIN_KEY
    )
    with running_server(tmp_path, env=env) as server:
        base = server.base_url
        assert index(base) == {"1": ("READY", "")}

        assert publish(root, SHIPPED, truncate_weights=True) == "2"
        eventually(lambda: "2" in index(base), 30, "version 2 seen", server)
        eventually(lambda: index(base)["2"][0] != "LOADING", 30, "version 2 tried", server)
        found = index(base)
        assert found["1"] == ("READY", ""), found
        assert found["2"][0] == "UNAVAILABLE" and "sha256" in found["2"][1], found
        assert classify_answer(base, digits) == ("1", shipped_top)
        # Not tried again while its files stay the same.
        time.sleep(POLL_S * 5)
        assert model_counter(base, "cnn_model_loads_total", outcome="failed") == 1
        assert model_counter(base, "cnn_model_loads_total", outcome="loaded") == 1
        assert index(base) == found
        ready = total(scrape(base), "cnn_model_version_ready", model=MODEL, version="2")
        assert ready == 0

        # The repository decides: load and unload are refused.
        for action in ("load", "unload"):
            response = httpx.post(
                f"{base}/v2/repository/models/{MODEL}/{action}", headers=ADMIN, timeout=30
            )
            status, message = v2_error(response)
            assert status == 409 and "CNN_MODEL_CONTROL=poll" in message, action
        assert classify_answer(base, digits) == ("1", shipped_top)

        assert publish(root, seeded_card) == "3"
        eventually(lambda: classify_answer(base, digits)[0] == "3", 30, "version 3 serving", server)
        assert classify_answer(base, digits) == ("3", seeded_top)
        settled = index(base)
        assert settled["3"] == ("READY", "")
        assert settled["2"] == found["2"]
        assert settled["1"][0] in UNLOADED
        old = httpx.post(
            f"{base}/v1/models/{MODEL}/versions/1/classify",
            content=digits.png(0),
            headers=PNG,
            timeout=30,
        )
        assert problem(old) == (404, "unknown_model")
        assert model_counter(base, "cnn_model_loads_total", outcome="loaded") == 2
        assert model_counter(base, "cnn_model_loads_total", outcome="failed") == 1

        # Version 3's folder removed: the newest left, 2, cannot load, so 3 keeps serving
        # rather than nothing.
        shutil.rmtree(root / MODEL / "3")
        time.sleep(POLL_S * 5)
        assert classify_answer(base, digits) == ("3", seeded_top)
        assert index(base)["3"] == ("READY", "")
        # Version 2's removed too: 1 is the newest, and serves again; 2 leaves the index.
        shutil.rmtree(root / MODEL / "2")
        eventually(lambda: classify_answer(base, digits)[0] == "1", 30, "version 1 back", server)
        assert classify_answer(base, digits) == ("1", shipped_top)
        back = index(base)
        assert back["1"] == ("READY", "") and "2" not in back and back["3"][0] in UNLOADED, back
        assert "removed" in back["3"][1] or "policy" in back["3"][1], back
        assert model_counter(base, "cnn_model_loads_total", outcome="loaded") == 3


# ---- d. version policy -------------------------------------------------------------


@pytest.mark.slow
def test_version_policy_in_config_json(tmp_path: Path, digits: Digits, seeded_card: Path) -> None:
    shipped_top = int(expected_probabilities(SHIPPED, digits)[0].argmax())
    seeded = expected_probabilities(seeded_card, digits)
    root = repository(tmp_path, SHIPPED, seeded_card)
    write_config(root, {"specific": {"versions": [1]}})
    env = repository_env(root, "explicit", CNN_ADMIN_API_KEY=ADMIN_KEY)
    versioned = f"/v1/models/{MODEL}/versions"
    with running_server(tmp_path, env=env) as server:
        base = server.base_url
        assert states(base) == {"1": "READY"}
        assert classify_answer(base, digits) == ("1", shipped_top)
        assert classify_answer(base, digits, f"{versioned}/1/classify") == ("1", shipped_top)
        assert problem(classify(base, digits.png(0), f"{versioned}/2/classify")) == (
            404,
            "unknown_model",
        )
        assert served_versions(base) == {"1"}

        write_config(root, {"latest": {"num_versions": 2}})
        response = httpx.post(
            f"{base}/v2/repository/models/{MODEL}/load", headers=ADMIN, timeout=120
        )
        assert response.status_code == 200, response.text
        assert states(base) == {"1": "READY", "2": "READY"}
        assert served_versions(base) == {"1", "2"}
        assert classify_answer(base, digits) == ("2", int(seeded[0].argmax()))
        assert classify_answer(base, digits, f"{versioned}/1/classify") == ("1", shipped_top)
        assert classify_answer(base, digits, f"{versioned}/2/classify") == (
            "2",
            int(seeded[0].argmax()),
        )
        for version in ("1", "2"):
            meta = httpx.get(f"{base}{versioned}/{version}", timeout=30).json()
            assert meta["version"] == version
            maps = httpx.post(
                f"{base}{versioned}/{version}/feature-maps",
                content=digits.png(0),
                headers=PNG,
                timeout=30,
            )
            assert maps.status_code == 200, maps.text
            assert maps.json()["version"] == version
        v2_infer = httpx.post(
            f"{base}/v2/models/{MODEL}/versions/1/infer",
            json={
                "inputs": [
                    {
                        "name": "input",
                        "shape": [1, 1, 28, 28],
                        "datatype": "UINT8",
                        "data": pixels(digits)[:1].ravel().tolist(),
                    }
                ]
            },
            timeout=30,
        )
        assert v2_infer.status_code == 200, v2_infer.text
        assert v2_infer.json()["model_version"] == "1"

        # Back to version 1 alone: version 2 leaves at once.
        write_config(root, {"specific": {"versions": [1]}})
        response = httpx.post(
            f"{base}/v2/repository/models/{MODEL}/load", headers=ADMIN, timeout=120
        )
        assert response.status_code == 200, response.text
        narrowed = index(base)
        assert narrowed["1"] == ("READY", "")
        assert narrowed["2"][0] in UNLOADED and "policy" in narrowed["2"][1], narrowed
        assert classify_answer(base, digits) == ("1", shipped_top)

        # A config that cannot be read changes nothing served, and says why.
        (root / MODEL / "config.json").write_text('{"version_policy": {"newest": {}}}')
        response = httpx.post(
            f"{base}/v2/repository/models/{MODEL}/load", headers=ADMIN, timeout=120
        )
        status, message = v2_error(response)
        assert status == 400 and "config.json" in message and "newest" in message, message
        assert classify_answer(base, digits) == ("1", shipped_top)
        assert index(base)["1"] == ("READY", "")
