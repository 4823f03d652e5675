"""Long videos through the running studio: /extend_video, long /text_to_video, last_image, and the Gallery's
Extend panel in a real browser."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from gradio_client import handle_file
from PIL import Image

from tests.frames import read_video, write_video

from .conftest import needs_chromium, open_page, own_studio_page, shot

EXTEND_PARAMETERS = [
    "video", "prompt", "negative_prompt", "num_frames", "overlap", "color_match", "seed", "steps", "guidance_scale",
    "guidance_scale_2", "shift", "loras",
]  # fmt: skip


def clip(tmp_path: Path, name: str = "shot.mp4", count: int = 12) -> str:
    y, x = np.mgrid[0:64, 0:64] / 63.0
    frames = [
        (np.stack([x, y, (1 - x) * y], axis=-1) * 200 + i * 3).clip(0, 255).astype(np.uint8) for i in range(count)
    ]
    return write_video(tmp_path / name, np.stack(frames))


def video_path(video) -> str:
    return video["video"] if isinstance(video, dict) else video


def test_extend_video_takes_a_video_and_a_prompt_and_the_rest_is_optional(app):
    info = app.client().view_api(print_info=False, return_format="dict")["named_endpoints"]["/extend_video"]
    assert [p["parameter_name"] for p in info["parameters"]] == EXTEND_PARAMETERS
    assert [p["parameter_name"] for p in info["parameters"] if not p["parameter_has_default"]] == ["video", "prompt"]


def test_extend_video_streams_its_windows_and_returns_the_source_then_the_new_frames(app, tmp_path):
    job = app.client().submit(
        video=handle_file(clip(tmp_path)), prompt="the light turns\nnight comes", num_frames=24, seed=6, steps=2,
        api_name="/extend_video",
    )  # fmt: skip
    statuses = [update[3] for update in job]
    _preview, video, seed, status, settings = job.outputs()[-1]
    assert any(s.startswith("Window 1 of 2 · ") for s in statuses) and any("Window 2 of 2" in s for s in statuses)
    assert seed == 6 and "Done" in status
    assert len(read_video(video_path(video))) == 12 + 24
    assert [w["prompt"] for w in settings["windows"]] == ["the light turns", "night comes"]
    assert settings["source"]["name"] == "shot.mp4"


def test_a_long_text_to_video_is_made_in_windows_to_the_frames_asked_for(app):
    _preview, video, _seed, _status, settings = app.client().predict(
        prompt="a train crosses a bridge", num_frames=41, steps=1, seed=12, api_name="/text_to_video"
    )
    assert len(read_video(video_path(video))) == 41 and len(settings["windows"]) == 3


@pytest.mark.parametrize(
    ("arguments", "says"),
    [
        ({"num_frames": 2}, "num_frames must be at least 4"),
        ({"overlap": 3}, "overlap must be one of 1, 5"),
        ({"bad_file": True}, "not a video the studio can read"),
    ],
)
def test_a_refused_extension_says_why_and_the_next_one_runs(app, tmp_path, arguments, says):
    source = clip(tmp_path)
    if arguments.pop("bad_file", False):
        source = str(tmp_path / "notes.mp4")
        Path(source).write_text("these are notes, not frames " * 40)
    with pytest.raises(Exception, match=says):
        app.client().predict(video=handle_file(source), prompt="on", api_name="/extend_video", **arguments)
    *_, status, _settings = app.client().predict(
        video=handle_file(clip(tmp_path, "fine.mp4")), prompt="on", num_frames=4, steps=1, api_name="/extend_video"
    )
    assert "Done" in status


def test_a_last_image_is_refused_on_the_5b_with_a_sentence(app, tmp_path):
    picture = tmp_path / "end.png"
    Image.new("RGB", (64, 64), (10, 80, 200)).save(picture)
    with pytest.raises(Exception, match="ignores a last image"):
        app.client().predict(
            image=handle_file(str(picture)), prompt="a turn", last_image=handle_file(str(picture)),
            api_name="/image_to_video",
        )  # fmt: skip


@needs_chromium
def test_extend_from_the_gallery_shows_the_windows_and_plays_the_result(app, browser):
    app.client().predict(prompt="a red kite climbs", seed=5151, steps=1, num_frames=9, api_name="/text_to_video")
    context, page = open_page(browser, app.url)
    try:
        page.get_by_role("tab", name="Gallery").click()
        page.locator("#gallery").get_by_text("a red kite climbs · seed 5151").first.click()
        page.wait_for_function("() => document.querySelector('#gallery-about').innerText.includes('5151')")
        page.click("#gallery-extend")
        page.wait_for_function("() => document.querySelector('#extend-about')?.innerText.includes('Continues')")
        page.fill("#extend-prompt textarea", "it climbs higher\nclouds part")
        page.click("#extend-frames input")
        page.get_by_role("option", name="+3.0 s · 24 frames").click()
        shot(page, "16-extend-panel")
        page.click("#extend-run")
        page.wait_for_function("() => document.querySelector('#extend-status')?.innerText.includes('Window 2 of 2')")
        shot(page, "17-extend-running")
        page.wait_for_selector("#extend-video video")
        duration = page.wait_for_function(
            "() => { const v = document.querySelector('#extend-video video'); return v && v.duration > 0 && "
            "v.duration; }"
        ).json_value()
        assert duration > 3.5  # 9 + 24 frames at 8 fps
        assert "Done" in page.inner_text("#extend-status")
        page.locator("#gallery").get_by_text("it climbs higher").first.wait_for()  # listed in the Gallery
        shot(page, "18-extend-done")
    finally:
        context.close()


@needs_chromium
def test_the_image_to_video_tab_takes_a_last_frame_on_the_i2v_moe_and_shows_none_on_the_5b(app, browser, tmp_path):
    first, last = tmp_path / "first.png", tmp_path / "last.png"
    Image.new("RGB", (64, 64), (230, 120, 30)).save(first)
    Image.new("RGB", (64, 64), (20, 60, 220)).save(last)
    context, page = open_page(browser, app.url)  # the launch model, the 5B: no last frame to give
    try:
        page.get_by_role("tab", name="Image to Video").click()
        page.wait_for_selector("#i2v-image")
        assert not page.locator("#i2v-last-image").is_visible()
    finally:
        context.close()
    with own_studio_page(browser, tmp_path / "outputs", "--model", "tiny-i2v-moe") as (studio, page):
        page.get_by_role("tab", name="Image to Video").click()
        page.set_input_files("#i2v-image input[type=file]", str(first))
        page.set_input_files("#i2v-last-image input[type=file]", str(last))
        page.wait_for_selector("#i2v-last-image img")
        page.fill("#i2v-prompt textarea", "the sky turns blue")
        shot(page, "19-first-and-last-frame")
        page.click("#i2v-generate")
        page.wait_for_selector("#i2v-video video")
        assert "seed" in page.inner_text("#i2v-status")
        (video,) = list(studio.outputs.glob("*.mp4"))
        assert json.loads(video.with_suffix(".json").read_text())["last_image"] == {"width": 64, "height": 64}
