"""Hostile input through the running studio's API: a clear message in the user's words, and the next call works.

The page's Generate buttons go through the same handler (wan_ui.runs.follow) and the same image input
(wan_ui.picture.PictureInput), so what holds here holds there; test_browser.py shows one refusal on the page.
"""

from __future__ import annotations

import httpx
import pytest
from gradio_client import handle_file
from PIL import Image

from tests.pictures import bomb_png


def refusal(app, **kwargs) -> str:
    kwargs.setdefault("api_name", "/text_to_video")
    with pytest.raises(Exception) as info:  # gradio_client raises AppError with the server's message
        app.client().predict(**kwargs)
    message = str(info.value)
    assert "/tmp/" not in message and "Traceback" not in message
    return message


def runs(app, **kwargs) -> dict:
    kwargs.setdefault("api_name", "/text_to_video")
    kwargs.setdefault("steps", 1)
    *_, status, settings = app.client().predict(**kwargs)
    assert "Done" in status
    return settings


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("num_frames", 0, "num_frames must be at least"),
        ("num_frames", 10_000, "num_frames must be at most"),
        ("width", 7, "width must be at least"),
        ("height", 100_000, "height must be at most"),
        ("steps", 10_000, "steps must be at most"),
        ("guidance_scale", -1, "guidance_scale must be at least"),
        ("seed", 2**40, "seed must be at most 4294967295"),
        ("seed", -2, "seed must be at least -1"),
        ("width", "wide", "width must be a number, got 'wide'"),
    ],
)
def test_a_bad_number_is_refused_by_name_and_the_next_call_runs(app, field, value, says):
    assert says in refusal(app, prompt="a kite", **{field: value})
    runs(app, prompt="a kite", seed=1)


def test_a_number_written_as_text_is_read(app):
    assert runs(app, prompt="a kite", steps="1", seed="12")["request"]["seed"] == 12


def test_a_twenty_thousand_character_prompt_runs_with_a_notice_where_reading_stops(app):
    prompt = " ".join(f"petal{i}" for i in range(3000))[:20_000]
    settings = runs(app, prompt=prompt, seed=4)
    assert settings["request"]["prompt"] == prompt
    assert any("reads the first 512" in n for n in settings["notices"])


def test_emoji_right_to_left_and_chinese_prompts_run_as_written(app):
    prompt = "🐱 قطة 一只猫"
    assert runs(app, prompt=prompt, seed=5)["request"]["prompt"] == prompt


def test_control_characters_in_a_prompt_are_dropped(app):
    assert runs(app, prompt="a\x00 kite\x1b in\x07 wind", seed=6)["request"]["prompt"] == "a kite in wind"


def test_an_overlong_prompt_is_refused_with_the_limit(app):
    assert "takes up to 50,000" in refusal(app, prompt="a" * 60_000)


@pytest.mark.parametrize(
    ("content", "says"),
    [(b"", "empty"), (b"these are my notes, not a picture", "not a picture")],
    ids=["zero-bytes", "text-named-png"],
)
def test_a_file_that_is_not_a_picture_is_refused_in_the_users_words(app, tmp_path, content, says):
    path = tmp_path / "upload.png"
    path.write_bytes(content)
    assert says in refusal(app, image=handle_file(str(path)), prompt="a kite", api_name="/image_to_video")
    runs(app, prompt="a kite", seed=1)


def test_a_truncated_jpeg_is_refused_as_cut_short(app, tmp_path):
    whole = tmp_path / "whole.jpg"
    Image.effect_noise((256, 256), 60).convert("RGB").save(whole, quality=95)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    assert "cut short" in refusal(app, image=handle_file(str(cut)), prompt="a kite", api_name="/image_to_video")


def test_a_decompression_bomb_upload_is_refused_by_its_size(app, tmp_path):
    bomb = bomb_png(tmp_path / "bomb.png", 20_000, 20_000)  # under the upload limit, 400 MB decoded
    message = refusal(app, image=handle_file(str(bomb)), prompt="a kite", api_name="/image_to_video")
    assert "400 megapixels" in message and "Resize it" in message
    runs(app, prompt="a kite", seed=1)


def test_a_transparent_png_is_animated_on_white_at_its_own_shape(app, tmp_path):
    path = tmp_path / "sticker.png"
    Image.new("RGBA", (90, 60), (255, 0, 0, 0)).save(path)
    settings = runs(app, image=handle_file(str(path)), prompt="a sticker", seed=7, api_name="/image_to_video")
    assert settings["image"] == {"width": 90, "height": 60}


def test_an_exif_rotated_photo_is_made_upright_once(app, tmp_path):
    stored = Image.new("RGB", (120, 60), (0, 0, 255))
    exif = stored.getexif()
    exif[0x0112] = 6  # shown rotated by 90 degrees
    path = tmp_path / "photo.jpg"
    stored.save(path, exif=exif)
    settings = runs(app, image=handle_file(str(path)), prompt="a photo", seed=8, api_name="/image_to_video")
    assert settings["image"] == {"width": 60, "height": 120}


def test_an_animated_gif_starts_from_its_first_frame(app, tmp_path):
    path = tmp_path / "blink.gif"
    frames = [Image.new("RGB", (64, 48), c) for c in ((250, 0, 0), (0, 250, 0))]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    settings = runs(app, image=handle_file(str(path)), prompt="a light", seed=9, api_name="/image_to_video")
    assert settings["image"] == {"width": 64, "height": 48}


@pytest.mark.parametrize("path", ["/etc/passwd", "{outputs}/../secret.png"])
def test_a_server_path_passed_as_the_image_is_refused(app, path):
    """A raw call that names a file on the server instead of uploading one reads nothing."""
    path = path.format(outputs=app.outputs)
    api = f"{app.url}gradio_api/call/image_to_video"
    payload = {"data": [{"path": path, "meta": {"_type": "gradio.FileData"}}, "a kite", *[None] * 9, -1, "", None]}
    event = httpx.post(api, json=payload).json()["event_id"]
    reply = httpx.get(f"{api}/{event}", timeout=60).text
    assert "event: error" in reply and "not uploaded by a user" in reply
    assert "root:" not in reply
    said = [line for line in app.log.read_text().splitlines() if "Cannot move" in line and path[-10:] in line]
    assert len(said) == (1 if path == "/etc/passwd" else 0)  # Gradio says the missing file nothing at all
    assert all("a request ended with an error" in line for line in said)  # one line, not a traceback
    assert "Traceback" not in app.log.read_text()


@pytest.mark.parametrize(
    ("backend", "language", "says"),
    [
        ("../../etc/passwd", "en", "backend must be one of rules, local, openai"),
        ("rules", "/etc/passwd", "language must be one of en, zh"),
        ("rules", "en\x00", "language must be one of en, zh"),
    ],
)
def test_a_refiner_or_language_name_that_is_a_path_is_refused(app, backend, language, says):
    assert says in refusal(app, prompt="a cat", backend=backend, language=language, api_name="/refine_prompt")
