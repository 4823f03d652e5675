"""Preview animations: the engine's small RGB frames as animated WebP files the browser plays in an <img>."""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

PREVIEW_WIDTH = 480  # the engine's previews are latent-sized (1/8 or 1/16 of the video); upscale for viewing

_counter = itertools.count()


class PreviewFiles:
    """One job's preview files in a private temp folder; each new file replaces the last one on disk.

    Gradio copies a returned file into its own cache before the generator resumes, so the previous file is no
    longer needed once the next one is written.
    """

    def __init__(self, root: Path | None = None):
        self.root = Path(root or tempfile.gettempdir()) / "wan-studio-previews"
        self.root.mkdir(parents=True, exist_ok=True)
        self._last: Path | None = None

    def animation(self, frames: np.ndarray, fps: float, width: int = PREVIEW_WIDTH) -> str:
        """uint8 [n, h, w, 3] -> path of an animated WebP (a still when n == 1), scaled to about `width`."""
        frames = np.asarray(frames)
        n, h, w = frames.shape[:3]
        scale = width / w
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        resample = Image.Resampling.BILINEAR if scale > 1 else Image.Resampling.LANCZOS
        images = [Image.fromarray(f).resize(size, resample) for f in frames]
        path = self.root / f"preview-{next(_counter)}.webp"
        duration = max(20, int(round(1000 / max(fps, 0.1))))
        images[0].save(
            path, format="WEBP", save_all=n > 1, append_images=images[1:], duration=duration, loop=0, quality=80
        )
        self._drop()
        self._last = path
        return str(path)

    @staticmethod
    def thumbnail(frame: np.ndarray, width: int = PREVIEW_WIDTH) -> np.ndarray:
        """A decoded video frame shrunk to preview size (so a long decode does not pile up full frames)."""
        h, w = frame.shape[:2]
        if w <= width:
            return frame
        size = (width, max(1, round(h * width / w)))
        return np.asarray(Image.fromarray(frame).resize(size, Image.Resampling.BILINEAR))

    def _drop(self) -> None:
        if self._last is not None:
            self._last.unlink(missing_ok=True)
            self._last = None

    def close(self) -> None:
        self._drop()
