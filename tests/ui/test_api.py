"""The stable API, as a script sees it: gradio_client against the running studio."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from gradio_client import handle_file
from PIL import Image

GENERATION_PARAMETERS = [
    "prompt", "negative_prompt", "width", "height", "num_frames", "fps", "steps", "guidance_scale",
    "guidance_scale_2", "shift", "seed", "loras",
]  # fmt: skip


def endpoint(app, name: str) -> dict:
    return app.client().view_api(print_info=False, return_format="dict")["named_endpoints"][name]


def test_the_api_lists_only_the_public_endpoints(app):
    names = set(app.client().view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/text_to_video", "/image_to_video", "/stop", "/list_loras"} <= names
    assert not [n for n in names if n.startswith(("/on_", "/switch", "/reuse", "/page_state", "/lambda"))]


def test_text_to_video_takes_the_documented_parameter_names_and_only_prompt_is_required(app):
    params = endpoint(app, "/text_to_video")["parameters"]
    assert [p["parameter_name"] for p in params] == GENERATION_PARAMETERS
    assert [p["parameter_name"] for p in params if not p["parameter_has_default"]] == ["prompt"]


def test_image_to_video_takes_an_image_and_the_same_parameters(app):
    params = endpoint(app, "/image_to_video")["parameters"]
    assert [p["parameter_name"] for p in params] == ["image", *GENERATION_PARAMETERS, "last_image"]
    assert [p["parameter_name"] for p in params if not p["parameter_has_default"]] == ["image", "prompt"]


def test_a_generation_streams_previews_before_its_final_video(app):
    job = app.client().submit(prompt="a paper lantern over a lake", seed=21, api_name="/text_to_video")
    updates = list(job)
    previews = [u for u in updates if u[0] and not u[1]]
    preview, video, seed, status, settings = job.outputs()[-1]
    assert previews, "no preview arrived before the video"
    assert Path(video["video"] if isinstance(video, dict) else video).suffix == ".mp4"
    assert seed == 21 and "seed 21" in status
    assert settings["request"]["prompt"] == "a paper lantern over a lake"
    saved = list(app.outputs.glob("*_21_a-paper-lantern-over-a-lake.mp4"))
    assert len(saved) == 1 and saved[0].with_suffix(".json").is_file()


def test_image_to_video_follows_the_image_shape(app, tmp_path):
    picture = tmp_path / "wide.png"
    Image.new("RGB", (300, 200), (200, 120, 40)).save(picture)
    *_, seed, status, settings = app.client().predict(
        image=handle_file(str(picture)), prompt="the sun sets", width=96, height=96, seed=5, api_name="/image_to_video"
    )
    assert seed == 5
    assert settings["request"]["width"] > settings["request"]["height"]
    assert settings["image"] == {"width": 300, "height": 200}


def test_bad_input_gets_a_clear_message_and_the_next_call_succeeds(app):
    client = app.client()
    with pytest.raises(Exception, match="steps must be at least 1"):
        client.predict(prompt="a boat", steps=0, api_name="/text_to_video")
    with pytest.raises(Exception, match="Write a prompt"):
        client.predict(prompt="   ", api_name="/text_to_video")
    *_, seed, status, _settings = client.predict(prompt="a boat", seed=3, api_name="/text_to_video")
    assert seed == 3 and "Done" in status


def test_two_clients_at_once_are_served_one_after_the_other(app):
    results: dict[str, tuple] = {}

    def run(name: str) -> None:
        results[name] = app.client().predict(prompt=f"client {name}", steps=6, api_name="/text_to_video")

    threads = [threading.Thread(target=run, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    windows = []
    for name in ("a", "b"):
        (video,) = app.outputs.glob(f"*_client-{name}.mp4")
        settings = results[name][4]
        assert settings["request"]["prompt"] == f"client {name}"
        finished = video.stat().st_mtime
        windows.append((finished - settings["timings"]["total"], finished))  # when each job ran, server side
    (a_start, a_end), (b_start, b_end) = windows
    assert a_end <= b_start or b_end <= a_start, f"the two jobs ran at the same time: {windows}"


def test_stop_ends_the_running_job_and_nothing_is_saved(app):
    client = app.client()
    job = client.submit(prompt="a very long take", steps=60, num_frames=33, seed=77, api_name="/text_to_video")
    for update in job:
        if update[0]:  # the first preview: the job is running
            break
    assert "Stopping" in client.predict(api_name="/stop")
    final_status = None
    deadline = time.monotonic() + 60
    while not job.done() and time.monotonic() < deadline:
        time.sleep(0.2)
    final_status = job.outputs()[-1][3]
    assert "Stopped during denoising" in final_status
    assert not list(app.outputs.glob("*_77_a-very-long-take*"))
