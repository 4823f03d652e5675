"""The videos in the outputs folder, newest first, each with the settings it was made with.

The folder is the source of truth (not a database): videos made before a restart, or whose browser went away,
are listed the same way. Half-written files carry a hidden ".partial" name and are never listed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from .errors import OutputError
from .output import read_settings


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
