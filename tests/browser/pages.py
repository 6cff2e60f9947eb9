"""What the browser tests share: the page opened and fed, the API asked directly, screenshots."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import numpy as np
from PIL import Image
from playwright.sync_api import Page

from tests.browser.conftest import API_KEY
from tests.helpers import ServerProcess

WAIT_MS = 60_000
MAX_PIXEL_JITTER = 200  # pixels that may differ from the saved screenshot before it is rewritten
AUTH = {"authorization": f"Bearer {API_KEY}"}


def post(server: ServerProcess, path: str, body: bytes) -> httpx.Response:
    headers = {**AUTH, "content-type": "image/png"}
    return httpx.post(f"{server.base_url}{path}", content=body, headers=headers, timeout=30)


def open_page(page: Page) -> None:
    response = page.goto("/")
    assert response is not None
    # The page works under the strict policy the service sends: nothing inline, nothing remote.
    assert "script-src 'self'" in response.headers["content-security-policy"]
    # The layer list is in: the model, its layers and the feature-map slots are set up.
    page.wait_for_selector("#layers tbody tr", timeout=WAIT_MS)


def upload(page: Page, name: str, body: bytes) -> None:
    page.set_input_files("#file", files=[{"name": name, "mimeType": "image/png", "buffer": body}])


def save_screenshot(path: Path, png: bytes) -> None:
    """Write `path` unless the page looks the same as the picture there.

    Software rasterizing anti-aliases a few edge pixels differently from run to run:
    rewriting the file for those would leave the working tree changed after every test run.
    """
    new = Image.open(io.BytesIO(png)).convert("RGB")
    if path.exists():
        with Image.open(path) as old_file:
            old = old_file.convert("RGB")
        if old.size == new.size:
            changed = np.any(np.asarray(old) != np.asarray(new), axis=2)
            if int(changed.sum()) <= MAX_PIXEL_JITTER:
                return
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(png)
