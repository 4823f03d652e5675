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

    return cv2.cvtColor(np.asarray(frame, dtype=np.float32) / 255.0, cv2.COLOR_RGB2Lab)


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
    """Mean and spread of L, a and b over every pixel of the frames (uint8 RGB), frame by frame to spare memory."""
    total = np.zeros(3)
    squares = np.zeros(3)
    count = 0
    for frame in frames:
        lab = _lab(frame).reshape(-1, 3).astype(np.float64)
        total += lab.sum(axis=0)
        squares += (lab * lab).sum(axis=0)
        count += lab.shape[0]
    if count == 0:
        raise ValueError("no frames to measure")
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean * mean, 0.0))
    return LabStats(tuple(float(v) for v in mean), tuple(float(v) for v in std))


def match_colors(frames: np.ndarray, reference: LabStats) -> np.ndarray:
    """The frames (uint8 [n, H, W, 3]) with their Lab mean and spread moved onto the reference's."""
    own = lab_stats(frames)
    mean, ref_mean = np.array(own.mean, np.float32), np.array(reference.mean, np.float32)
    scale = np.array(reference.std, np.float32) / np.maximum(np.array(own.std, np.float32), 1e-3)
    scale = np.clip(scale, *SCALE_LIMITS)
    out = np.empty_like(frames)
    for i, frame in enumerate(frames):
        lab = (_lab(frame) - mean) * scale + ref_mean
        lab[..., 0] = np.clip(lab[..., 0], 0.0, 100.0)
        out[i] = (np.clip(_rgb(lab), 0.0, 1.0) * 255.0).round().astype(np.uint8)
    return out
