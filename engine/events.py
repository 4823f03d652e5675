"""Typed events a job emits, in this order: Queued*, Loading*, Notice*, (Step, Preview?)*, Decoding/Frames*, then
exactly one of Done, Failed, Cancelled (a load job ends with Ready instead of Done, a refine job with Refined).
A long video or an extension repeats the steps and decoding once per window, each after a Window event."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Event:
    job_id: int


@dataclass(frozen=True)
class Queued(Event):
    position: int  # jobs ahead of this one, the running ones included (0: starts now)
    busy: int = 0  # of those, the ones running now (one per busy worker)
    workers: int = 1  # workers that take jobs from the queue


@dataclass(frozen=True)
class Loading(Event):
    stage: str  # "resolve", "download", "load <component>", "memory", "ready"
    fraction: float  # 0..1 over the whole load
    message: str


@dataclass(frozen=True)
class Notice(Event):
    message: str


@dataclass(frozen=True)
class Window(Event):
    """A window of a long video starts: the steps, previews and decoding that follow are this window's."""

    index: int  # 1-based
    count: int
    frames: int  # frames this pass makes
    new: int  # frames it adds to the video


@dataclass(frozen=True)
class Step(Event):
    index: int  # 1-based
    total: int
    phase: str  # "high-noise", "low-noise" (MoE) or "denoise"
    timestep: float
    elapsed: float  # seconds since the job started running
    eta: float | None  # seconds left, from measured step times (None before the first step ends)


@dataclass(frozen=True)
class Preview(Event):
    step: int  # 1-based step this preview follows
    frames: np.ndarray = field(repr=False)  # uint8 [latent frames, h, w, 3]: the denoised estimate in RGB


@dataclass(frozen=True)
class Decoding(Event):
    done: int  # latent frames decoded so far
    total: int


@dataclass(frozen=True)
class Frames(Event):
    start: int  # index in the video of the first frame of this chunk (an extension's own frames are not sent)
    frames: np.ndarray = field(repr=False)  # uint8 [n, H, W, 3]


@dataclass(frozen=True)
class Done(Event):
    path: str
    settings: dict[str, Any] = field(repr=False)
    seed: int = 0
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Failed(Event):
    message: str
    kind: str = "error"  # "request", "model", "oom", "output", "error"


@dataclass(frozen=True)
class Cancelled(Event):
    message: str


@dataclass(frozen=True)
class Ready(Event):
    """End of a load job: the model is loaded and placed."""

    model: str
    memory: str
    reason: str


@dataclass(frozen=True)
class Refined(Event):
    """End of a refine job: the refined prompt (a RefinedPrompt; after a fallback its notice says why)."""

    result: Any


TERMINAL = (Done, Ready, Refined, Failed, Cancelled)
