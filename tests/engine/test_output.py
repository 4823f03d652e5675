"""Output files: unique names, no half-written file under a final name, settings readable back."""

from __future__ import annotations

import os

import numpy as np
import pytest

from engine import OutputError, read_settings
from engine.library.output import SETTINGS_FORMAT, VideoWriter, check_outputs_dir, slug

SETTINGS = {"format": SETTINGS_FORMAT, "request": {"prompt": 'a = b; # c \\ d\n"quoted" 中文'}}


def frames(n: int = 5) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (n, 32, 48, 3), dtype=np.uint8)


def test_slug_is_short_ascii_and_never_empty():
    assert slug("A Cat, on the beach!") == "a-cat-on-the-beach"
    assert slug("一只猫") == "video"
    assert len(slug("word " * 50)) <= 40


def test_a_finished_video_never_replaces_an_existing_one(tmp_path):
    paths = []
    for _ in range(3):
        writer = VideoWriter(tmp_path, "same-stem", 48, 32, 8, SETTINGS)
        writer.write(frames())
        paths.append(writer.finish(SETTINGS))
    assert [p.name for p in paths] == ["same-stem.mp4", "same-stem-2.mp4", "same-stem-3.mp4"]
    assert all(p.with_suffix(".json").is_file() for p in paths)


def test_while_writing_only_a_hidden_temporary_file_exists(tmp_path):
    writer = VideoWriter(tmp_path, "clip", 48, 32, 8, SETTINGS)
    writer.write(frames())
    names = os.listdir(tmp_path)
    assert all(n.startswith(".") and n.endswith(".partial.mp4") for n in names)
    writer.abort()
    assert os.listdir(tmp_path) == []


def test_settings_with_awkward_characters_survive_the_mp4_metadata(tmp_path):
    writer = VideoWriter(tmp_path, "clip", 48, 32, 8, SETTINGS)
    writer.write(frames())
    path = writer.finish(SETTINGS)
    path.with_suffix(".json").unlink()
    assert read_settings(path) == SETTINGS


def test_an_mp4_without_our_settings_is_reported(tmp_path):
    import imageio_ffmpeg

    path = tmp_path / "foreign.mp4"
    gen = imageio_ffmpeg.write_frames(str(path), (48, 32), macro_block_size=1)
    gen.send(None)
    for frame in frames():
        gen.send(frame)
    gen.close()
    with pytest.raises(OutputError, match="no Wan Studio settings"):
        read_settings(path)


def test_an_outputs_folder_that_cannot_be_created_is_refused_before_any_work(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="cannot be created"):
        check_outputs_dir(blocker / "outputs")


def test_a_video_ffmpeg_could_not_write_is_reported_with_its_reason_and_never_named(tmp_path):
    folder = tmp_path / "gone"
    folder.mkdir()
    writer = VideoWriter(folder, "clip", 48, 32, 8, SETTINGS)
    folder.rmdir()  # ffmpeg opens its output only once the first frame arrives
    with pytest.raises(OutputError, match=r"ffmpeg stopped \(.*No such file or directory"):
        writer.write(frames())
        writer.finish(SETTINGS)
    assert not folder.exists()


def test_a_finished_video_and_its_settings_arrive_together(tmp_path):
    writer = VideoWriter(tmp_path, "clip", 48, 32, 8, SETTINGS)
    writer.write(frames())
    path = writer.finish(SETTINGS)
    assert sorted(os.listdir(tmp_path)) == ["clip.json", "clip.mp4"]  # no temporary name left behind
    assert read_settings(path.with_suffix(".json")) == SETTINGS


def test_an_aborted_writer_stops_ffmpeg_and_leaves_nothing(tmp_path):
    writer = VideoWriter(tmp_path, "clip", 48, 32, 8, SETTINGS)
    writer.write(frames())
    writer.abort()
    writer.abort()  # twice is harmless
    assert os.listdir(tmp_path) == []
