"""The app as a user starts it: `python app.py` in its own process, driven through gradio_client."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from gradio_client import Client

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    outputs = tmp_path_factory.mktemp("app-outputs")
    port = free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False")
    proc = subprocess.Popen(
        [sys.executable, "app.py", "--model", "tiny-ti2v", "--port", str(port), "--outputs", str(outputs)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"app exited early:\n{proc.stdout.read()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("app did not start within 120 s")
    yield Client(url, verbose=False), outputs
    proc.terminate()
    proc.wait(timeout=30)


def test_a_prompt_becomes_a_video_in_the_outputs_folder(app):
    client, outputs = app
    status, _preview, video = client.predict("a paper lantern over a lake", None, 21, api_name="/generate")
    assert "seed 21" in status
    assert Path(video).suffix == ".mp4"
    saved = list(outputs.glob("*_21_a-paper-lantern-over-a-lake.mp4"))
    assert len(saved) == 1 and saved[0].with_suffix(".json").is_file()


def test_an_empty_prompt_gets_a_clear_message_and_the_app_keeps_serving(app):
    client, _ = app
    with pytest.raises(Exception, match="Write a prompt"):
        client.predict("   ", None, -1, api_name="/generate")
    status, _, _ = client.predict("a second try", None, 3, api_name="/generate")
    assert "seed 3" in status
