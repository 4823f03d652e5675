"""Colour matching between the windows of a long video: each new window's mean and spread per channel, in CIELAB,
moved onto those of the frames the continuation started from (a Reinhard-style transfer).

Why: each window starts from the last frames of the one before, and small shifts in brightness and colour add up
window after window; matching every window to one fixed reference stops the creep. One transform per window (not
per frame), so motion and light changes inside a window stay as the model made them. OpenCV does the colour
conversions; only the mean/spread arithmetic is ours.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

SCALE_LIMITS = (0.5, 2.0)  # a window of a flat colour has almost no spread: never stretch it beyond this


def _lab(frame: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(frame.astype(np.float32) * np.float32(1 / 255), cv2.COLOR_RGB2Lab)


def _rgb(lab: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(lab, cv2.COLOR_Lab2RGB)


@dataclass(frozen=True)
class LabStats:
    mean: tuple[float, float, float]  # L (0-100), a, b
    std: tuple[float, float, float]

    def settings(self) -> dict:
        return {"mean_lab": [round(v, 3) for v in self.mean], "std_lab": [round(v, 3) for v in self.std]}


def lab_stats(frames: Iterable[np.ndarray]) -> LabStats:
    """Mean and spread of L, a and b over every pixel of the frames (uint8 RGB), frame by frame to spare memory.

    Per frame by OpenCV (meanStdDev), then pooled: the frames have equal pixel counts, so the mean is the mean of
    the means and the variance the mean of (variance + mean²) less the mean²."""
    import cv2

    means, squares = [], []
    for frame in frames:
        mean, std = cv2.meanStdDev(_lab(frame))
        means.append(mean.ravel())
        squares.append(std.ravel() ** 2 + mean.ravel() ** 2)
    if not means:
        raise ValueError("no frames to measure")
    mean = np.mean(means, axis=0)
    std = np.sqrt(np.maximum(np.mean(squares, axis=0) - mean * mean, 0.0))
    return LabStats(tuple(float(v) for v in mean), tuple(float(v) for v in std))


def match_colors(frames: np.ndarray, reference: LabStats) -> tuple[np.ndarray, LabStats]:
    """The frames (uint8 [n, H, W, 3]) with their Lab mean and spread moved onto the reference's, and their own
    mean and spread before (what the settings record)."""
    import cv2

    own = lab_stats(frames)
    mean, ref_mean = np.array(own.mean), np.array(reference.mean)
    scale = np.clip(np.array(reference.std) / np.maximum(np.array(own.std), 1e-3), *SCALE_LIMITS)
    affine = np.hstack([np.diag(scale), (ref_mean - mean * scale)[:, None]]).astype(np.float32)  # per channel
    out = np.empty_like(frames)
    for i, frame in enumerate(frames):
        rgb = _rgb(cv2.transform(_lab(frame), affine))
        np.multiply(rgb, 255.0, out=rgb)
        np.clip(rgb, 0.0, 255.0, out=rgb)
        out[i] = np.rint(rgb)
    return out, own
