"""MP4 output: H.264/yuv420p through imageio-ffmpeg, settings embedded and beside the file, never overwriting."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np

from .errors import OutputError

METADATA_KEY = "comment"  # an MP4 tag ffmpeg writes and reads back as it is
SETTINGS_FORMAT = "wan-studio/1"


def to_uint8(video: np.ndarray) -> np.ndarray:
    """Float frames in [0, 1] -> uint8, rounded; the one conversion every comparison of frames relies on."""
    return (np.asarray(video) * 255).round().clip(0, 255).astype(np.uint8)


def slug(prompt: str, max_len: int = 40) -> str:
    """A short ASCII file-name piece from the prompt ("video" when nothing ASCII is left)."""
    text = unicodedata.normalize("NFKD", prompt).encode("ascii", "ignore").decode().lower()
    words = re.findall(r"[a-z0-9]+", text)
    out = "-".join(words)[:max_len].strip("-")
    return out or "video"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _claim(temp: Path, folder: Path, stem: str, suffix: str) -> Path:
    """Give the finished temp file its final name without ever replacing an existing file."""
    for n in range(1, 10_000):
        final = folder / (f"{stem}{suffix}" if n == 1 else f"{stem}-{n}{suffix}")
        try:
            os.link(temp, final)  # fails if the name is taken: no overwrite, no race
        except FileExistsError:
            continue
        except OSError:  # file systems without hard links
            if final.exists():
                continue
            os.replace(temp, final)
            return final
        temp.unlink()
        return final
    raise OutputError(f"No free file name for {stem}{suffix} in {folder}.")


def check_outputs_dir(folder: str | Path) -> Path:
    """The outputs folder, created if needed; refuses one that cannot be written before any work is done."""
    path = Path(folder).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"The outputs folder {path} cannot be created: {exc.strerror or exc}.") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(f"The outputs folder {path} is not writable. Choose another folder with --outputs.")
    return path


class VideoWriter:
    """Streams frames into ffmpeg under a hidden temporary name; finish() gives the file its final name."""

    def __init__(self, folder: Path, stem: str, width: int, height: int, fps: int, settings: dict[str, Any]):
        import imageio_ffmpeg

        self.folder = folder
        self.stem = stem
        self.temp = folder / f".{stem}.{os.getpid()}.{time.monotonic_ns()}.partial.mp4"
        meta = json.dumps(settings, ensure_ascii=True, separators=(",", ":"), default=str)
        self._gen = imageio_ffmpeg.write_frames(
            str(self.temp),
            (width, height),
            fps=fps,
            codec="libx264",
            pix_fmt_out="yuv420p",
            macro_block_size=1,
            quality=8,
            ffmpeg_log_level="error",
            output_params=["-metadata", f"{METADATA_KEY}={meta}", "-movflags", "+faststart"],
        )
        self._gen.send(None)
        self.frames_written = 0

    def write(self, frames: np.ndarray) -> None:
        for frame in frames:
            self._gen.send(np.ascontiguousarray(frame))
            self.frames_written += 1

    def finish(self, settings: dict[str, Any]) -> Path:
        """Close the MP4, write the settings JSON beside it, and return the final video path."""
        self._gen.close()
        _fsync(self.temp)
        final = _claim(self.temp, self.folder, self.stem, ".mp4")
        sidecar_temp = final.with_name(f".{final.stem}.json.partial")
        sidecar_temp.write_text(json.dumps(settings, ensure_ascii=False, indent=2, default=str), encoding="utf-8")
        _fsync(sidecar_temp)
        os.replace(sidecar_temp, final.with_suffix(".json"))
        return final

    def abort(self) -> None:
        try:
            self._gen.close()
        except Exception:  # noqa: BLE001 - ffmpeg may already be gone; the temp file goes either way
            pass
        self.temp.unlink(missing_ok=True)


def read_settings(path: str | Path) -> dict[str, Any]:
    """The settings of a video made by Wan Studio: from the JSON beside it, else from the MP4's own metadata."""
    path = Path(path)
    sidecar = path.with_suffix(".json")
    if path.suffix == ".json" or (sidecar.is_file() and path.suffix == ".mp4"):
        source = path if path.suffix == ".json" else sidecar
        return json.loads(source.read_text(encoding="utf-8"))
    return read_embedded_settings(path)


def read_embedded_settings(path: str | Path) -> dict[str, Any]:
    """Settings embedded in the MP4 itself (ffmpeg's ffmetadata dump of the container tags)."""
    import imageio_ffmpeg

    result = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "ffmetadata", "-"],
        capture_output=True,
        check=False,
    )
    text = result.stdout.decode("utf-8", "replace")
    # ffmetadata escapes '=', ';', '#', '\' and newlines with a backslash
    for line in re.split(r"(?<!\\)\n", text):
        if line.startswith(f"{METADATA_KEY}="):
            value = re.sub(r"\\(.)", r"\1", line[len(METADATA_KEY) + 1 :], flags=re.S)
            try:
                data = json.loads(value)
            except json.JSONDecodeError:
                break
            if isinstance(data, dict) and data.get("format") == SETTINGS_FORMAT:
                return data
    raise OutputError(f"{path} carries no Wan Studio settings.")
