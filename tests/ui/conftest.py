"""The app as a user starts it: `python app.py` in its own process on 127.0.0.1, with the tiny offline model."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("WAN_TEST_ARTIFACTS", ROOT / "test-artifacts"))
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
needs_chromium = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunningApp:
    url: str
    outputs: Path
    process: subprocess.Popen
    log: Path  # what the studio printed (stdout and stderr)

    def client(self, **kwargs):
        from gradio_client import Client

        return Client(self.url, verbose=False, **kwargs)


def start_app(outputs: Path, *flags: str, timeout: float = 120, env: dict[str, str] | None = None) -> RunningApp:
    """The studio as a user starts it, offline unless env says otherwise (a test Hub on 127.0.0.1)."""
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", **(env or {})}
    command = [sys.executable, "app.py", "--model", "tiny-ti2v", "--port", str(port), "--outputs", str(outputs)]
    outputs.mkdir(parents=True, exist_ok=True)
    log = outputs.parent / f"{outputs.name}-app-{port}.log"  # a file, not a pipe nobody reads: it never fills
    with open(log, "w") as sink:
        proc = subprocess.Popen([*command, *flags], cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"app exited early:\n{log.read_text(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return RunningApp(f"http://127.0.0.1:{port}/", outputs, proc, log)
        except OSError:
            time.sleep(0.5)
    proc.kill()
    pytest.fail(f"app did not start within {timeout} s")


def stop_app(app: RunningApp) -> None:
    app.process.terminate()
    try:
        app.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        app.process.kill()


@pytest.fixture(scope="session")
def app(tmp_path_factory) -> RunningApp:
    """One studio for the UI tests (they share its queue and outputs folder, as users of one studio do)."""
    running = start_app(tmp_path_factory.mktemp("app-outputs"), "--queue-size", "8", "--max-upload", "8mb")
    yield running
    stop_app(running)


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium driven by Playwright (never a downloaded browser build)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def open_page(browser, url: str):
    """A browser tab on the studio, the size the screenshots are taken at, with the header drawn."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(90_000)
    page.goto(url)
    page.wait_for_selector("#model-state")
    return context, page


def type_number(page, box: str, value: str) -> None:
    """Type a number into a box and see it hold. A control drawn a moment ago (an accordion just opened) may still
    be taking its first value and put it back over what was typed; typing again once it has settled is what a
    person would do, and nothing else on the page can change the box meanwhile."""
    for _ in range(5):
        page.fill(box, value)
        page.press(box, "Enter")
        page.wait_for_timeout(300)
        if page.input_value(box) == value:
            return
    raise AssertionError(f"{box} did not take {value}; it shows {page.input_value(box)}")


def shot(page, name: str) -> None:
    """A full-page screenshot under test-artifacts/ for a person to look at."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


@contextmanager
def own_studio_page(browser, outputs: Path, *flags: str) -> Iterator[tuple[RunningApp, object]]:
    """A studio of its own and a page on it, for tests that change what every user sees (the loaded model)."""
    app = start_app(outputs, *flags)
    context = None
    try:
        context, page = open_page(browser, app.url)
        yield app, page
    finally:
        if context is not None:
            context.close()
        stop_app(app)
