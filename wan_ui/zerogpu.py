"""Hugging Face ZeroGPU: there the GPU exists only inside a function decorated with spaces.GPU, which runs in a
forked process for a duration we declare up front. Elsewhere (no `spaces` package, or not on ZeroGPU hardware)
nothing here changes how the studio runs."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterator

from engine import Engine, Event, GenerationRequest, ModelSpec

# Seconds per (frame x pixel x step) on the GPU, from the 90 s target for ti2v-5b at 1280x704x121, 50 steps
# (issue 5); declared durations get a margin and a floor for loading the weights onto the GPU.
SECONDS_PER_UNIT = 90 / (1280 * 704 * 121 * 50)
MARGIN = 1.5
FLOOR_S = 60
CEILING_S = 900


def active() -> bool:
    """True on ZeroGPU hardware with the `spaces` package installed."""
    flag = os.environ.get("SPACES_ZERO_GPU", "").strip().lower() in ("1", "true")
    return flag and importlib.util.find_spec("spaces") is not None


def gpu_seconds(request: GenerationRequest, spec: ModelSpec) -> int:
    """The GPU time to ask for: frames x pixels x steps of this request, scaled from a measured reference."""
    frames = request.frames or spec.frames
    pixels = (request.width or spec.width) * (request.height or spec.height)
    steps = request.steps or spec.steps
    work = frames * pixels * steps * (2 if spec.moe else 1)  # A14B experts are ~2.8x the 5B per token; a rough 2x
    return int(min(CEILING_S, max(FLOOR_S, FLOOR_S / 2 + MARGIN * SECONDS_PER_UNIT * work)))


def gpu_events(engine: Engine) -> Callable[[GenerationRequest], Iterator[Event]]:
    """A function that runs one generation where the GPU is and yields its events (decorated on ZeroGPU)."""

    def generate(request: GenerationRequest) -> Iterator[Event]:
        yield from engine.run_here(request).events(latest_preview_only=True)

    if not active():
        return generate
    import spaces

    return spaces.GPU(generate, duration=lambda request: gpu_seconds(request, engine.spec))
