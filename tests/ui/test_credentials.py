"""Content credentials through the running studio: a video from the API read back with c2pa's Reader, launch-time
key problems said once while videos are still saved, and the Gallery's credentials line and Check a video box."""

from __future__ import annotations

import json
from pathlib import Path

import c2pa

from engine.library.credentials import AI_SOURCE_TYPE
from tests.ui.conftest import needs_chromium, open_page, shot, start_app, stop_app


def generate(app, prompt: str = "a lantern festival") -> tuple[str, dict]:
    *_, video, _seed, status, settings = app.client().predict(
        prompt=prompt, width=64, height=64, num_frames=5, steps=2, seed=5, api_name="/text_to_video"
    )
    assert status.startswith("Done"), status
    return video, settings


def test_a_video_from_the_running_studio_carries_credentials_c2pa_reads(app):
    video, settings = generate(app)
    with open(video, "rb") as f:
        reader = c2pa.Reader("video/mp4", f)
        store = json.loads(reader.json())
        state = reader.get_validation_state()
    manifest = store["manifests"][store["active_manifest"]]
    actions = next(a for a in manifest["assertions"] if a["label"] == "c2pa.actions.v2")["data"]["actions"]
    assert actions[0]["action"] == "c2pa.created" and actions[0]["digitalSourceType"] == AI_SOURCE_TYPE
    assert actions[0]["parameters"]["model"] == "tiny-ti2v"
    assert state == "Valid" and settings["credentials"]["signed"] is True


def test_a_broken_key_is_said_once_at_launch_and_videos_are_still_saved(tmp_path):
    broken = tmp_path / "key.pem"
    broken.write_text("not a key")
    chain = tmp_path / "chain.pem"
    chain.write_text("not a certificate")
    app = start_app(tmp_path / "outputs", "--credentials-cert", str(chain), "--credentials-key", str(broken))
    try:
        video, settings = generate(app)
        assert settings["credentials"]["signed"] is False and "cannot be used" in settings["credentials"]["reason"]
        assert Path(app.outputs, Path(video).name).is_file()
        log = app.log.read_text(errors="replace")
        assert log.count("Content credentials: the signing key or certificate cannot be used") == 1, log
        assert "Traceback" not in log
    finally:
        stop_app(app)


def test_credentials_off_saves_unsigned_videos_that_say_so(tmp_path):
    app = start_app(tmp_path / "outputs", "--no-credentials")
    try:
        _video, settings = generate(app)
        assert settings["credentials"] == {"signed": False, "reason": "turned off (--no-credentials)"}
    finally:
        stop_app(app)


def test_a_studio_set_by_environment_to_plain_names_sends_files_that_do_not_carry_the_prompt(tmp_path):
    env = {"WAN_FILENAMES": "plain", "WAN_NO_EMBEDDED_PROMPT": "1"}
    app = start_app(tmp_path / "outputs", env=env)
    try:
        video, settings = generate(app, "zanzibar marmalade")
        assert "zanzibar" not in Path(video).name and b"zanzibar" not in Path(video).read_bytes()
        assert settings["request"]["prompt"] == "zanzibar marmalade"  # the settings beside it keep it
    finally:
        stop_app(app)


@needs_chromium
def test_the_gallery_shows_credentials_and_checks_a_dropped_video(app, browser, tmp_path):
    video, _ = generate(app, "a credentials check")
    data = bytearray(Path(video).read_bytes())
    data[data.find(b"mdat") + 64] ^= 0x01
    tampered = tmp_path / "tampered.mp4"
    tampered.write_bytes(data)
    context, page = open_page(browser, app.url)
    try:
        page.get_by_role("tab", name="Gallery").click()
        page.locator("#gallery").get_by_text("a credentials check").first.click()
        about = page.locator("#gallery-about")
        about.get_by_text("AI-generated (trained algorithmic media)").wait_for()
        assert "Not altered since signing" in about.inner_text()
        page.set_input_files("#gallery-check input[type=file]", str(tampered))
        page.locator("#gallery-checked").get_by_text("Altered since signing").wait_for()
        assert "tampered.mp4" in page.inner_text("#gallery-checked")
        shot(page, "gallery-credentials")
        untouched = tmp_path / "untouched.mp4"
        untouched.write_bytes(Path(video).read_bytes())
        page.set_input_files("#gallery-check input[type=file]", str(untouched))  # the next file, no clear first
        page.locator("#gallery-checked").get_by_text("untouched.mp4").wait_for()
        assert "Not altered since signing" in page.inner_text("#gallery-checked")
    finally:
        context.close()
