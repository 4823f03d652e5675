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


def write_video(path, frames: np.ndarray, fps: int = 8, lossless: bool = True) -> str:
    """An MP4 of uint8 frames [n, H, W, 3] for a test to continue; lossless keeps every frame's pixels independent
    of the others (a change to one frame changes no other frame's decoded pixels)."""
    import imageio_ffmpeg

    height, width = frames.shape[1:3]
    params = ["-qp", "0", "-g", "1"] if lossless else []
    writer = imageio_ffmpeg.write_frames(
        str(path), (width, height), fps=fps, codec="libx264", pix_fmt_out="yuv444p", macro_block_size=1,
        output_params=params,
    )  # fmt: skip
    writer.send(None)
    for frame in frames:
        writer.send(np.ascontiguousarray(frame))
    writer.close()
    return str(path)


def read_video(path) -> np.ndarray:
    """Every frame of a video file as uint8 [n, H, W, 3]."""
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    width, height = meta["size"]
    return np.stack([np.frombuffer(f, np.uint8).reshape(height, width, 3) for f in reader])
