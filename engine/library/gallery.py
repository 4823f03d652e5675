"""The videos in the outputs folder, newest first, each with the settings it was made with.

The folder is the source of truth (not a database): videos made before a restart, or whose browser went away,
are listed the same way. Half-written files carry a hidden ".partial" name and are never listed.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import OutputError, RequestError
from .output import read_settings

MARKS = ("kept", "rejected")


@dataclass(frozen=True)
class SavedVideo:
    path: Path
    modified: float  # st_mtime
    settings: dict[str, Any] = field(repr=False)  # {} when the file carries no Wan Studio settings

    @property
    def request(self) -> dict[str, Any]:
        return self.settings.get("request") or {}

    @property
    def prompt(self) -> str:
        return str(self.request.get("prompt") or "")

    @property
    def seed(self) -> int | None:
        return self.request.get("seed")

    @property
    def model(self) -> str:
        return str(self.settings.get("model") or "")

    @property
    def from_image(self) -> bool:
        return bool(self.settings.get("image"))

    @property
    def mark(self) -> str | None:
        """kept, rejected, or None (not marked yet)."""
        return self.settings.get("mark")

    @property
    def batch(self) -> dict[str, Any]:
        """The batch this take belongs to (id, index, count, varied), or {} for a single video."""
        return self.settings.get("batch") or {}


@lru_cache(maxsize=4096)
def _settings(path: str, mtime_ns: int, size: int, sidecar_mtime_ns: int | None) -> str:
    # keyed by the video's mtime and size and the settings file's mtime, so a replaced file, or a settings file that
    # arrives after the video was first listed, is read again; cached as text so callers can't mutate the cache
    try:
        return json.dumps(read_settings(path))
    except (OutputError, OSError, ValueError):
        return "{}"


def _saved(path: str, stat: os.stat_result) -> SavedVideo:
    """A video with its settings: from the JSON beside it, or, when that was never written (the studio was killed
    between the two renames), from the copy embedded in the MP4 itself."""
    try:
        sidecar_mtime: int | None = os.stat(Path(path).with_suffix(".json")).st_mtime_ns
    except OSError:
        sidecar_mtime = None
    settings = _settings(path, stat.st_mtime_ns, stat.st_size, sidecar_mtime)
    return SavedVideo(Path(path), stat.st_mtime, json.loads(settings))


def find_video(folder: str | Path, path: str | Path | None) -> SavedVideo | None:
    """One finished video of the folder by its path (None when it is gone, hidden, partial, or elsewhere)."""
    if not path:
        return None
    candidate = Path(path)
    if candidate.parent.resolve() != Path(folder).expanduser().resolve():
        return None
    if candidate.suffix != ".mp4" or candidate.name.startswith(".") or candidate.is_symlink():
        return None
    try:
        stat = candidate.stat()
    except OSError:
        return None
    return _saved(str(candidate), stat)


def list_videos(folder: str | Path, limit: int | None = None) -> list[SavedVideo]:
    """Finished MP4s in the folder, newest first (hidden and partial files are skipped)."""
    root = Path(folder).expanduser()
    try:
        entries = [e for e in os.scandir(root) if e.name.endswith(".mp4") and not e.name.startswith(".")]
    except OSError:
        return []
    found = []
    for entry in entries:
        try:
            if not entry.is_file(follow_symlinks=False):
                continue  # a symlink could point outside the outputs folder
            stat = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        found.append((stat.st_mtime, entry.path, stat))
    found.sort(key=lambda item: (item[0], item[1]), reverse=True)
    if limit is not None:
        found = found[:limit]
    return [_saved(p, stat) for _mtime, p, stat in found]


def set_mark(folder: str | Path, path: str | Path, mark: str | None) -> SavedVideo:
    """Mark a video kept or rejected (None clears it), stored in its settings file so it survives restarts.

    The settings file is rewritten whole through a temporary file and a rename: a crash leaves the old or the new
    file, never half of one. Raises RequestError for a video not in the folder or an unknown mark.
    """
    if mark is not None and mark not in MARKS:
        raise RequestError("mark", f"mark must be kept, rejected or none; got {mark!r}")
    video = find_video(folder, path)
    if video is None:
        raise RequestError("path", "That video is not in the outputs folder (it may have been moved or deleted).")
    if not video.settings:
        raise RequestError("path", f"{video.path.name} carries no Wan Studio settings, so it can't be marked.")
    settings = dict(video.settings)
    if mark is None:
        settings.pop("mark", None)
    else:
        settings["mark"] = mark
    sidecar = video.path.with_suffix(".json")
    temp = video.path.with_name(f".{video.path.stem}.{os.getpid()}.{time.time_ns()}.json.partial")  # as output.py
    try:
        temp.write_text(json.dumps(settings, ensure_ascii=False, indent=2, default=str), encoding="utf-8")
        os.replace(temp, sidecar)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise OutputError(f"The mark could not be saved beside {video.path.name}: {exc.strerror or exc}") from None
    return find_video(folder, video.path) or video


def in_batches(videos: list[SavedVideo]) -> list[SavedVideo]:
    """Newest first, with the takes of one batch together in take order, where the batch's newest take is."""
    groups: dict[str, list[SavedVideo]] = {}
    order: list[str] = []
    for video in videos:
        key = video.batch.get("id") or f"single:{video.path}"
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(video)
    return [v for key in order for v in sorted(groups[key], key=lambda v: v.batch.get("index", 0))]


def find_by_sha256(folder: str | Path, name: str | None, sha256: str) -> SavedVideo | None:
    """The video of the folder whose bytes have this sha256 (an extension's source, to extend it again): the file
    of that name first, then every video, newest first."""
    import hashlib

    def digest(path: Path) -> str:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()

    videos = list_videos(folder)
    videos.sort(key=lambda v: v.path.name != name)  # stable: the named one first, then newest first
    for video in videos:
        try:
            if digest(video.path) == sha256:
                return video
        except OSError:
            continue
    return None
