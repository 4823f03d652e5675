"""Long videos and extensions: windows that continue from the last frames, colour matching, first and last frame."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine import Cancelled, Done, Frames, GenerationRequest, RequestError, Window, request_from_settings
from engine.admission.windows import plan
from engine.run.color import lab_stats, match_colors
from tests.frames import read_video, write_video

QUICK = dict(steps=2, width=64, height=64)


def source_frames(seed: int = 0, count: int = 12) -> np.ndarray:
    """A source clip: smooth colour fields that differ frame by frame (noise would make every test trivial)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:64, 0:64] / 63.0
    frames = []
    for i in range(count):
        base = rng.uniform(0.2, 0.8, size=3)
        frame = np.stack([base[0] * x + 0.2, base[1] * y + 0.1, base[2] * (1 - x) * (1 - y) + 0.1], axis=-1)
        frames.append((np.clip(frame, 0, 1) * 255).astype(np.uint8) + np.uint8(i))
    return np.stack(frames)


def run(engine, **kwargs) -> tuple[Done, np.ndarray, list[Window]]:
    """Submit, wait, and return the Done event, every frame the job made (before encoding) and its windows."""
    job = engine.submit(GenerationRequest(**{**QUICK, **kwargs}))
    frames: dict[int, np.ndarray] = {}
    windows = []
    for event in job.events():
        if isinstance(event, Frames):
            for offset, frame in enumerate(event.frames):
                frames[event.start + offset] = frame
        elif isinstance(event, Window):
            windows.append(event)
    done = job.wait()
    assert isinstance(done, Done), done
    return done, np.stack([frames[i] for i in sorted(frames)]), windows


def new_frames(engine, video: str, **kwargs) -> np.ndarray:
    """An extension's new frames: its events carry only those (the source's own frames are the user's)."""
    _, frames, _ = run(engine, prompt="it goes on", video=video, seed=3, color_match=False, **kwargs)
    return frames


# ----- the window plan ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("added", "window", "overlap", "first"),
    [(41, 17, 1, True), (481, 121, 1, True), (964 - 3, 121, 9, True), (480, 121, 5, False), (16, 17, 5, False)],
)
def test_windows_add_exactly_the_frames_asked_for_and_none_is_longer_than_a_window(added, window, overlap, first):
    windows, _ = plan(added, window, overlap, first, "a", 0)
    assert sum(w.new for w in windows) == added
    assert all(w.frames <= window and w.frames % 4 == 1 for w in windows)
    assert max(w.frames for w in windows) - min(w.frames for w in windows) <= 4  # spread evenly


def test_each_line_of_the_prompt_is_a_window_and_the_last_line_goes_on():
    windows, notices = plan(57, 17, 1, True, "a fox wakes\nit runs\n", 7)
    assert [w.prompt for w in windows] == ["a fox wakes", "it runs", "it runs", "it runs"]
    assert [w.seed for w in windows] == [7, 8, 9, 10] and notices == []


def test_more_prompt_lines_than_windows_are_said():
    _, notices = plan(17, 17, 1, True, "one\ntwo\nthree", 0)
    assert notices == ["The prompt has 3 lines for 1 window: lines 2-3 are not used."]


# ----- long videos in one request ---------------------------------------------------------------------------------


def test_a_long_text_to_video_has_the_frames_asked_for_in_windows_with_a_prompt_each(make_engine):
    engine = make_engine()
    done, frames, windows = run(engine, prompt="a boat leaves\nthe sea opens\nnight falls", frames=41, seed=4)
    assert len(read_video(done.path)) == 41 and len(frames) == 41
    assert [(w.index, w.count) for w in windows] == [(1, 3), (2, 3), (3, 3)]
    recorded = done.settings["windows"]
    assert [w["prompt"] for w in recorded] == ["a boat leaves", "the sea opens", "night falls"]
    assert [w["seed"] for w in recorded] == [4, 5, 6] and sum(w["new_frames"] for w in recorded) == 41
    assert done.settings["total_frames"] == 41


def test_one_pass_is_made_as_before_when_the_frames_fit_one(make_engine):
    done, _, windows = run(make_engine(), prompt="a boat", frames=33, seed=4)
    assert windows == [] and done.settings["windows"] == []


def test_reuse_settings_remakes_the_whole_long_video(make_engine):
    engine = make_engine()
    done, frames, _ = run(engine, prompt="a boat leaves\nthe sea opens", frames=37, seed=11)  # 13 + 12 + 12
    assert len(done.settings["windows"]) == 3
    again = request_from_settings(json.loads(json.dumps(done.settings))).settings()
    _, frames_again, _ = run(engine, **{**again, "extra": {}})
    assert np.array_equal(frames, frames_again)


def test_a_long_video_on_a_text_only_model_is_refused_naming_the_models_that_can(make_engine):
    engine = make_engine("tiny-t2v-moe")
    with pytest.raises(RequestError, match="TI2V-5B or I2V-A14B") as refused:
        engine.submit(GenerationRequest(prompt="a boat", frames=41, **QUICK))
    assert refused.value.field == "frames"
    run(engine, prompt="a boat", frames=9)  # the next job runs


def test_stop_in_a_later_window_saves_nothing(make_engine):
    engine = make_engine()
    job = engine.submit(GenerationRequest(prompt="a long road", frames=41, seed=1, **QUICK))
    for event in job.events():
        if isinstance(event, Window) and event.index == 2:
            job.cancel()
    assert isinstance(job.wait(), Cancelled)
    assert list(engine.outputs.iterdir()) == []


# ----- extending a video ------------------------------------------------------------------------------------------


def test_an_extension_starts_with_the_source_and_adds_the_frames_asked_for(make_engine, tmp_path):
    source = write_video(tmp_path / "shot.mp4", source_frames())
    done, _, _ = run(make_engine(), prompt="and then", video=source, frames=16, seed=2)
    made = read_video(done.path)
    original = read_video(source)
    assert len(made) == 12 + 16
    assert np.abs(made[:12].astype(int) - original).mean() < 2.0  # the source's frames, through H.264 once more
    assert done.settings["source"]["name"] == "shot.mp4" and done.settings["source"]["frames"] == 12
    assert done.settings["request"]["frames"] == 16 and done.settings["total_frames"] == 28


def test_the_continuation_follows_the_source_s_last_frame_not_its_first(make_engine, tmp_path):
    engine = make_engine()
    clip = source_frames()
    other_last, other_first = clip.copy(), clip.copy()
    other_last[-1] = 255 - other_last[-1]
    other_first[0] = 255 - other_first[0]
    base = new_frames(engine, write_video(tmp_path / "a.mp4", clip), frames=8)
    assert not np.array_equal(base, new_frames(engine, write_video(tmp_path / "b.mp4", other_last), frames=8))
    assert np.array_equal(base, new_frames(engine, write_video(tmp_path / "c.mp4", other_first), frames=8))


def test_an_overlap_of_five_frames_conditions_on_all_five_and_keeps_them_once(make_engine, tmp_path):
    engine = make_engine()
    clip = source_frames()
    changed = clip.copy()
    changed[-3] = 255 - changed[-3]  # inside the 5-frame overlap, not its first or last frame
    base = new_frames(engine, write_video(tmp_path / "a.mp4", clip), frames=16, overlap=5)
    assert len(base) == 16
    assert not np.array_equal(base, new_frames(engine, write_video(tmp_path / "b.mp4", changed), frames=16, overlap=5))
    single = new_frames(engine, write_video(tmp_path / "c.mp4", changed), frames=16, overlap=1)
    assert np.array_equal(single, new_frames(engine, write_video(tmp_path / "d.mp4", clip), frames=16, overlap=1))


def test_reuse_settings_with_the_source_remakes_the_extension(make_engine, tmp_path):
    engine = make_engine()
    source = write_video(tmp_path / "shot.mp4", source_frames())
    done, frames, _ = run(engine, prompt="and then", video=source, frames=8, seed=9)
    again = request_from_settings(done.settings).settings()
    _, frames_again, _ = run(engine, **{**again, "extra": {}, "video": source})
    assert np.array_equal(frames, frames_again)


def test_a_source_of_another_size_is_fitted_and_the_status_says_how(make_engine, tmp_path):
    wide = np.repeat(np.repeat(source_frames(count=8), 2, axis=2), 1, axis=1)[:, :, :100]  # 100x64
    source = write_video(tmp_path / "wide.mp4", wide)
    job = make_engine().submit(GenerationRequest(prompt="on", video=source, frames=8, steps=2))
    assert any("100×64" in n and "made at" in n for n in job.notices)
    done = job.wait()
    assert read_video(done.path).shape[1:3] == (job.valid.request.height, job.valid.request.width)


def test_the_result_plays_at_the_source_s_frame_rate(make_engine, tmp_path):
    source = write_video(tmp_path / "slow.mp4", source_frames(count=8), fps=12)
    done, _, _ = run(make_engine(), prompt="on", video=source, frames=8)
    assert done.settings["request"]["fps"] == 12


# ----- colour matching --------------------------------------------------------------------------------------------


def test_colour_matching_moves_a_window_s_colours_onto_the_reference():
    reference = source_frames(count=6)
    drifted = np.clip(reference.astype(int) + 40, 0, 255).astype(np.uint8)  # brighter, as drift makes it
    matched, before = match_colors(drifted, lab_stats(reference))
    want, got, was = lab_stats(reference), lab_stats(matched), lab_stats(drifted)
    assert abs(got.mean[0] - want.mean[0]) < 1.0 < abs(was.mean[0] - want.mean[0])
    assert np.allclose(got.std, want.std, atol=1.5) and before == was


def test_each_new_window_is_matched_to_the_source_and_the_settings_say_so(make_engine, tmp_path):
    source = write_video(tmp_path / "shot.mp4", source_frames())
    done, frames, _ = run(make_engine(), prompt="on", video=source, frames=24, seed=5)
    record = done.settings["color_match"]
    reference = record["reference"]["mean_lab"]
    assert [w["window"] for w in record["windows"]] == [1, 2]
    assert len(frames) == 24  # the new frames only
    for start in (0, 12):  # each window's 12 new frames, as written
        after = lab_stats(frames[start : start + 12]).mean
        assert abs(after[0] - reference[0]) < 1.0


# ----- first and last frame ---------------------------------------------------------------------------------------


def test_a_last_image_changes_the_video_on_the_i2v_moe(make_engine, tmp_path):
    from PIL import Image

    engine = make_engine("tiny-i2v-moe")
    first = Image.new("RGB", (64, 64), (200, 80, 30))
    last = Image.new("RGB", (64, 64), (20, 60, 220))
    plain, with_last = (
        run(engine, prompt="a turn", image=first, last_image=end, frames=9, seed=8)[1] for end in (None, last)
    )
    assert not np.array_equal(plain, with_last)
    done, _, _ = run(engine, prompt="a turn", image=first, last_image=last, frames=9, seed=8)
    assert done.settings["last_image"] == {"width": 64, "height": 64}


def test_a_last_image_is_refused_on_the_5b_rather_than_ignored(make_engine):
    from PIL import Image

    engine = make_engine()
    picture = Image.new("RGB", (64, 64), (20, 60, 220))
    with pytest.raises(RequestError, match="ignores a last image") as refused:
        engine.submit(GenerationRequest(prompt="a turn", image=picture, last_image=picture, **QUICK))
    assert refused.value.field == "last_image"
    run(engine, prompt="a turn", image=picture)  # the next job runs


# ----- refusals, each followed by a job that runs -----------------------------------------------------------------


def refusals(tmp_path) -> list[tuple[dict, str, str]]:
    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all " * 50)
    good = write_video(tmp_path / "good.mp4", source_frames(count=12), lossless=False)
    cut = tmp_path / "cut.mp4"
    data = open(good, "rb").read()
    cut.write_bytes(data[: len(data) * 2 // 3])
    short = write_video(tmp_path / "short.mp4", source_frames(count=3))
    long = write_video(tmp_path / "long.mp4", np.zeros((200, 16, 16, 3), np.uint8), fps=1)
    return [
        (dict(video=str(text)), "video", "not a video"),
        (dict(video=str(cut)), "video", "damaged or cut short"),
        (dict(video=short, overlap=5), "video", "needs at least 5"),
        (dict(video=long), "video", "up to 180 s"),
        (dict(video=good, overlap=3), "overlap", "one of 1, 5"),
        (dict(video=good, frames=2), "frames", "at least 4"),
        (dict(video=good, frames=100_000), "frames", "at most"),
    ]


def test_bad_sources_and_settings_are_refused_before_queueing_naming_the_field(make_engine, tmp_path):
    engine = make_engine()
    for arguments, field, words in refusals(tmp_path):
        with pytest.raises(RequestError, match=words) as refused:
            engine.submit(GenerationRequest(prompt="on", **QUICK, **arguments))
        assert refused.value.field == field, arguments
        assert engine.queue_length() == 0
    run(engine, prompt="on", video=write_video(tmp_path / "fine.mp4", source_frames()), frames=4)


def test_an_overlap_above_one_is_refused_on_the_i2v_moe(make_engine, tmp_path):
    engine = make_engine("tiny-i2v-moe")
    source = write_video(tmp_path / "shot.mp4", source_frames())
    with pytest.raises(RequestError, match="overlap must be 1") as refused:
        engine.submit(GenerationRequest(prompt="on", video=source, overlap=5, **QUICK))
    assert refused.value.field == "overlap"
    done, _, _ = run(engine, prompt="on", video=source, frames=8)
    assert done.settings["total_frames"] == 20


def test_extending_on_a_text_only_model_is_refused_naming_the_models_that_can(make_engine, tmp_path):
    engine = make_engine("tiny-t2v-moe")
    source = write_video(tmp_path / "shot.mp4", source_frames())
    with pytest.raises(RequestError, match="TI2V-5B or I2V-A14B"):
        engine.submit(GenerationRequest(prompt="on", video=source, **QUICK))
    run(engine, prompt="a boat")


def test_memory_is_planned_for_one_window_not_the_whole_long_video():
    from engine import resolve_spec, validate

    valid = validate(GenerationRequest(prompt="a boat", frames=129, **QUICK), resolve_spec("tiny-ti2v"))
    assert valid.total_frames == 129 and valid.pass_frames == 17  # the model never holds more than a window


def test_a_phone_video_stored_sideways_is_continued_upright(make_engine, tmp_path):
    import subprocess

    import imageio_ffmpeg

    landscape = write_video(tmp_path / "stored.mp4", np.zeros((8, 64, 96, 3), np.uint8))
    rotated = tmp_path / "phone.mp4"  # the pixels stored 96x64, shown 64x96 (as phones record portrait)
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-display_rotation", "90", "-i", landscape, "-c", "copy",
         str(rotated)], check=True,
    )  # fmt: skip
    done, _, _ = run(make_engine(), prompt="on", video=str(rotated), frames=8, width=None, height=None)
    assert (done.settings["request"]["width"], done.settings["request"]["height"]) == (64, 96)
    assert read_video(done.path).shape[1:3] == (96, 64)
