"""The outputs folder as the Gallery sees it: finished videos only, newest first, each with its settings."""

from __future__ import annotations

import json
import os

import numpy as np

from engine import find_video, list_videos
from engine.library.output import SETTINGS_FORMAT, VideoWriter


def finished(folder, name: str, prompt: str, mtime: float):
    video = folder / name
    video.write_bytes(b"not really an mp4")
    video.with_suffix(".json").write_text(json.dumps({"request": {"prompt": prompt, "seed": 1}}), encoding="utf-8")
    os.utime(video, (mtime, mtime))
    return video


def test_finished_videos_are_listed_newest_first_with_their_settings(tmp_path):
    finished(tmp_path, "old.mp4", "an old one", 1_000)
    finished(tmp_path, "new.mp4", "a new one", 2_000)
    assert [(v.path.name, v.prompt) for v in list_videos(tmp_path)] == [
        ("new.mp4", "a new one"),
        ("old.mp4", "an old one"),
    ]


def test_partial_hidden_and_symlinked_files_are_not_listed(tmp_path):
    finished(tmp_path, "kept.mp4", "kept", 1_000)
    (tmp_path / ".kept.123.partial.mp4").write_bytes(b"half")
    outside = finished(tmp_path.parent, f"{tmp_path.name}-outside.mp4", "outside", 1_000)
    (tmp_path / "link.mp4").symlink_to(outside)
    assert [v.path.name for v in list_videos(tmp_path)] == ["kept.mp4"]


def test_find_video_returns_one_finished_video_of_the_folder(tmp_path):
    video = finished(tmp_path, "one.mp4", "just one", 1_000)
    assert find_video(tmp_path, str(video)).prompt == "just one"


def test_find_video_refuses_paths_outside_the_folder_and_partial_files(tmp_path):
    (tmp_path / "outputs").mkdir()
    outside = finished(tmp_path, "outside.mp4", "outside", 1_000)
    (tmp_path / "outputs" / ".x.partial.mp4").write_bytes(b"half")
    assert find_video(tmp_path / "outputs", outside) is None
    assert find_video(tmp_path / "outputs", tmp_path / "outputs" / ".." / "outside.mp4") is None
    assert find_video(tmp_path / "outputs", tmp_path / "outputs" / ".x.partial.mp4") is None
    assert find_video(tmp_path / "outputs", None) is None


def made_by_the_studio(folder, prompt: str):
    """A real MP4 with its settings embedded and beside it, as the engine writes them."""
    settings = {"format": SETTINGS_FORMAT, "request": {"prompt": prompt, "seed": 9}}
    writer = VideoWriter(folder, "clip", 48, 32, 8, settings)
    writer.write(np.zeros((3, 32, 48, 3), dtype=np.uint8))
    return writer.finish(settings)


def test_a_video_whose_settings_file_never_got_written_is_listed_from_its_embedded_settings(tmp_path):
    video = made_by_the_studio(tmp_path, "killed before its settings file")
    video.with_suffix(".json").unlink()
    [listed] = list_videos(tmp_path)
    assert (listed.path, listed.prompt, listed.seed) == (video, "killed before its settings file", 9)


def test_a_settings_file_that_arrives_after_the_video_was_listed_is_read(tmp_path):
    video = made_by_the_studio(tmp_path, "first")
    sidecar = video.with_suffix(".json")
    sidecar.unlink()
    assert list_videos(tmp_path)[0].prompt == "first"  # from the MP4, and cached
    sidecar.write_text(json.dumps({"request": {"prompt": "edited beside it", "seed": 9}}), encoding="utf-8")
    assert list_videos(tmp_path)[0].prompt == "edited beside it"
