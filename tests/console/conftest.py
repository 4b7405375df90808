"""Drive the web console in headless Chromium (Debian's package, through Playwright)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli.control_plane import start_control_plane
from tests.conftest import Server, stop_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Overrides the root `server`: the console only talks HTTP, so one SQLite server;
    with serving on, so that the deployments page can deploy and chat with a base model."""
    srv = start_control_plane(tmp_path_factory.mktemp("console-server"), DASHTUNE_SERVING="true")
    yield srv
    stop_server(srv)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if CHROMIUM is None:
        pytest.skip(
            "chromium is not installed and cannot be installed here "
            "(as root: apt-get install -y chromium; .ci/run does this before make test)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh browser context (empty localStorage); confirm() and prompt() dialogs are
    accepted (prompts with their default value).
    A JavaScript error on the page fails the test; its last state is saved as a screenshot."""
    # The console's CSP forbids eval, which Playwright's string predicates
    # (`wait_for_function`) need; the page's own scripts still run under the real headers
    # (tests/integration/test_hostile_input.py checks them).
    context = browser.new_context(viewport={"width": 1360, "height": 900}, bypass_csp=True)
    context.set_default_timeout(15_000)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.on("dialog", lambda dialog: dialog.accept(dialog.default_value))
    yield pg
    shot(pg, f"{request.node.name}-last")
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def shot(pg: Any, name: str) -> Path:
    """A full-page screenshot under test-artifacts/console/."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    pg.evaluate("window.scrollTo(0, 0)")  # else the sticky top bar lands mid-page
    pg.screenshot(path=str(path), full_page=True)
    return path


def login(pg: Any, server: Server) -> None:
    pg.goto(server.base + "/console")
    pg.fill("#api-key", server.key)
    pg.click("button[type=submit]")
    pg.wait_for_selector("#new-job")


def wait_until(predicate: Any, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)
