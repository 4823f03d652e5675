"""The outputs folder as the Gallery sees it: finished videos only, newest first, each with its settings."""

from __future__ import annotations

import json
import os

from engine import find_video, list_videos


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
