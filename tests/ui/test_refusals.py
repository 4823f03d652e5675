"""Refusals and failures the way a creator meets them: the studio's sentence where it belongs, said once, kept until
the next action; no framework badge over the page; one line in the terminal."""

from __future__ import annotations

import time
from itertools import pairwise

import pytest

from .conftest import needs_chromium, open_page, own_studio_page, shot

SUBMITTING = "Submitting"


@pytest.fixture
def page(browser, app):
    context, page = open_page(browser, app.url)
    yield page
    context.close()


def badges(page) -> int:
    """Gradio's red "Error" badges, which it paints over every output of an event that raised."""
    return page.locator(".error").count()


@needs_chromium
def test_width_zero_is_refused_in_the_status_line_and_nothing_is_left_submitting(page):
    page.click("text=Advanced")
    page.fill("#t2v-prompt textarea", "a kite over the dunes")
    page.get_by_label("Width").first.fill("0")
    page.click("#t2v-generate")
    page.wait_for_function("() => document.querySelector('#t2v-status').innerText.includes('Not started')")
    page.wait_for_timeout(10_000)  # longer than any pop-up lasts: the reason must still be on the page
    status = page.inner_text("#t2v-status")
    shot(page, "21-refused-width-zero")
    assert "Width must be at least" in status and SUBMITTING not in status
    assert badges(page) == 0 and page.locator(".toast-body").count() == 0
    assert not page.locator("#t2v-generate").is_disabled()


@needs_chromium
def test_image_to_video_without_a_picture_says_so_in_its_status_line(page):
    page.get_by_role("tab", name="Image to Video").click()
    page.fill("#i2v-prompt textarea", "the leaves tremble")
    page.click("#i2v-generate")
    page.wait_for_function("() => document.querySelector('#i2v-status').innerText.includes('Not started')")
    shot(page, "22-refused-no-picture")
    assert "Add an image" in page.inner_text("#i2v-status")
    assert badges(page) == 0
    assert not page.locator("#i2v-generate").is_disabled()


def test_a_refused_request_is_one_line_in_the_terminal_not_a_traceback(app):
    client = app.client()
    before = app.log.stat().st_size  # the studio is shared with other tests: read only what this one adds
    with pytest.raises(Exception, match="num_frames must be at least"):
        client.predict(prompt="a kite", num_frames=0, api_name="/text_to_video")
    time.sleep(0.5)
    with open(app.log, "rb") as f:
        f.seek(before)
        log = f.read().decode(errors="replace")
    assert "Traceback" not in log
    assert sum("num_frames must be at least" in line for line in log.splitlines()) == 1


def test_api_updates_are_not_repeated(app):
    job = app.client().submit(prompt="a paper lantern rises", seed=5, api_name="/text_to_video")
    statuses = [update[3] for update in job]
    assert statuses[-1].startswith("Done")
    repeated = [a for a, b in pairwise(statuses) if a == b]
    assert repeated == []


@needs_chromium
def test_a_launch_model_that_cannot_load_disables_generate_and_says_why(browser, tmp_path):
    with own_studio_page(browser, tmp_path / "outputs", "--model", str(tmp_path / "no-such-model")) as (app, page):
        page.wait_for_function("() => document.querySelector('#t2v-generate').disabled")
        shot(page, "23-launch-model-cannot-load")
        assert "failed" in page.inner_text("#model-state")
        assert "No working model is loaded" in page.inner_text("#t2v-generate >> xpath=../..")
        lines = [line for line in app.log.read_text().splitlines() if "no-such-model" in line]
        assert len(lines) == 1 and "cannot be used" in lines[0]
        page.locator("#model-select input").click()
        page.get_by_role("option", name="Tiny TI2V (offline demo, random weights: output is noise)").click()
        page.wait_for_function("() => !document.querySelector('#t2v-generate').disabled", timeout=90_000)


@needs_chromium
def test_a_model_that_cannot_load_is_said_once_in_the_header(browser, tmp_path):
    with own_studio_page(browser, tmp_path / "outputs") as (_app, page):
        page.locator("#model-select input").click()
        page.get_by_role("option", name="Wan2.2 TI2V-5B (text and image to video, 720p 24 fps)").click()
        page.wait_for_function("() => document.querySelector('#model-state').innerText.includes('failed')")
        page.wait_for_timeout(2_000)
        shot(page, "24-picked-model-cannot-load")
        assert "not downloaded" in page.inner_text("#model-state")
        assert page.locator(".toast-body").count() == 0 and badges(page) == 0
        assert "not downloaded" not in page.inner_text("#t2v-status")
        assert page.locator("#t2v-generate").is_disabled()
