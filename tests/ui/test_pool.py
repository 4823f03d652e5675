"""--workers through the running studio: two clients are served at once, a batch's takes spread over the workers,
the studio says what to install when Ray is missing, and stopping the studio leaves no Ray process behind."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from tests.processes import descendants as children
from tests.processes import running
from tests.ui.conftest import ROOT, start_app, stop_app

pytest.importorskip("ray")
SIZE = dict(width=64, height=64, num_frames=9)


def test_a_studio_with_two_workers_serves_two_clients_at_once_and_leaves_no_process_on_exit(tmp_path):
    app = start_app(tmp_path / "outputs", "--workers", "2")
    try:
        results: dict[str, tuple] = {}

        def run(name: str, seed: int) -> None:
            results[name] = app.client().predict(
                prompt=f"client {name}", steps=20, seed=seed, api_name="/text_to_video", **SIZE
            )

        threads = [threading.Thread(target=run, args=(n, s)) for n, s in (("a", 1), ("b", 2))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
        statuses = [results[n][3] for n in "ab"]
        assert all(s.startswith("Done") for s in statuses), statuses
        workers = {results[n][4]["worker"]["index"] for n in "ab"}
        assert workers == {1, 2}  # one each, at the same time
        *_, takes = app.client().predict(prompt="a heron", count=4, seed=5, steps=2, api_name="/variations", **SIZE)
        assert len(takes) == 4 and {t["settings"]["worker"]["index"] for t in takes} == {1, 2}
        started = children(app.process.pid)
        assert len(started) > 3  # the Ray driver, Ray's own servers and the two workers
        log = app.log.read_text(errors="replace")
        assert "Traceback" not in log, log
    finally:
        stop_app(app)
    deadline = time.monotonic() + 30
    while any(running(pid) for pid in started) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in started if running(pid)]


def test_two_workers_without_ray_installed_say_what_to_install_in_one_line(tmp_path):
    blocked = "import sys; sys.modules['ray'] = None; sys.argv = ['app.py', '--workers', '2']; import app; app.main()"
    result = subprocess.run([sys.executable, "-c", blocked], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        "--workers 2 needs Ray, which is not installed: pip install -r requirements-ray.txt"
    )
