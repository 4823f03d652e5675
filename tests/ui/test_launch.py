"""Launch flags: logins, no open share link by accident, and a --help that answers at once and explains itself."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

from app import read_logins

from .conftest import ROOT, start_app, stop_app


def test_logins_come_from_the_flags_and_the_auth_file(tmp_path):
    auth_file = tmp_path / "logins.txt"
    auth_file.write_text("# team\nana:s3cret\n\nbo:pa:ss\n", encoding="utf-8")
    assert read_logins(["cy:pw"], str(auth_file)) == [("cy", "pw"), ("ana", "s3cret"), ("bo", "pa:ss")]


def test_a_login_without_a_password_is_refused_without_echoing_it():
    with pytest.raises(SystemExit, match="USER:PASSWORD") as caught:
        read_logins(["ana"], None)
    assert "ana:" not in str(caught.value)


def test_share_without_a_login_refuses_to_start():
    result = subprocess.run(
        [sys.executable, "app.py", "--share", "--port", "1"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "Refusing to --share without a login" in result.stderr


def test_with_a_login_the_api_needs_the_credentials(tmp_path):
    app = start_app(tmp_path / "outputs", "--auth", "ana:s3cret")
    try:
        with pytest.raises(Exception):  # noqa: B017 - gradio_client raises its own error types for a refused login
            app.client()
        with pytest.raises(Exception):  # noqa: B017
            app.client(auth=("ana", "wrong"))
        text, details = app.client(auth=("ana", "s3cret")).predict(prompt="a kite", api_name="/refine_prompt")
        assert "kite" in text.lower() and details["backend"] == "rules"
    finally:
        stop_app(app)


def test_a_full_queue_says_so(tmp_path):
    app = start_app(tmp_path / "outputs", "--queue-size", "1")
    try:
        client = app.client()
        running = client.submit(
            prompt="first", steps=100, num_frames=33, width=256, height=256, api_name="/text_to_video"
        )
        next(iter(running))  # the first job has started
        waiting = app.client().submit(prompt="second", steps=1, api_name="/text_to_video")
        time.sleep(1.0)
        refused = app.client().submit(prompt="third", steps=1, api_name="/text_to_video")
        with pytest.raises(Exception, match="(?i)queue is full"):
            refused.result(timeout=60)
        client.predict(api_name="/stop")
        assert waiting.result(timeout=120)[1] is not None  # the waiting job still runs after the stop
    finally:
        stop_app(app)


def test_help_and_flags_need_no_torch(tmp_path):
    # the choices on the command line come from engine.flags; torch loads only when the studio starts
    code = "import sys, app; app.parse_args(['--memory', 'group']); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_every_option_in_help_says_its_default():
    out = subprocess.run([sys.executable, "app.py", "--help"], cwd=ROOT, capture_output=True, text=True, check=True)
    text = " ".join(out.stdout.split())
    options = [o for o in re.findall(r"^  (--[a-z0-9-]+)", out.stdout, flags=re.M) if o != "--help"]
    assert len(options) >= 18
    assert text.count("default:") >= len(options)
    for var in ("WAN_MODEL", "WAN_MEMORY", "WAN_HOST", "WAN_PORT", "WAN_OUTPUTS", "WAN_QUEUE_SIZE"):
        assert f"env {var}" in text


def test_the_readmes_list_of_options_is_made_from_the_flag_table():
    from app import flags_markdown

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    listed = readme.split("<!-- flags -->\n", 1)[1].split("\n<!-- /flags -->", 1)[0]
    assert listed == flags_markdown(), 'run: python -c "import app; print(app.flags_markdown())" into README.md'


def test_a_bad_value_in_an_environment_variable_is_refused_by_name():
    env = {**os.environ, "WAN_QUEUE_SIZE": "many"}
    out = subprocess.run([sys.executable, "app.py", "--help"], cwd=ROOT, capture_output=True, text=True, env=env)
    assert out.returncode == 2 and "WAN_QUEUE_SIZE='many' is not a valid value for --queue-size" in out.stderr
    assert "Traceback" not in out.stderr
