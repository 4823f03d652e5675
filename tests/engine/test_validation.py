"""Requests are validated against the model's spec before any work starts: one behaviour per test."""

from __future__ import annotations

import math

import pytest
from PIL import Image

from engine import GenerationRequest, RequestError, builtin_specs, validate

SPECS = builtin_specs()
TI2V = SPECS["ti2v-5b"]
T2V = SPECS["t2v-a14b"]
I2V = SPECS["i2v-a14b"]


def req(**kw) -> GenerationRequest:
    kw.setdefault("prompt", "a red fox runs through snow")
    return GenerationRequest(**kw)


def refused(spec, field: str, **kw) -> str:
    with pytest.raises(RequestError) as info:
        validate(req(**kw), spec)
    assert info.value.field == field
    return str(info.value)


def test_defaults_come_from_the_model_spec():
    r = validate(req(), T2V).request
    assert (r.width, r.height, r.frames, r.fps, r.steps) == (1280, 720, 81, 16, 40)
    assert (r.guidance, r.guidance_2, r.shift) == (4.0, 3.0, 12.0)
    assert r.negative_prompt == T2V.negative_prompt


def test_frames_are_snapped_to_4k_plus_1_with_a_notice():
    v = validate(req(frames=80), TI2V)
    assert v.request.frames == 81
    assert any("80 frames became 81" in n for n in v.notices)


def test_frames_already_4k_plus_1_give_no_notice():
    assert validate(req(frames=121), TI2V).notices == ()


def test_size_is_snapped_to_32_for_ti2v_with_a_notice():
    v = validate(req(width=1000, height=700), TI2V)
    assert (v.request.width, v.request.height) == (992, 704)
    assert any("multiples of 32" in n and "1000x700 became 992x704" in n for n in v.notices)


def test_size_is_snapped_to_16_for_a14b():
    v = validate(req(width=840, height=484), T2V)
    assert (v.request.width, v.request.height) == (848, 480)
    assert any("multiples of 16" in n for n in v.notices)


@pytest.mark.parametrize("frames", [0, -1, 10_000])
def test_frames_out_of_range_are_refused_naming_bound_and_value(frames):
    message = refused(TI2V, "frames", frames=frames)
    assert "frames" in message and str(frames) in message
    assert ("at least 5" in message) or ("at most 964" in message)  # 4 windows of the longest pass, 241


@pytest.mark.parametrize("width", [0, 7, 100_000])
def test_width_out_of_range_is_refused(width):
    message = refused(TI2V, "width", width=width)
    assert str(width) in message and "px" in message


def test_area_above_the_limit_is_refused():
    message = refused(TI2V, "size", width=1920, height=1920)
    assert "1920x1920" in message


@pytest.mark.parametrize("steps", [0, 10_000])
def test_steps_out_of_range_are_refused(steps):
    message = refused(TI2V, "steps", steps=steps)
    assert str(steps) in message


@pytest.mark.parametrize("guidance", [math.nan, math.inf, -1.0, 21.0])
def test_guidance_that_is_not_a_finite_number_in_range_is_refused(guidance):
    refused(TI2V, "guidance", guidance=guidance)


def test_guidance_2_is_checked_for_moe_models():
    refused(T2V, "guidance_2", guidance_2=-0.5)


def test_guidance_2_on_a_single_expert_model_is_ignored_with_a_notice():
    v = validate(req(guidance_2=3.0), TI2V)
    assert v.request.guidance_2 is None
    assert any("guidance_2 is not used" in n for n in v.notices)


@pytest.mark.parametrize("seed", [-2, 2**32])
def test_seed_out_of_range_is_refused(seed):
    message = refused(TI2V, "seed", seed=seed)
    assert str(seed) in message


def test_seed_minus_one_becomes_a_concrete_random_seed():
    seeds = {validate(req(seed=-1), TI2V).request.seed for _ in range(5)}
    assert all(0 <= s <= 2**32 - 1 for s in seeds)
    assert len(seeds) > 1


def test_a_given_seed_is_kept():
    assert validate(req(seed=1234), TI2V).request.seed == 1234


def test_strings_where_numbers_belong_are_read_or_refused():
    assert validate(req(steps="30"), TI2V).request.steps == 30
    refused(TI2V, "steps", steps="many")


@pytest.mark.parametrize("prompt", ["", "   \n\t"])
def test_empty_prompt_is_refused_for_text_to_video(prompt):
    message = refused(T2V, "prompt", prompt=prompt)
    assert "prompt" in message.lower()


def test_image_is_required_for_i2v_a14b():
    message = refused(I2V, "image")
    assert "image" in message


def test_image_is_refused_by_a_text_only_model():
    refused(T2V, "image", image=Image.new("RGB", (64, 64)))


def test_image_is_optional_for_ti2v():
    assert validate(req(), TI2V).image is None
    assert validate(req(image=Image.new("RGB", (640, 352))), TI2V).image is not None


def test_image_to_video_size_keeps_the_image_aspect_at_the_requested_area():
    portrait = Image.new("RGB", (720, 1280))
    v = validate(req(image=portrait), I2V)
    w, h = v.request.width, v.request.height
    assert w < h and w % 16 == 0 and h % 16 == 0
    assert abs(w / h - 720 / 1280) < 0.03
    assert abs(w * h - 1280 * 720) / (1280 * 720) < 0.05
    assert any("aspect ratio" in n for n in v.notices)


@pytest.mark.parametrize(
    "image",
    [
        Image.new("RGBA", (64, 48), (255, 0, 0, 0)),
        Image.new("LA", (64, 48)),
        Image.new("L", (64, 48), 128),
        Image.new("P", (64, 48)),
        Image.new("I;16", (64, 48)),
        Image.new("CMYK", (64, 48)),
    ],
    ids=["rgba", "la", "grey", "palette", "16bit", "cmyk"],
)
def test_images_of_any_mode_become_rgb(image):
    v = validate(req(image=image), TI2V)
    assert v.image.mode == "RGB" and v.image.size == (64, 48)


def test_transparent_pixels_become_white():
    v = validate(req(image=Image.new("RGBA", (64, 48), (255, 0, 0, 0))), TI2V)
    assert v.image.getpixel((0, 0)) == (255, 255, 255)


def test_sixteen_bit_greyscale_keeps_its_brightness():
    v = validate(req(image=Image.new("I;16", (64, 48), 32768)), TI2V)
    assert abs(v.image.getpixel((0, 0))[0] - 128) <= 1


def test_exif_rotated_photo_is_made_upright(tmp_path):
    stored = Image.new("RGB", (80, 40), (0, 0, 255))
    exif = stored.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "photo.jpg"
    stored.save(path, exif=exif)
    v = validate(req(image=str(path)), TI2V)
    assert v.image.size == (40, 80)


def test_unreadable_image_file_is_refused(tmp_path):
    path = tmp_path / "not-an-image.png"
    path.write_text("hello")
    message = refused(TI2V, "image", image=str(path))
    assert "not a picture" in message
