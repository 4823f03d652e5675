"""Long videos as windows: one pass of the model each, every pass after the first continuing from the last frames
of what is already made. Pure arithmetic over frame counts, so the plan is known (and recorded) before any work."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..catalog import ModelSpec
from ..errors import RequestError

MAX_PASSES = 4  # a long video is at most this many times the model's longest single pass


@dataclass(frozen=True)
class Window:
    index: int  # 0-based
    frames: int  # frames this pass makes (4k+1)
    new: int  # frames it adds to the video: all of them for a first pass, the rest after the overlap otherwise
    prompt: str
    seed: int

    def settings(self) -> dict:
        return {"index": self.index + 1, "frames": self.frames, "new_frames": self.new, "prompt": self.prompt,
                "seed": self.seed}  # fmt: skip


def continues(spec: ModelSpec) -> bool:
    """A model can continue a video when it takes an image to start from (the 5B, I2V-A14B)."""
    return spec.accepts_image


def who_continues(spec: ModelSpec) -> str:
    return (
        f"{spec.id} makes video from text only, and continuing a video starts each window from the last frame "
        "of the one before, which needs a model that takes an image: use TI2V-5B or I2V-A14B"
    )


def overlaps(spec: ModelSpec, window: int) -> tuple[int, ...]:
    """The overlaps a model can take: whole latent frames (1 + 4k) on the 5B, whose per-frame timesteps pin any
    number of first latent frames; one frame on I2V-A14B, whose condition is a single image. At most half a window."""
    if spec.family != "ti2v":
        return (1,)
    return tuple(range(1, max(1, (window - 1) // 2) + 1, 4))


def window_prompts(prompt: str) -> list[str]:
    """One prompt per window when the text has several lines (blank lines skipped), else the whole text."""
    lines = [line.strip() for line in prompt.splitlines() if line.strip()]
    return lines if len(lines) > 1 else [prompt]


def plan(added: int, window: int, overlap: int, first: bool, prompt: str, seed: int) -> tuple[list[Window], list[str]]:
    """Windows that add exactly `added` frames (4k, or 4k+1 when `first`: the first pass starts the video), each
    pass at most `window` frames, spread evenly so no window is a sliver. Returns the windows and notices."""
    most = (window - 1) // 4  # a pass's frames past its first, in latent frames (4 video frames each)
    held = (overlap - 1) // 4  # of those, the ones the overlap pins
    quads = (added - 1) // 4 if first else added // 4
    if first:
        count = 1 + max(0, math.ceil((quads - most) / (most - held)))
    else:
        count = max(1, math.ceil(quads / (most - held)))
    spread = quads + (count - (1 if first else 0)) * held  # the passes' own latent frames past their first
    sizes = [spread // count + (1 if i < spread % count else 0) for i in range(count)]
    prompts = window_prompts(prompt)
    notices = []
    if len(prompts) > count:
        unused = f"line {count + 1} is" if len(prompts) == count + 1 else f"lines {count + 1}-{len(prompts)} are"
        windows_said = "1 window" if count == 1 else f"{count} windows"
        notices.append(f"The prompt has {len(prompts)} lines for {windows_said}: {unused} not used.")
    windows = []
    for i, size in enumerate(sizes):
        frames = 4 * size + 1
        new = frames if first and i == 0 else frames - overlap
        windows.append(Window(i, frames, new, prompts[min(i, len(prompts) - 1)], (seed + i) % 2**32))
    return windows, notices


def check_overlap(spec: ModelSpec, value: int | None, window: int) -> int:
    allowed = overlaps(spec, window)
    overlap = 1 if value is None else value
    if overlap not in allowed:
        if len(allowed) == 1:
            why = f"{spec.id} continues from one frame (its condition is a single image), so overlap must be 1"
        else:
            listed = ", ".join(str(a) for a in allowed)
            why = (
                f"overlap must be one of {listed} on {spec.id}: whole latent frames (1 + 4k) and at most half "
                f"a window of {window} frames"
            )
        raise RequestError("overlap", f"{why}; got {overlap}.")
    return overlap
