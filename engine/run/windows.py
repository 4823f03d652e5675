"""A long video or an extension on a worker: window after window, each a pass of the model that starts from the
last frames of what is already made (the source video's, then the previous window's).

The new frames of every window are matched in colour to one reference (color.py) and written after the source's
own frames, so the result is one MP4: the source, then the continuation, at the source's size and frame rate.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
from PIL import Image

from .. import events as ev
from ..jobs import Job
from ..library.output import VideoWriter
from .color import LabStats, lab_stats, match_colors
from .generation import Checkpoint, Loaded, decoded_frames, denoise, prepared
from .pipeline_call import sampling_settings

SOURCE_CHUNK = 16  # source frames read between two stop checks


def make_windows(
    loaded: Loaded,
    job: Job,
    started: float,
    preview_every: int,
    checkpoint: Checkpoint,
    open_writer: Callable[[dict], VideoWriter | None],
) -> tuple[VideoWriter | None, dict[str, float], dict[str, Any]]:
    """Run every window of the job into one writer. `open_writer(sampling)` returns the writer, opened before any
    work (None on a parallel rank that only helps denoise: it still reads the source and decodes, since the next
    window starts from the frames). Returns the writer, the summed timings and what colour matching did."""
    valid = job.valid
    r = valid.request
    size = (r.width, r.height)
    overlap = r.overlap or 1
    count = len(valid.windows)
    # the first window's sampling is known before it runs (a continuation's passes run image-conditioned)
    sampling = sampling_settings(prepared(loaded, r, valid.image is not None or valid.source is not None), r)
    writer = open_writer(sampling)
    reach = max(overlap, *(w.frames for w in valid.windows))  # frames kept: a window's worth, the colour reference
    tail: deque[np.ndarray] = deque(maxlen=reach)
    reference: LabStats | None = None
    written = 0
    timings = {"encode": 0.0, "denoise": 0.0, "decode": 0.0, "color": 0.0}
    steps: list[float] = []
    matched: list[dict] = []
    try:
        if valid.source is not None:  # read once: written as it is, its end kept to start from
            for frame in valid.source.frames_at(size):
                if writer is not None:
                    writer.write(frame[None])  # no Frames events: the user has these (a job keeps every event)
                tail.append(frame)
                written += 1
                if written % SOURCE_CHUNK == 0:
                    checkpoint(job, "reading the source video")
            if r.color_match:
                own = valid.source.reference
                reference = LabStats(tuple(own["mean_lab"]), tuple(own["std_lab"])) if own else lab_stats(tail)
        for window in valid.windows:
            job.emit(ev.Window(job.id, window.index + 1, count, window.frames, window.new))
            start_frames = np.stack(list(tail)[-overlap:]) if tail else None
            image = valid.image if start_frames is None else Image.fromarray(start_frames[0])
            last = valid.last_image if window.index == count - 1 else None
            one = replace(r, prompt=window.prompt, seed=window.seed, frames=window.frames)
            one_valid = replace(valid, request=one, image=image, last_image=last)
            pinned = start_frames if start_frames is not None and overlap > 1 else None
            later = (count - window.index - 1) * r.steps
            latents, said, _ = denoise(loaded, job, started, preview_every, checkpoint, one_valid, pinned, later)
            timings["encode"] += said["encode"]
            timings["denoise"] += said["denoise"]
            steps.append(said["step_mean"])
            t0 = time.perf_counter()
            frames = np.concatenate(list(decoded_frames(loaded, job, latents, checkpoint)))
            timings["decode"] += time.perf_counter() - t0
            if start_frames is not None:
                frames = frames[overlap:]  # the overlap is already in the video: it is written once
            t0 = time.perf_counter()
            if reference is not None and start_frames is not None:
                frames, before = match_colors(frames, reference)
                matched.append({"window": window.index + 1, "before": before.settings()})
            timings["color"] += time.perf_counter() - t0
            if writer is not None:
                writer.write(frames)
            job.emit(ev.Frames(job.id, written, frames))
            written += len(frames)
            tail.extend(frames)
            if reference is None and r.color_match:  # a long video from scratch: its first window is the reference
                reference = lab_stats(tail)
    except BaseException:
        if writer is not None:
            writer.abort()  # a stop or a failure in any window: no partial file is left
        raise
    timings["step_mean"] = sum(steps) / max(1, len(steps))
    origin = None
    if reference is not None:
        origin = "first window" if valid.source is None else (
            "the source's own reference" if valid.source.reference else "the source's last frames"
        )  # fmt: skip
    record = {"reference": reference.settings() if reference else None, "from": origin, "windows": matched}
    return writer, timings, record
