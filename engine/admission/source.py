"""The video an extension continues: read and checked once, before anything is queued.

The whole file travels with the job as bytes (plain data): a worker on another machine reads its frames from them,
and the studio names it, by its sha256, as the new video's parent in the content credentials.
"""

from __future__ import annotations

import hashlib
import math
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..catalog import ModelSpec
from ..errors import OutputError, RequestError
from ..library.output import read_settings
from ..library.video_read import VideoReadError, probe, read_frames

MAX_SOURCE_BYTES = 512 * 2**20
MAX_SOURCE_SECONDS = 180  # a long video's extension; longer sources are better cut to the shot first


@dataclass(frozen=True)
class SourceVideo:
    name: str  # the file's name, as the user gave it
    sha256: str
    frames: int  # all of its frames (decoded and counted)
    fps: float
    width: int  # its own size
    height: int
    data: bytes = field(repr=False, compare=False)
    # the colours the video's own windows were matched to, when the studio made it ({"mean_lab", "std_lab"}): a
    # chain of extensions keeps matching to the first one's instead of to frames that went through H.264 again
    reference: dict[str, Any] | None = None

    def settings(self) -> dict[str, Any]:
        return {"name": self.name, "sha256": self.sha256, "frames": self.frames, "fps": self.fps,
                "width": self.width, "height": self.height, "bytes": len(self.data),
                "color_reference": self.reference}  # fmt: skip

    def frames_at(self, size: tuple[int, int]) -> Iterator[np.ndarray]:
        """Its frames scaled and cropped to `size`, read from the bytes (through a temporary file ffmpeg can seek)."""
        with tempfile.NamedTemporaryFile(suffix=".mp4") as copy:
            copy.write(self.data)
            copy.flush()
            yield from read_frames(copy.name, size)


def _field_error(message: str) -> RequestError:
    return RequestError("video", message)


def read_source(video: Any) -> SourceVideo:
    """A video file -> SourceVideo, or a RequestError naming the field `video` in the user's words."""
    if isinstance(video, SourceVideo):
        return video
    if not isinstance(video, (str, Path)):
        raise _field_error(f"video must be a video file, got {type(video).__name__}.")
    path = Path(video)
    try:
        size = path.stat().st_size
    except OSError:
        raise _field_error("The video file could not be found. Upload it again.") from None
    if size == 0:
        raise _field_error("The video file is empty (0 bytes). Choose the video again.")
    if size > MAX_SOURCE_BYTES:
        raise _field_error(
            f"The video file is {size / 2**20:.0f} MB; the studio continues videos up to "
            f"{MAX_SOURCE_BYTES // 2**20} MB. Cut it to the shot you want to continue."
        )
    try:
        info = probe(path)
        frames = sum(1 for _ in read_frames(path, (16, 16)))  # every frame decoded: damage shows now, not mid-job
    except VideoReadError as exc:
        if exc.damaged:
            raise _field_error(
                "The video could not be read: its data is damaged or cut short. Export it again and retry."
            ) from None
        raise _field_error("That file is not a video the studio can read. Use an MP4, MOV, WebM or MKV.") from None
    if frames == 0:
        raise _field_error("The video has no frames the studio can read. Export it again and retry.")
    fps = info.fps if info.fps > 0 else 24.0
    if frames / fps > MAX_SOURCE_SECONDS:
        raise _field_error(
            f"The video is {frames / fps:.0f} s long; the studio continues videos up to {MAX_SOURCE_SECONDS} s. "
            "Cut it to the shot you want to continue."
        )
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    return SourceVideo(path.name, sha, frames, fps, info.width, info.height, data, _reference_of(path))


def _reference_of(path: Path) -> dict[str, Any] | None:
    """The colour reference a Wan Studio video records in its settings (beside it, or inside the MP4)."""
    try:
        settings = read_settings(path)
    except (OutputError, OSError, ValueError):
        return None
    reference = (settings.get("color_match") or {}).get("reference") or {}
    try:
        mean, std = [float(v) for v in reference["mean_lab"]], [float(v) for v in reference["std_lab"]]
    except (KeyError, TypeError, ValueError):
        return None
    if len(mean) == 3 and len(std) == 3 and all(math.isfinite(v) for v in mean + std):
        return {"mean_lab": mean, "std_lab": std}
    return None


def source_size(source: SourceVideo, spec: ModelSpec, area: int | None, fit) -> tuple[tuple[int, int], str | None]:
    """The size the extension is made at, and a notice when it is not the source's own.

    The source's size when the model makes it (its multiple, within its sides, at most the model's default area),
    else the source's aspect fitted to the model's area (or the requested one). `fit` is request.fit_to_area.
    """
    lim = spec.limits
    w, h = source.width, source.height
    largest = max([(spec.width, spec.height), *spec.sizes], key=lambda s: s[0] * s[1])  # the sizes it was made for
    own = (
        area is None
        and w % spec.multiple == 0
        and h % spec.multiple == 0
        and lim.side[0] <= min(w, h)
        and max(w, h) <= lim.side[1]
        and w * h <= largest[0] * largest[1]
    )
    if own:
        return (w, h), None
    size = fit(w / h, area or largest[0] * largest[1], spec.multiple, lim.side)
    return size, (
        f"The source video is {w}×{h}; {spec.id} makes sizes on multiples of {spec.multiple} up to the area of "
        f"{largest[0]}×{largest[1]}, so the whole video is made at {size[0]}×{size[1]} "
        "(the source's frames scaled to cover it and cropped at the centre)."
    )
