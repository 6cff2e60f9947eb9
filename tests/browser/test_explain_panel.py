"""The debugging page's Explain panel in a real browser against a real server process."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from playwright.sync_api import Page

from service.explain_terms import occlusion_geometry
from tests.browser.conftest import API_KEY
from tests.browser.pages import WAIT_MS, open_page, post, save_screenshot, upload
from tests.helpers import ROOT, Digits, ServerProcess

SCREENSHOT = ROOT / "docs" / "explain-panel.png"
DIGIT = 0  # an index into the held-out digits
EXPLAIN = "/v1/models/mnist-cnn/explain"
# Method -> the inputs shown for it; the others are hidden.
INPUTS = {
    "gradcam": {"layer"},
    "gradcam_plus": {"layer"},
    "saliency": set(),
    "integrated_gradients": {"steps", "baseline"},
    "occlusion": {"baseline", "window", "stride", "passes"},
}
ALL_INPUTS = {"layer", "steps", "baseline", "window", "stride", "passes"}
MAX_LEVEL_ERROR = 2  # the canvas rounds its blend once more than the server does


def _ready(page: Page, digits: Digits) -> bytes:
    """The page with a digit classified and the Explain panel opened from the keyboard."""
    open_page(page)
    body = digits.png(DIGIT)
    upload(page, "digit.png", body)
    page.wait_for_selector("#prediction[data-state=done]", timeout=WAIT_MS)
    assert page.is_hidden("#explain-method")
    page.focus("#explain summary")
    page.keyboard.press("Enter")
    assert page.is_visible("#explain-method")
    return body


def _explain(page: Page) -> dict[str, str]:
    """Press Explain; the query string of the JSON request it sent, once the panel shows it."""
    with page.expect_request(lambda r: "/explain?" in r.url and "format=png" not in r.url) as sent:
        page.click("#explain-run")
    page.wait_for_selector("#explain-card[data-state=done]", timeout=WAIT_MS)
    assert sent.value.headers["authorization"] == f"Bearer {API_KEY}"
    query = sent.value.url.split("?", 1)[1]
    return dict(pair.split("=", 1) for pair in query.split("&"))


def _canvas(page: Page) -> NDArray[np.int16]:
    url: str = page.eval_on_selector("#explain-canvas", "c => c.toDataURL('image/png')")
    png = base64.b64decode(url.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


def _png(server: ServerProcess, path: str, body: bytes) -> NDArray[np.int16]:
    response = post(server, path, body)
    assert response.status_code == 200, response.text
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"), dtype=np.int16)


def _assert_answer(page: Page, expected: dict[str, Any]) -> None:
    """The panel shows the target, layer and top-k of the API's answer for the same image."""
    assert page.get_attribute("#explain-echo-method", "data-value") == expected["method"]
    assert page.get_attribute("#explain-echo-target", "data-value") == expected["target"]["label"]
    assert page.inner_text("#explain-echo-target").startswith(
        f"{expected['target']['label']} (class {expected['target']['index']}"
    )
    assert page.get_attribute("#explain-echo-layer", "data-value") == (expected["layer"] or "")
    bars = page.eval_on_selector_all(
        "#explain-top-k li",
        "items => items.map(li => [li.querySelector('.label').textContent, "
        "li.querySelector('progress').value])",
    )
    top_k = expected["prediction"]["top_k"]
    assert [label for label, _ in bars] == [entry["label"] for entry in top_k]
    for (_, value), entry in zip(bars, top_k, strict=True):
        assert abs(value - entry["probability"]) < 1e-6


def _slide_to(page: Page, key: str) -> NDArray[np.int16]:
    page.focus("#explain-alpha")
    page.keyboard.press(key)
    return _canvas(page)


def test_grad_cam_and_integrated_gradients_match_the_api(
    page: Page, server: ServerProcess, digits: Digits
) -> None:
    body = _ready(page, digits)
    sent = _explain(page)
    assert sent == {"method": "gradcam", "top_k": "5"}  # layer and target: the server's defaults
    expected = post(server, f"{EXPLAIN}?method=gradcam&top_k=5", body).json()
    assert expected["layer"] == "relu5"
    assert expected["target"]["label"] == str(digits.labels[DIGIT])
    _assert_answer(page, expected)
    assert page.inner_text("#explain-layer option:first-child") == "server default (relu5)"

    # At opacity 0.5 the canvas is the server's own overlay, blended in the browser.
    drawn = _canvas(page)
    overlay = _png(server, f"{EXPLAIN}?method=gradcam&format=png&view=overlay&alpha=0.5", body)
    assert drawn.shape == overlay.shape == (224, 224, 3)
    assert np.abs(drawn - overlay).max() <= MAX_LEVEL_ERROR
    seen = np.asarray(
        Image.open(io.BytesIO(post(server, "/v1/models/mnist-cnn/preprocessed", body).content))
        .convert("RGB")
        .resize((224, 224), Image.Resampling.NEAREST),
        dtype=np.int16,
    )
    assert np.any(drawn != seen, axis=2).mean() > 0.5  # the heatmap is on it
    save_screenshot(SCREENSHOT, page.locator("#explain-card").screenshot())

    # The slider redraws locally: no request, other pixels; at 0 the input, at 1 the heatmap.
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    plain = _slide_to(page, "Home")
    assert page.inner_text("#explain-alpha-value") == "0.00"
    assert np.abs(plain - seen).max() <= MAX_LEVEL_ERROR
    alone = _slide_to(page, "End")
    heatmap = _png(server, f"{EXPLAIN}?method=gradcam&format=png&view=heatmap", body)
    assert np.abs(alone - heatmap).max() <= MAX_LEVEL_ERROR
    assert np.any(alone != drawn, axis=2).mean() > 0.5
    assert requests == []

    # Integrated gradients for a chosen class, with fewer steps.
    page.select_option("#explain-method", "integrated_gradients")
    page.fill("#explain-steps", "16")
    page.select_option("#explain-target", "3")
    sent = _explain(page)
    assert sent == {
        "method": "integrated_gradients",
        "top_k": "5",
        "target": "3",
        "steps": "16",
        "baseline": "black",
    }
    query = "method=integrated_gradients&target=3&steps=16&baseline=black&top_k=5"
    expected = post(server, f"{EXPLAIN}?{query}", body).json()
    assert expected["target"] == {"index": 3, "label": "3"}
    _assert_answer(page, expected)
    assert page.inner_text("#explain-echo-layer").startswith("–")
    heatmap = _png(server, f"{EXPLAIN}?{query}&format=png&view=heatmap", body)
    assert np.abs(_canvas(page) - heatmap).max() <= MAX_LEVEL_ERROR  # the slider stayed at 1


def test_method_inputs_show_and_hide(page: Page, digits: Digits) -> None:
    _ready(page, digits)
    for method, shown in INPUTS.items():
        page.select_option("#explain-method", method)
        for name in ALL_INPUTS:
            visible = page.is_visible(f"#explain-{name}")
            assert visible == (name in shown), (method, name)
    layers = page.eval_on_selector_all("#explain-layer option", "os => os.map(o => o.value)")
    assert layers == ["", "conv1", "conv2", "conv3", "conv4", "conv5"]
    targets = page.eval_on_selector_all("#explain-target option", "os => os.map(o => o.value)")
    assert targets == ["", *(str(digit) for digit in range(10))]

    # Occlusion: the forward passes the server will run, against its limit.
    assert page.get_attribute("#explain-window", "max") == "28"
    _, _, passes = occlusion_geometry(28, 28, None, None)
    assert f": {passes} forward passes (limit 1,024;" in page.inner_text("#explain-passes")
    page.fill("#explain-window", "1")
    page.fill("#explain-stride", "1")
    _, _, passes = occlusion_geometry(28, 28, 1, 1)
    assert f"window 1 · stride 1: {passes} forward passes" in page.inner_text("#explain-passes")


def test_errors_show_the_servers_detail(page: Page, server: ServerProcess, digits: Digits) -> None:
    body = _ready(page, digits)
    # A layer or class the list no longer has (the model behind the name was replaced).
    page.eval_on_selector("#explain-layer", "s => s.add(new Option('gone', 'gone'))")
    page.select_option("#explain-layer", "gone")
    page.click("#explain-run")
    page.wait_for_selector("#explain-card[data-state=error]", timeout=WAIT_MS)
    problem = post(server, f"{EXPLAIN}?layer=gone", body).json()
    assert problem["code"] == "unknown_layer"
    assert page.inner_text("#explain-error") == f"{problem['title']}: {problem['detail']}"
    assert page.get_attribute("#explain-error", "data-code") == "unknown_layer"
    assert page.is_hidden("#explain-echo")

    page.select_option("#explain-layer", "")
    page.eval_on_selector("#explain-target", "s => s.add(new Option('cat', 'cat'))")
    page.select_option("#explain-target", "cat")
    page.click("#explain-run")
    page.wait_for_selector("#explain-error[data-code=unknown_target]", timeout=WAIT_MS)
    problem = post(server, f"{EXPLAIN}?target=cat", body).json()
    assert page.inner_text("#explain-error") == f"{problem['title']}: {problem['detail']}"

    page.select_option("#explain-target", "")
    _explain(page)  # a good request clears the error
    assert page.is_hidden("#explain-error")
