"""A real server and Debian's Chromium driven by Playwright.

Playwright's own browser download is not used: the tests drive the system Chromium
(`apt-get install chromium`, which `make test` does when it is missing). Without it
they skip, and the reason is printed at the end of the run.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from models import default_model_path
from tests.helpers import ServerProcess, running_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
NO_BROWSER = f"{CHROMIUM} is missing (apt-get install -y chromium); browser tests skipped"
SECOND_MODEL = "mnist-copy"
API_KEY = "browser-test-key"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not CHROMIUM.exists() and terminalreporter.stats.get("skipped"):
        terminalreporter.write_line(NO_BROWSER, yellow=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The real `cnn-serve` with two models (the page shows its picker) and an API key."""
    shipped = default_model_path()
    env = {
        "CNN_MODELS": f"mnist-cnn={shipped},{SECOND_MODEL}={shipped}",
        "CNN_TORCH_THREADS": "1",
        "CNN_PREPROCESS_WORKERS": "2",
        "CNN_LOG_FORMAT": "text",
        "CNN_API_KEY": API_KEY,
        "CNN_SHUTDOWN_DRAIN_S": "0",  # nothing to drain: stop at once
    }
    with running_server(tmp_path_factory.mktemp("server"), env=env) as process:
        yield process


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip(NO_BROWSER)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Browser, server: ServerProcess) -> Iterator[Page]:
    """A fresh tab whose session already holds the API key; a script or CSP error fails the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=server.base_url)
    context.add_init_script(f"sessionStorage.setItem('cnn-serve.api-key', '{API_KEY}')")
    tab = context.new_page()
    script_errors: list[str] = []
    tab.on("pageerror", lambda error: script_errors.append(str(error)))
    # A blocked script, style or image (the page runs under the service's CSP) is an error too.
    tab.on(
        "console",
        lambda message: (
            "Content Security Policy" in message.text and script_errors.append(message.text)
        ),
    )
    try:
        yield tab
    finally:
        context.close()
    assert script_errors == []
