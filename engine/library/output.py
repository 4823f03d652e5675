"""MP4 output: H.264/yuv420p through ffmpeg, settings embedded and beside the file, never overwriting.

Every file is written under a hidden temporary name, synced, and only then renamed into place (and the folder
synced), so a crash, a kill or a full disk never leaves a half-written file under a final name.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import OutputError

log = logging.getLogger("wan_studio.output")

METADATA_KEY = "comment"  # an MP4 tag ffmpeg writes and reads back as it is
SETTINGS_FORMAT = "wan-studio/1"
DISK_FULL_ERRNOS = frozenset(
    code for code in (errno.ENOSPC, getattr(errno, "EDQUOT", None), errno.EFBIG) if code is not None
)
CRF = 10  # libx264 quality (what imageio-ffmpeg's quality=8 meant): near-transparent


def to_uint8(video: np.ndarray) -> np.ndarray:
    """Float frames in [0, 1] -> uint8, rounded; the one conversion every comparison of frames relies on."""
    return (np.asarray(video) * 255).round().clip(0, 255).astype(np.uint8)


def slug(prompt: str, max_len: int = 40) -> str:
    """A short ASCII file-name piece from the prompt ("video" when nothing ASCII is left)."""
    text = unicodedata.normalize("NFKD", prompt).encode("ascii", "ignore").decode().lower()
    words = re.findall(r"[a-z0-9]+", text)
    out = "-".join(words)[:max_len].strip("-")
    return out or "video"


def video_stems(when: Any, seed: int, counter: int, prompt: str) -> dict[str, str]:
    """The file-name stems a video may get, by --filenames choice: "prompt" adds a slug of the prompt (easy to find
    in a folder, but anyone the file is sent to reads it); "plain" is time, seed and a counter only."""
    plain = f"{when:%Y%m%d-%H%M%S}_{seed}_{counter:04d}"
    return {"plain": plain, "prompt": f"{when:%Y%m%d-%H%M%S}_{seed}_{slug(prompt)}"}


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    """Make the renames in the folder durable (a file system that can't sync a folder is left as it is)."""
    try:
        _fsync(folder)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EBADF, errno.EACCES, errno.EISDIR):
            raise


def _claim(temp: Path, folder: Path, stem: str, suffix: str) -> Path:
    """Give the finished temp file its final name without ever replacing an existing file."""
    for n in range(1, 10_000):
        final = folder / (f"{stem}{suffix}" if n == 1 else f"{stem}-{n}{suffix}")
        try:
            os.link(temp, final)  # fails if the name is taken: no overwrite, no race
        except FileExistsError:
            continue
        except OSError as exc:  # file systems without hard links
            if exc.errno in DISK_FULL_ERRNOS or exc.errno in (errno.EROFS, errno.EACCES, errno.ENOENT):
                raise
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


def estimate_video_bytes(width: int, height: int, frames: int) -> int:
    """A generous upper bound of the MP4's size: the raw yuv420p frames plus room for the container and settings.

    Measured with this writer's settings, even pure noise (the worst case for H.264) comes out at about 0.75 of the
    raw yuv420p size; real footage at a fraction of that.
    """
    return int(width) * int(height) * int(frames) * 3 // 2 + 256 * 1024


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KB', 3.2e9 -> '3.2 GB' (decimal units, as disks are sold and file managers show)."""
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def check_free_space(folder: str | Path, request: Any, reserve: int = 0, frames: int | None = None) -> int:
    """Refuse, before any work, a video the outputs folder's disk has no room for; returns the estimate in bytes.

    `request` is a validated GenerationRequest (its width, height and frames are set). The estimate is generous
    (see estimate_video_bytes) and `reserve` bytes are kept free on top, so a job that passes here does not fill
    the disk for everything else on it. `frames`: the finished video's, when not the request's (an extension).
    """
    path = Path(folder).expanduser()
    need = estimate_video_bytes(request.width, request.height, frames or request.frames)
    try:
        free = shutil.disk_usage(path).free
    except OSError:
        return need  # a folder that can't be asked: check_outputs_dir and the write itself report it
    if free < need + reserve:
        kept = f" plus {human_bytes(reserve)} kept free" if reserve else ""
        raise OutputError(
            f"Not enough free disk space for this video in the outputs folder {path.absolute()}: "
            f"{human_bytes(free)} free, it needs about {human_bytes(need)}{kept}. Free some space, make a "
            "smaller or shorter video, or choose a folder on another disk with --outputs."
        )
    return need


def write_failure_message(folder: str | Path, exc: OSError) -> str:
    """What to tell the user when writing the video failed with `exc`: a full disk is said as such."""
    path = Path(folder).expanduser().absolute()
    reason = exc.strerror or str(exc)
    if exc.errno == errno.ENOSPC:
        what = f"The disk is full: the outputs folder {path} has no room left for the video"
    elif exc.errno == getattr(errno, "EDQUOT", None):
        what = f"The disk quota is used up: the outputs folder {path} has no room left for the video"
    elif exc.errno == errno.EFBIG:
        what = f"The video grew larger than a file may be in the outputs folder {path}"
    else:
        return (
            f"Could not write the video in the outputs folder {path} ({reason}); nothing was saved. "
            "Check that the folder exists and is writable, or choose another one with --outputs."
        )
    return (
        f"{what} ({reason}); nothing was saved. Free some space on that disk, or choose a folder on another "
        "disk with --outputs."
    )


EMBED_MAX_CHARS = 32_000  # one command-line argument may hold 128 KiB; JSON escapes a CJK character as 6


def _without_text(settings: dict[str, Any], why: str) -> str:
    """The settings' numbers and names only: no prompt, negative prompt, notice or other free text."""
    request = settings.get("request") or {}
    essentials = {k: settings.get(k) for k in ("format", "app_version", "created", "model", "model_source", "family")}
    numbers = {k: v for k, v in request.items() if k not in ("prompt", "negative_prompt", "extra")}
    return json.dumps(essentials | {"request": numbers, "embedded": why}, default=str)


def embedded_settings(settings: dict[str, Any], max_chars: int = EMBED_MAX_CHARS, with_text: bool = True) -> str:
    """The settings as the JSON the MP4 itself carries: whole when it fits, else with long texts shortened;
    `with_text=False` (--no-embedded-prompt) leaves every free text out, so the file never carries the prompt.

    The JSON beside the video always holds everything; this copy only has to survive a lost settings file. Without
    the bound, a long Chinese prompt made ffmpeg's argument list too long and the finished work was lost.
    """
    if not with_text:
        return _without_text(settings, "without text")
    meta = json.dumps(settings, ensure_ascii=True, separators=(",", ":"), default=str)
    if len(meta) <= max_chars:
        return meta
    slim = dict(settings, embedded="shortened")
    request = dict(slim.get("request") or {})
    for key in ("prompt", "negative_prompt"):
        if isinstance(request.get(key), str) and len(request[key]) > 1000:
            request[key] = request[key][:1000] + "…"
    request["extra"] = {}
    slim["request"] = request
    slim["notices"] = []
    meta = json.dumps(slim, ensure_ascii=True, separators=(",", ":"), default=str)
    if len(meta) <= max_chars:
        return meta
    return _without_text(settings, "shortened")


@dataclass(frozen=True)
class EncodedVideo:
    """A closed, synced MP4 under its hidden partial name: what a worker hands to the studio (plain data). The
    studio signs it and gives it its final name (publish); a worker never needs the signing key."""

    folder: str
    token: str  # pid.ns: the partial names' middle (remove_partials reads the pid back)
    stem: str  # the final name's stem
    plain_stem: str  # the name without the prompt (what the credentials' title uses)

    def partial(self, kind: str = "mp4") -> Path:
        """The hidden names of the video ("mp4"), its signed copy ("signed") and its settings ("json")."""
        names = {
            "mp4": f".{self.stem}.{self.token}.partial.mp4",
            "signed": f".{self.stem}-signed.{self.token}.partial.mp4",
            "json": f".{self.stem}.{self.token}.json.partial",
        }
        return Path(self.folder) / names[kind]

    def discard(self) -> None:
        for kind in ("mp4", "signed", "json"):
            self.partial(kind).unlink(missing_ok=True)


def publish(
    video: EncodedVideo, settings: dict[str, Any], sign: Callable[[Path, Path], dict[str, Any]] | None = None
) -> Path:
    """Sign the closed MP4, write the settings JSON beside it, and give both their final names; the video's path.

    All or nothing: the MP4 and its settings are both complete and synced before either takes a final name, and
    a failure on the way (a full disk) removes everything. `sign(source, target)` writes a signed copy of the MP4 to
    target and returns the settings' "credentials" record; only a copy whose record says signed replaces the
    unsigned file (still under its hidden name), so no half-signed file is ever visible, and a signing failure
    leaves the video saved unsigned.
    """
    temp, signed, sidecar = video.partial("mp4"), video.partial("signed"), video.partial("json")
    folder = Path(video.folder)
    try:
        if sign is not None:
            record = sign(temp, signed)
            if record.get("signed"):
                os.replace(signed, temp)
            signed.unlink(missing_ok=True)
            settings["credentials"] = record  # the caller's settings (its Done event) say it too
        with open(sidecar, "w", encoding="utf-8") as f:
            f.write(json.dumps(settings, ensure_ascii=False, indent=2, default=str))
            f.flush()
            os.fsync(f.fileno())
        final = _claim(temp, folder, video.stem, ".mp4")
        try:
            os.replace(sidecar, final.with_suffix(".json"))
        except BaseException:
            final.unlink(missing_ok=True)
            raise
        _fsync_dir(folder)
    except BaseException:
        video.discard()
        raise
    return final


class VideoWriter:
    """Streams frames into ffmpeg under a hidden temporary name; close() hands the finished MP4 on (publish gives
    it its final name; finish() does both).

    ffmpeg runs as our own subprocess (not through imageio-ffmpeg's generator, which ignores ffmpeg's exit status)
    so a write that failed, a full disk above all, is noticed and reported instead of renamed into place.
    """

    def __init__(
        self,
        folder: Path,
        stem: str,
        width: int,
        height: int,
        fps: int,
        settings: dict[str, Any],
        plain_stem: str | None = None,
        embed_text: bool = True,
    ):
        import imageio_ffmpeg

        token = f"{os.getpid()}.{time.monotonic_ns()}"  # the pid tells a restart whose partial file this is
        self.video = EncodedVideo(str(folder), token, stem, plain_stem or stem)  # what close() hands on
        self.temp = self.video.partial()
        meta = embedded_settings(settings, with_text=embed_text)
        command = [
            imageio_ffmpeg.get_ffmpeg_exe(),
            "-y",
            "-v",
            "error",
            "-f",
            "rawvideo",
            "-vcodec",
            "rawvideo",
            "-s",
            f"{int(width)}x{int(height)}",
            "-pix_fmt",
            "rgb24",
            "-r",
            str(int(fps)),
            "-i",
            "-",
            "-an",
            "-vcodec",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            "-crf",
            str(CRF),
            "-metadata",
            f"{METADATA_KEY}={meta}",
            "-movflags",
            "+faststart",
            str(self.temp),
        ]
        # its own session: a Ctrl-C in the terminal reaches the studio, which then stops ffmpeg itself
        self._proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        self._errors = bytearray()
        self._reader = threading.Thread(target=self._read_errors, name="wan-studio-ffmpeg-stderr", daemon=True)
        self._reader.start()
        self.frames_written = 0

    def _read_errors(self) -> None:
        for line in self._proc.stderr:
            self._errors += line
            del self._errors[:-8192]  # the last lines say why

    def write(self, frames: np.ndarray) -> None:
        for frame in frames:
            try:
                self._proc.stdin.write(np.ascontiguousarray(frame, dtype=np.uint8).data)
            except OSError:  # ffmpeg is gone (a broken pipe): its own words say why
                raise self._failure() from None
            self.frames_written += 1

    def _close_ffmpeg(self) -> None:
        try:
            self._proc.stdin.close()
        except OSError:
            pass  # ffmpeg already gone; its exit status says why
        if self._proc.wait() != 0:
            raise self._failure()
        self._reader.join(5)

    def _failure(self) -> Exception:
        """ffmpeg stopped: an OSError with the errno ffmpeg met when it was the disk, else an OutputError."""
        code = self._proc.wait()
        self._reader.join(5)
        text = self._errors.decode("utf-8", "replace")
        for number in sorted(DISK_FULL_ERRNOS):
            if os.strerror(number) in text:
                return OSError(number, os.strerror(number), str(self.temp))
        if code == -getattr(signal, "SIGXFSZ", -1000):  # killed for writing past the file size limit
            return OSError(errno.EFBIG, os.strerror(errno.EFBIG), str(self.temp))
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        said = lines[-1] if lines else f"exit status {code}"
        return OutputError(f"The video could not be written: ffmpeg stopped ({said}).")

    def close(self) -> EncodedVideo:
        """Close ffmpeg and sync the MP4, still under its hidden name (abort() on any failure)."""
        try:
            self._close_ffmpeg()
            _fsync(self.temp)
        except BaseException:
            self.abort()
            raise
        return self.video

    def finish(self, settings: dict[str, Any], sign: Callable[[Path, Path], dict[str, Any]] | None = None) -> Path:
        """close() and publish(): the final video path (see publish)."""
        return publish(self.close(), settings, sign)

    def abort(self) -> None:
        """Stop ffmpeg and remove the temporary files (safe to call more than once)."""
        if self._proc.poll() is None:
            self._proc.kill()
        try:
            self._proc.stdin.close()
        except OSError:
            pass
        self._proc.wait()
        self._reader.join(5)
        self.video.discard()


_MP4_PARTIAL = re.compile(r"^\.(?P<stem>.+)\.(?P<pid>\d+)\.(?P<ns>\d+)\.partial\.mp4$")
_JSON_PARTIAL = re.compile(r"^\.(?P<stem>.+)\.(?P<pid>\d+)\.(?P<ns>\d+)\.json\.partial$")
_JSON_PARTIAL_NO_PID = re.compile(r"^\.(?P<stem>.+)\.json\.partial$")  # written by earlier versions
_STARTED_NS = time.monotonic_ns()  # before any writer of this process made a file
STALE_PARTIAL_S = 24 * 3600


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    except OSError:
        return False
    try:  # a killed process nobody has reaped yet is a zombie: it writes nothing any more
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _writer_gone(pid: int, ns: int, age_s: float) -> bool:
    if pid == os.getpid():
        # our own pid, but from before this process started writing: a previous studio that had the same pid
        # (common in containers, where the studio is always one of the first processes)
        return ns < _STARTED_NS
    return not _process_alive(pid) or age_s > STALE_PARTIAL_S


def remove_partials(folder: str | Path, max_age_s: float = 600) -> list[Path]:
    """Remove the half-written files a studio that was killed mid-write left in the outputs folder.

    Why at start: a video is written as `.<stem>.<pid>.<ns>.partial.mp4` (and its settings as
    `.<stem>.<pid>.<ns>.json.partial`) and renamed only once complete, so a kill, a crash or a power cut leaves
    hidden partial files that the Gallery never lists but that would fill the disk over time. The pid in the name
    tells whose they are: a file of a process that is gone is removed; one of a live process is kept, since another
    studio (or another engine in this process) on the same folder may be writing it right now, unless it has not
    changed for a day. A settings file from earlier versions carries no pid: it is removed once its video exists
    (the video keeps the same settings inside it) or when it is older than `max_age_s`, longer than any write of
    a settings file takes. Finished videos are never touched. Returns what was removed; never raises.
    """
    root = Path(folder).expanduser()
    removed: list[Path] = []
    try:
        entries = list(os.scandir(root))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        name = entry.name
        if not name.startswith(".") or not name.endswith((".partial.mp4", ".json.partial")):
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            age = now - entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        match = _MP4_PARTIAL.match(name) or _JSON_PARTIAL.match(name)
        if match:
            gone = _writer_gone(int(match["pid"]), int(match["ns"]), age)
        elif (legacy := _JSON_PARTIAL_NO_PID.match(name)) is not None:
            gone = (root / f"{legacy['stem']}.mp4").exists() or age > max_age_s
        else:
            gone = age > STALE_PARTIAL_S
        if not gone:
            continue
        try:
            os.unlink(entry.path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("could not remove the partial file %s: %s", entry.path, exc)
            continue
        removed.append(Path(entry.path))
    if removed:
        log.info("removed %d partial file(s) left in %s by a studio that stopped mid-write", len(removed), root)
    return removed


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
