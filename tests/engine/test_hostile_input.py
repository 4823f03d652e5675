"""Hostile and odd input to the engine: refused in the user's words before any work, or accepted and handled.

Numbers are also checked with generated inputs (hypothesis): whatever arrives, validation either names the field
it refuses or returns values inside the model's bounds; it never fails any other way.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from engine import Done, Failed, GenerationRequest, Notice, RequestError, builtin_specs, read_settings, validate
from engine.admission.request import MAX_IMAGE_PIXELS, MAX_PROMPT_CHARS, load_image
from engine.library.output import read_embedded_settings
from tests.pictures import bomb_png

ROOT = Path(__file__).resolve().parents[2]
TI2V = builtin_specs()["ti2v-5b"]
I2V = builtin_specs()["i2v-a14b"]
NUMBER_FIELDS = ("frames", "width", "height", "fps", "steps", "guidance", "shift", "seed", "size")


def refused_image(path: Path) -> str:
    with pytest.raises(RequestError) as info:
        load_image(str(path))
    assert info.value.field == "image"
    message = str(info.value)
    assert str(path.parent) not in message  # the server's paths are not the user's business
    return message


def photo(size: tuple[int, int] = (96, 64)) -> Image.Image:
    return Image.fromarray(np.random.default_rng(1).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


# ----- prompts ---------------------------------------------------------------------------------------------------


def test_control_characters_are_removed_and_line_breaks_kept():
    v = validate(GenerationRequest(prompt="a cat\x00 sleeps\x07\x1b[31m\non a mat\t\x7f"), TI2V)
    assert v.request.prompt == "a cat sleeps[31m\non a mat\t"


@pytest.mark.parametrize(
    "prompt",
    ["🐱🌧️☂️ a cat under an umbrella 🎬", "قطة تنام على السجادة", "一只猫在雨中撑伞", "a cat \u202eella rbmu\u202c"],
    ids=["emoji", "arabic-rtl", "chinese", "bidi-override"],
)
def test_any_script_is_kept_as_written(prompt):
    assert validate(GenerationRequest(prompt=prompt), TI2V).request.prompt == prompt


def test_a_prompt_beyond_the_cap_is_refused_with_its_length_and_the_cap():
    with pytest.raises(RequestError) as info:
        validate(GenerationRequest(prompt="a" * (MAX_PROMPT_CHARS + 1)), TI2V)
    assert info.value.field == "prompt"
    assert f"{MAX_PROMPT_CHARS + 1:,}" in str(info.value) and f"{MAX_PROMPT_CHARS:,}" in str(info.value)


def test_a_negative_prompt_of_only_control_characters_becomes_empty():
    v = validate(GenerationRequest(prompt="a cat", negative_prompt="\x01\x02"), TI2V)
    assert v.request.negative_prompt == ""


def test_a_twenty_thousand_character_prompt_runs_and_says_where_the_encoder_stops(make_engine):
    words = [f"detail{i}" for i in range(4000)]
    prompt = " ".join(words)[:20_000]
    job = make_engine().submit(GenerationRequest(prompt=prompt, steps=2, seed=3))
    events = list(job.events(timeout=120))
    assert isinstance(events[-1], Done)
    notices = [e.message for e in events if isinstance(e, Notice) and "tokens long" in e.message]
    assert len(notices) == 1 and "reads the first 512" in notices[0]
    saved = read_settings(events[-1].path)
    assert saved["request"]["prompt"] == prompt  # the whole prompt is kept with the video
    assert notices[0] in saved["notices"]


def test_a_short_prompt_gets_no_truncation_notice(make_engine):
    job = make_engine().submit(GenerationRequest(prompt="a cat", steps=1, seed=3))
    events = list(job.events(timeout=120))
    assert isinstance(events[-1], Done)
    assert not [e for e in events if isinstance(e, Notice) and "tokens long" in e.message]


def test_emoji_right_to_left_and_chinese_prompts_make_a_video_with_the_prompt_saved(make_engine):
    prompt = "🐱 قطة 一只猫 \u202eabc\u202c"
    job = make_engine().submit(GenerationRequest(prompt=prompt, steps=1, seed=3))
    done = list(job.events(timeout=120))[-1]
    assert isinstance(done, Done)
    assert Path(done.path).name.endswith("_3_abc.mp4")  # file names keep to ASCII
    assert read_settings(done.path)["request"]["prompt"] == prompt


def test_the_longest_chinese_prompt_makes_a_video_with_the_whole_prompt_kept_beside_it(make_engine):
    prompt = "一只猫在雨中撑伞，" * (MAX_PROMPT_CHARS // 9)
    done = make_engine().submit(GenerationRequest(prompt=prompt, steps=1, seed=3)).wait(180)
    assert isinstance(done, Done), getattr(done, "message", done)
    assert read_settings(done.path)["request"]["prompt"] == prompt
    embedded = read_embedded_settings(done.path)  # the MP4's own copy is shortened, not lost
    assert embedded["embedded"] == "shortened" and embedded["request"]["prompt"].startswith(prompt[:900])


# ----- numbers ---------------------------------------------------------------------------------------------------

anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", " ", "12", "1e9", "nan", "-inf", "0x10", "½", "81\x00", "DROP TABLE"]),
    st.text(max_size=6),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    frames=anything,
    width=anything,
    height=anything,
    fps=anything,
    steps=anything,
    guidance=anything,
    shift=anything,
    seed=anything,
)
def test_any_numbers_are_refused_by_name_or_resolved_inside_the_bounds(
    frames, width, height, fps, steps, guidance, shift, seed
):
    request = GenerationRequest(
        prompt="a cat",
        frames=frames,
        width=width,
        height=height,
        fps=fps,
        steps=steps,
        guidance=guidance,
        shift=shift,
        seed=-1 if seed is None else seed,
    )
    try:
        valid = validate(request, TI2V)
    except RequestError as exc:
        assert exc.field in NUMBER_FIELDS and exc.field in str(exc)
        return
    v = valid.request
    lim = TI2V.limits
    # beyond one pass a video is made in windows (up to 4 passes), none longer than the model's longest pass
    assert lim.frames[0] <= v.frames <= 4 * lim.frames[1] and v.frames % 4 == 1
    assert lim.frames[0] <= valid.pass_frames <= lim.frames[1] and valid.total_frames == v.frames
    assert v.width % TI2V.multiple == 0 and v.height % TI2V.multiple == 0
    assert v.width * v.height <= lim.max_area
    assert lim.steps[0] <= v.steps <= lim.steps[1] and lim.fps[0] <= v.fps <= lim.fps[1]
    assert math.isfinite(v.guidance) and lim.guidance[0] <= v.guidance <= lim.guidance[1]
    assert math.isfinite(v.shift) and 0 <= v.seed <= 2**32 - 1


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("frames", 0),
        ("frames", -1),
        ("frames", 10_000),
        ("width", 0),
        ("width", 7),
        ("height", 100_000),
        ("steps", 0),
        ("steps", 10_000),
        ("guidance", float("nan")),
        ("guidance", float("inf")),
        ("guidance", -1.0),
        ("seed", -2),
        ("seed", 2**32),
        ("width", "wide"),
    ],
)
def test_each_listed_bad_number_is_refused_naming_the_field_and_the_value(field, value):
    with pytest.raises(RequestError) as info:
        validate(GenerationRequest(prompt="a cat", **{field: value}), TI2V)
    assert info.value.field == field
    shown = "nan" if isinstance(value, float) and math.isnan(value) else str(value)
    assert shown in str(info.value).replace(",", "")


# ----- images ----------------------------------------------------------------------------------------------------


def test_a_zero_byte_image_is_refused_as_empty(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    assert "empty" in refused_image(path)


def test_a_text_file_named_png_is_refused_as_not_a_picture(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("these are my notes, not a picture")
    assert "not a picture" in refused_image(path)


def test_a_truncated_jpeg_is_refused_as_cut_short(tmp_path):
    whole = tmp_path / "whole.jpg"
    photo((256, 256)).save(whole, quality=95)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    assert "cut short" in refused_image(cut)


@pytest.mark.parametrize(
    ("width", "height", "shown"),
    [(12_000, 10_000, "12000x10000, 120 megapixels"), (20_000, 20_000, "400 megapixels")],
    ids=["above-our-limit", "above-pillows-limit"],
)
def test_a_huge_image_is_refused_by_its_size_in_megapixels(tmp_path, width, height, shown):
    message = refused_image(bomb_png(tmp_path / "huge.png", width, height))
    assert shown in message and f"up to {MAX_IMAGE_PIXELS // 1_000_000} megapixels" in message


@pytest.mark.parametrize(("width", "height"), [(12_000, 10_000), (20_000, 20_000)])
def test_a_decompression_bomb_is_refused_before_its_pixels_are_decoded(tmp_path, width, height):
    bomb = bomb_png(tmp_path / "bomb.png", width, height)  # 120-400 MB of pixels in a file of under 1 MB
    assert bomb.stat().st_size < 1_000_000
    script = (
        "import resource\n"
        "from engine.admission.request import load_image\n"
        "from engine.errors import RequestError\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        f"try:\n    load_image({str(bomb)!r})\nexcept RequestError:\n    print('refused')\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    verdict, grown_mib = out.stdout.split()
    assert verdict == "refused"
    assert int(grown_mib) < 40  # the peak memory did not move: nothing near the decoded size was allocated


def test_an_animated_gif_gives_its_first_frame(tmp_path):
    path = tmp_path / "blink.gif"
    frames = [Image.new("RGB", (64, 48), c) for c in ((250, 0, 0), (0, 250, 0), (0, 0, 250))]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    r, g, b = load_image(str(path)).getpixel((10, 10))
    assert r > 200 and g < 50 and b < 50


@pytest.mark.parametrize(
    ("mode", "suffix"),
    [("CMYK", ".jpg"), ("I;16", ".png"), ("L", ".png"), ("P", ".png"), ("RGBA", ".webp"), ("LA", ".png")],
)
def test_image_files_of_any_mode_load_as_rgb(tmp_path, mode, suffix):
    path = tmp_path / f"picture{suffix}"
    photo().convert(mode if mode != "I;16" else "L").convert(mode).save(path)
    image = load_image(str(path))
    assert image.mode == "RGB" and image.size == (96, 64)


def test_a_palette_png_with_a_transparent_colour_gets_a_white_background(tmp_path):
    path = tmp_path / "sticker.png"
    picture = Image.new("P", (32, 32), 0)
    picture.putpalette([255, 0, 0] * 256)
    picture.save(path, transparency=0)
    assert load_image(str(path)).getpixel((5, 5)) == (255, 255, 255)


def test_a_bad_image_fails_the_request_and_the_next_one_runs(make_engine, tmp_path):
    engine = make_engine("tiny-ti2v")
    path = tmp_path / "fake.png"
    path.write_text("no")
    with pytest.raises(RequestError):
        engine.submit(GenerationRequest(prompt="a cat", image=str(path)))
    done = list(engine.submit(GenerationRequest(prompt="a cat", steps=1, image=photo())).events(timeout=120))[-1]
    assert isinstance(done, Done)
    assert not [p for p in (tmp_path / "outputs").iterdir() if "fake" in p.name]


# ----- names -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../../etc", "/etc/passwd", "tiny-ti2v\x00", "..", "a/../../b", ""])
def test_a_model_name_that_is_a_path_escape_or_holds_nul_is_refused(make_engine, name):
    engine = make_engine(name)
    assert engine.state().state == "failed"
    job = engine.load_model()
    assert isinstance(list(job.events(timeout=60))[-1], Failed)


def test_after_a_refused_model_name_a_catalog_model_still_loads(make_engine):
    engine = make_engine("../../etc")
    list(engine.load_model().events(timeout=60))
    last = list(engine.load_model("tiny-ti2v").events(timeout=120))[-1]
    assert type(last).__name__ == "Ready"
