"""Start-up failures: the real `cnn-serve` exits non-zero with one line naming the cause."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import models
from tests.helpers import free_port

CLI = str(Path(sys.executable).with_name("cnn-serve"))


def shipped_copy(folder: Path) -> Path:
    """A copy of the shipped checkpoint to break; returns its card."""
    source = models.default_model_path()
    card_path = source if source.suffix == ".json" else source.with_suffix(".json")
    folder.mkdir()
    card = json.loads(card_path.read_text())
    shutil.copy(card_path, folder / card_path.name)
    shutil.copy(card_path.parent / card["weights_file"], folder / card["weights_file"])
    return folder / card_path.name


def broken_checkpoints(tmp_path: Path) -> dict[str, tuple[list[str], dict[str, str], str]]:
    """name -> (cli args, extra environment, words the one line must contain)."""
    missing = shipped_copy(tmp_path / "missing")
    weights = missing.parent / json.loads(missing.read_text())["weights_file"]
    weights.unlink()

    corrupt = shipped_copy(tmp_path / "corrupt")
    card = json.loads(corrupt.read_text())
    garbage = corrupt.parent / card["weights_file"]
    garbage.write_bytes(b"definitely not a torch archive" * 100)
    card["weights_sha256"] = models.checkpoint.sha256_file(garbage)  # the hash is right
    corrupt.write_text(json.dumps(card))

    tampered = shipped_copy(tmp_path / "tampered")
    tampered_weights = tampered.parent / json.loads(tampered.read_text())["weights_file"]
    data = bytearray(tampered_weights.read_bytes())
    data[-100] ^= 0xFF
    tampered_weights.write_bytes(bytes(data))

    mismatched = shipped_copy(tmp_path / "mismatched")
    card = json.loads(mismatched.read_text())
    card["labels"] = ["cat", "dog", "bird"]  # the weights have ten outputs
    mismatched.write_text(json.dumps(card))

    crlf = shipped_copy(tmp_path / "crlf")
    card = json.loads(crlf.read_text())
    card["labels"][3] = "3\r\nSet-Cookie: x"  # would end a header line early
    crlf.write_text(json.dumps(card))

    absent = "cuda" if not torch.cuda.is_available() else f"cuda:{torch.cuda.device_count()}"
    return {
        "missing weights file": ([f"--model=m={missing}"], {}, "weights file not found"),
        "corrupt weights": ([f"--model=m={corrupt}"], {}, "cannot read weights"),
        "sha256 mismatch": ([f"--model=m={tampered}"], {}, "sha256 mismatch"),
        "card does not match the weights": ([f"--model=m={mismatched}"], {}, "do not match"),
        "label with a CR LF": ([f"--model=m={crlf}"], {}, "control character U+000D"),
        "CUDA requested but absent": ([], {"CNN_DEVICE": absent}, absent),
        "invalid setting": ([], {"CNN_MAX_BATCH_SIZE": "0"}, "CNN_MAX_BATCH_SIZE"),
    }


def bad_settings(
    tmp_path: Path, busy_port: int
) -> dict[str, tuple[list[str], dict[str, str], str]]:
    """Settings that used to start a broken service, or fail without naming themselves."""
    key_file = tmp_path / "key"
    key_file.write_text("s3cret\n")
    shipped = str(models.default_model_path())
    return {
        "default model not served": ([], {"CNN_DEFAULT_MODEL": "nope"}, "CNN_DEFAULT_MODEL"),
        "default model not among CNN_MODELS": (
            [],
            {"CNN_MODELS": f"a={shipped}", "CNN_DEFAULT_MODEL": "b"},
            "CNN_DEFAULT_MODEL",
        ),
        "empty API key": ([], {"CNN_API_KEY": ""}, "CNN_API_KEY: is empty"),
        "empty API key beside a key file": (
            [],
            {"CNN_API_KEY": "", "CNN_API_KEY_FILE": str(key_file)},
            "CNN_API_KEY: is empty",
        ),
        "missing key file": (
            [],
            {"CNN_API_KEY_FILE": str(tmp_path / "absent")},
            "CNN_API_KEY_FILE: cannot read",
        ),
        "temp dir missing": (
            [],
            {"CNN_TEMP_DIR": str(tmp_path / "absent")},
            "CNN_TEMP_DIR: " + str(tmp_path / "absent"),
        ),
        "host not on this machine": (["--host", "192.0.2.1"], {}, "CNN_HOST: cannot listen"),
        "port busy": (
            ["--port", str(busy_port)],
            {},
            f"CNN_PORT: cannot listen on port {busy_port}",
        ),
        "metrics port busy": (
            [],
            {"CNN_METRICS_PORT": str(busy_port)},
            f"CNN_METRICS_PORT: cannot listen on port {busy_port}",
        ),
        "duplicate model names": (
            [],
            {"CNN_MODELS": f"a={shipped},a={shipped}"},
            "CNN_MODELS: duplicate model names",
        ),
    }


def assert_each_fails_in_one_line(cases: dict[str, tuple[list[str], dict[str, str], str]]) -> None:
    processes = {}
    for name, (args, env, _) in cases.items():
        command = [CLI, "--host", "127.0.0.1", "--port", str(free_port()), *args]
        processes[name] = subprocess.Popen(
            command,
            env={**os.environ, "CNN_LOG_FORMAT": "json", **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    for name, process in processes.items():
        out, err = process.communicate(timeout=120)
        assert process.returncode not in (0, None), name
        plain = [line for line in err.splitlines() if not line.startswith("{")]
        assert len(plain) == 1, f"{name}: {err}"
        assert plain[0].startswith("cnn-serve: "), name
        assert cases[name][2] in plain[0], f"{name}: {plain[0]}"
        assert "Traceback" not in out + err, name
        assert "Uvicorn running" not in err, name  # never listening, not even half-ready


@pytest.mark.slow
def test_start_up_failures_exit_non_zero_with_one_line_naming_the_cause(tmp_path: Path) -> None:
    assert_each_fails_in_one_line(broken_checkpoints(tmp_path))


@pytest.mark.slow
def test_settings_that_cannot_work_are_refused_in_one_line_naming_the_variable(
    tmp_path: Path,
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        assert_each_fails_in_one_line(bad_settings(tmp_path, busy.getsockname()[1]))
