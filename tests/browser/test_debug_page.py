"""The debugging page in a real browser against a real server process."""

from __future__ import annotations

import io

from PIL import Image
from playwright.sync_api import Browser, Page

from tests.browser.conftest import API_KEY, SECOND_MODEL
from tests.browser.pages import WAIT_MS, open_page, post, save_screenshot, upload
from tests.helpers import ROOT, Digits, ServerProcess

SCREENSHOT = ROOT / "docs" / "debug-page.png"
DIGIT = 0  # an index into the held-out digits


def _classify(server: ServerProcess, body: bytes) -> dict[str, object]:
    response = post(server, "/v1/models/mnist-cnn/classify?top_k=5", body)
    prediction: dict[str, object] = response.json()["predictions"][0]
    return prediction


def _natural_width(page: Page, selector: str) -> int:
    page.wait_for_function(
        "s => { const img = document.querySelector(s); return img && img.complete && img.naturalWidth > 0 }",
        arg=selector,
        timeout=WAIT_MS,
    )
    width: int = page.eval_on_selector(selector, "img => img.naturalWidth")
    return width


def test_uploaded_digit_shows_the_api_answer_and_conv1_maps(
    page: Page, server: ServerProcess, digits: Digits
) -> None:
    open_page(page)
    body = digits.png(DIGIT)
    upload(page, "digit.png", body)
    page.wait_for_selector("#prediction[data-state=done]", timeout=WAIT_MS)

    expected = _classify(server, body)
    assert page.inner_text("#prediction") == expected["label"]
    assert expected["label"] == str(digits.labels[DIGIT])
    bars = page.eval_on_selector_all(
        "#top-k li",
        "items => items.map(li => [li.querySelector('.label').textContent, "
        "li.querySelector('progress').value])",
    )
    top_k = expected["top_k"]
    assert isinstance(top_k, list)
    assert [label for label, _ in bars] == [entry["label"] for entry in top_k]
    for (_, value), entry in zip(bars, top_k, strict=True):
        assert abs(value - entry["probability"]) < 1e-6

    # conv1's grid is the image the PNG endpoint renders for the same bytes and parameters.
    src_width = _natural_width(page, 'img[data-layer="conv1"]')
    direct = post(server, "/v1/models/mnist-cnn/feature-maps?layers=conv1&format=png&scale=2", body)
    assert src_width == Image.open(io.BytesIO(direct.content)).width
    assert _natural_width(page, "#preprocessed") == 28
    assert _natural_width(page, "#kernels") > 0
    shown_layers = page.eval_on_selector_all("#maps img", "imgs => imgs.map(i => i.dataset.layer)")
    assert shown_layers == [f"conv{i}" for i in range(1, 6)]
    for layer in shown_layers:
        assert _natural_width(page, f'img[data-layer="{layer}"]') > 0

    # Under each grid, the layer's statistics from the JSON form of the same endpoint.
    page.wait_for_function(
        "() => [...document.querySelectorAll('#maps .stats')].every(p => p.textContent)",
        timeout=WAIT_MS,
    )
    stats = post(server, "/v1/models/mnist-cnn/feature-maps?layers=conv5&format=json", body)
    means, zeros = (stats.json()["layers"][0]["stats"][key] for key in ("mean", "zeros"))
    dead = sum(1 for fraction in zeros if fraction == 1)
    line = page.inner_text('#maps figure[data-layer="conv5"] .stats')
    assert line.startswith(f"mean {sum(means) / len(means):.3f} · ")
    assert line.endswith(f"all-zero channels {dead}/{len(zeros)}")

    shot = page.screenshot(full_page=True)
    assert Image.open(io.BytesIO(shot)).width == 1280
    save_screenshot(SCREENSHOT, shot)


def test_a_drawn_digit_gets_a_prediction(page: Page, server: ServerProcess) -> None:
    open_page(page)
    box = page.locator("#canvas").bounding_box()
    assert box is not None
    x = box["x"] + box["width"] / 2
    top, bottom = box["y"] + box["height"] * 0.2, box["y"] + box["height"] * 0.8
    with page.expect_request(lambda r: r.url.endswith("/classify?top_k=5")) as sent:
        # A vertical stroke: a "1". Releasing the pen classifies the drawing.
        page.mouse.move(x, top)
        page.mouse.down()
        page.mouse.move(x, bottom, steps=12)
        page.mouse.up()
    page.wait_for_selector("#prediction[data-state=done]", timeout=WAIT_MS)
    shown = page.inner_text("#prediction")
    drawn = sent.value.post_data_buffer
    assert drawn is not None
    assert drawn.startswith(b"\x89PNG")
    assert shown == _classify(server, drawn)["label"]
    assert shown == "1"


def test_an_api_error_is_shown_as_readable_text(page: Page, server: ServerProcess) -> None:
    open_page(page)
    body = b"these bytes are not a PNG"
    upload(page, "broken.png", body)
    page.wait_for_selector("#prediction[data-state=error]", timeout=WAIT_MS)
    problem = post(server, "/v1/classify", body).json()
    shown = page.inner_text("#errors")
    assert f"{problem['title']}: {problem['detail']}" in shown
    assert "{" not in shown  # a sentence, not a JSON dump


def test_api_key_field_and_model_picker(browser: Browser, server: ServerProcess) -> None:
    context = browser.new_context(base_url=server.base_url)  # a session without the key
    page = context.new_page()
    try:
        page.goto("/")
        refused = page.wait_for_selector("#errors li[data-code=unauthorized]", timeout=WAIT_MS)
        assert refused is not None
        assert refused.inner_text().startswith("A valid API key is required: ")

        page.fill("#api-key", API_KEY)
        with page.expect_request(lambda r: r.url.endswith("/v1/models")) as listing:
            page.press("#api-key", "Tab")  # "change" fires: the page starts over with the key
        assert listing.value.headers["authorization"] == f"Bearer {API_KEY}"
        page.wait_for_selector("#layers tbody tr", timeout=WAIT_MS)
        assert page.is_hidden("#errors")

        page.reload()  # the key stays for the browser session
        page.wait_for_selector("#layers tbody tr", timeout=WAIT_MS)
        assert page.input_value("#api-key") == API_KEY

        assert page.is_visible("#model-picker")
        options = page.eval_on_selector_all("#model option", "opts => opts.map(o => o.value)")
        assert options == ["mnist-cnn", SECOND_MODEL]
        with page.expect_response(lambda r: f"/v1/models/{SECOND_MODEL}/layers" in r.url) as chosen:
            page.select_option("#model", SECOND_MODEL)
        assert chosen.value.status == 200
    finally:
        context.close()
