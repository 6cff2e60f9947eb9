"""Labels travel in HTTP headers: control characters are refused at pack and load time, and
any other text (non-ASCII, '%') reaches a client of a real server intact, percent-encoded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import httpx
import numpy as np
import pytest

import models
from models import CardError
from tests.helpers import Digits, running_server
from tests.reliability.test_startup import shipped_copy

PACK = str(Path(sys.executable).with_name("cnn-pack"))
DIGIT_NAMES = ["zéro", "un", "deux 2%", "三", "quatre", "cinq", "six", "sept ✓", "huit", "neuf"]


def pack_shipped_weights(labels_text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """cnn-pack the shipped MNIST weights under the labels in `labels_text`."""
    card = json.loads(models.default_model_path().read_text())
    weights = models.default_model_path().parent / card["weights_file"]
    labels = tmp_path / "labels.txt"
    labels.write_text(labels_text, encoding="utf-8", newline="")
    command = [
        PACK, "--arch", "mnist_cnn", "--weights", str(weights), "--labels", str(labels),
        "--input", "1x28x28", "--mean", "0.1307", "--std", "0.3081", "--name", "digits",
        "--out", str(tmp_path / "out"),
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("0\n1\x07bell\n2\n", "U+0007"),
        ("0\r\n1\rcarriage\n2\n", "U+000D"),
        ("0\n\x1b[31m\n", "U+001B"),
    ],
)
def test_pack_refuses_a_label_with_a_control_character(
    tmp_path: Path, text: str, shown: str
) -> None:
    result = pack_shipped_weights(text, tmp_path)
    assert result.returncode != 0
    message = result.stderr.strip().splitlines()
    assert len(message) == 1, result.stderr
    assert "line 2" in message[0] and shown in message[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_card_edited_to_hold_a_crlf_label_fails_to_load(tmp_path: Path) -> None:
    card_path = shipped_copy(tmp_path / "edited")
    card = json.loads(card_path.read_text())
    card["labels"][7] = "7\r\nX-Injected: yes"
    card_path.write_text(json.dumps(card))
    with pytest.raises(CardError, match=r"labels: .*'7\\r\\nX-Injected: yes'.*U\+000D"):
        models.load(card_path)


@pytest.mark.slow
def test_non_ascii_labels_reach_a_real_client_in_the_headers(
    tmp_path: Path, digits: Digits
) -> None:
    packed = pack_shipped_weights("\r\n".join(DIGIT_NAMES) + "\r\n", tmp_path)
    assert packed.returncode == 0, packed.stderr
    assert models.load(tmp_path / "out").card.labels == tuple(DIGIT_NAMES)
    # The first held-out digit of the classes whose names carry '%' and non-ASCII text.
    picks = [int(np.flatnonzero(digits.labels == c)[0]) for c in (2, 3, 7)]
    png = {"content-type": "image/png"}
    with running_server(tmp_path, args=["--model", f"digits={tmp_path / 'out'}"]) as server:
        base = f"{server.base_url}/v1/models/digits"
        for index in picks:
            body = digits.png(index)
            top = httpx.post(f"{base}/classify", content=body, headers=png, timeout=30)
            best = top.json()["predictions"][0]
            assert best["label"] == DIGIT_NAMES[best["index"]]
            for fmt in ("npz", "png"):
                query = "layers=conv1&format=" + fmt
                maps = httpx.post(
                    f"{base}/feature-maps?{query}", content=body, headers=png, timeout=30
                )
                assert maps.status_code == 200, maps.text
                header = maps.headers["x-prediction-label"]
                assert header.isascii()
                assert unquote(header) == best["label"]
