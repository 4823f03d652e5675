"""Reading a video's frames (the source of an extension) through the ffmpeg of imageio-ffmpeg.

ffmpeg runs as our own subprocess, as in output.VideoWriter, so a damaged file is told by ffmpeg's exit status
(imageio-ffmpeg's reader ignores it) and every frame comes out already scaled and cropped to the wanted size.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# imageio-ffmpeg warns that a rotated video's frames come out rotated: what we want, and noise in the terminal
logging.getLogger("imageio_ffmpeg").setLevel(logging.ERROR)


class VideoReadError(Exception):
    """The file is not a video ffmpeg can read (`damaged` False) or it is one but broken (`damaged` True)."""

    def __init__(self, damaged: bool, detail: str):
        super().__init__(detail)
        self.damaged = damaged


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float


def _looks_like_video(path: Path) -> bool:
    """An MP4/MOV (an 'ftyp' box), WebM/MKV (EBML) or AVI header: the file meant to be a video."""
    with open(path, "rb") as f:
        head = f.read(16)
    return head[4:8] == b"ftyp" or head[:4] == b"\x1a\x45\xdf\xa3" or head[:4] == b"RIFF"


def probe(path: str | Path) -> VideoInfo:
    """Size (as displayed, rotation applied) and frame rate of the first video stream. Raises VideoReadError."""
    import imageio_ffmpeg

    path = Path(path)
    reader = imageio_ffmpeg.read_frames(str(path))
    try:
        meta = next(reader)
    except (OSError, RuntimeError, StopIteration) as exc:
        raise VideoReadError(_looks_like_video(path), str(exc).splitlines()[0] if str(exc) else "") from None
    finally:
        reader.close()
    width, height = meta.get("size") or (0, 0)
    if not width or not height:
        raise VideoReadError(_looks_like_video(path), "no video stream")
    return VideoInfo(int(width), int(height), float(meta.get("fps") or 0.0))


def read_frames(path: str | Path, size: tuple[int, int] | None = None) -> Iterator[np.ndarray]:
    """Every frame as uint8 [H, W, 3], scaled to cover `size` and cropped to it at the centre (the aspect kept).

    Raises VideoReadError (damaged) when ffmpeg stops with an error, after the frames it could decode.
    """
    import imageio_ffmpeg

    path = Path(path)
    if size is None:
        info = probe(path)
        size = (info.width, info.height)
    width, height = size
    fit = f"scale={width}:{height}:force_original_aspect_ratio=increase:flags=lanczos,crop={width}:{height},setsar=1"
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-xerror", "-i", str(path), "-an", "-vf", fit]
    command += ["-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    frame_bytes = width * height * 3
    try:
        while True:
            data = proc.stdout.read(frame_bytes)
            if len(data) < frame_bytes:
                break
            yield np.frombuffer(data, np.uint8).reshape(height, width, 3)
        errors = proc.stderr.read().decode("utf-8", "replace").strip()
        if proc.wait() != 0:
            raise VideoReadError(True, errors.splitlines()[-1] if errors else f"ffmpeg exit status {proc.returncode}")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
