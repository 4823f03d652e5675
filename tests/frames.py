"""Comparing the frames of two runs: exactly when both took the same path, within one step of 255 when not.

The same kernels on the same data give the same bits on every CPU, so a rerun, a reused setting or a job after a
LoRA is detached must match exactly (a promise to users). Two different execution paths (weights streamed from
disk, a converted single file, the text encoder run on its own) compute the same sums in another order or with
other kernels: which of two neighbouring uint8 values a frame rounds to then depends on the CPU (an AMD EPYC gave a
1 in 0.003% of the values where an Intel gave 0), so those are compared within one step of 255.
"""

from __future__ import annotations

import numpy as np

ROUNDING_STEPS = 1  # of 255: the most two paths may differ by in any value of a decoded uint8 frame


def assert_same_video_within_rounding(a: np.ndarray, b: np.ndarray, why: str) -> None:
    """`why`: what differs between the two paths (said when the check fails)."""
    assert a.shape == b.shape, f"{why}: shapes {a.shape} and {b.shape}"
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    worst = int(diff.max())
    assert worst <= ROUNDING_STEPS, (
        f"{why}: frames differ by up to {worst}/255 in {np.count_nonzero(diff)} of {diff.size} values "
        f"(rounding allows {ROUNDING_STEPS})"
    )
