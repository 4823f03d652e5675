"""How a resolved request maps onto a diffusers Wan pipeline call (shared by the engine and the benchmarks)."""

from __future__ import annotations

from typing import Any

import torch

from .request import GenerationRequest


def set_shift(pipe, shift: float) -> None:
    """The preset's shift wins over the scheduler config the model shipped with."""
    config = pipe.scheduler.config
    key = "flow_shift" if "flow_shift" in config else "shift"
    if key in config and config[key] != shift:
        pipe.scheduler = type(pipe.scheduler).from_config(config, **{key: shift})


def pipeline_kwargs(pipe, r: GenerationRequest, image: Any = None, output_type: str = "latent") -> dict[str, Any]:
    """Keyword arguments for pipe(...) from a request whose values are all resolved (see validate)."""
    kwargs: dict[str, Any] = {
        "prompt": r.prompt,
        "negative_prompt": r.negative_prompt,
        "height": r.height,
        "width": r.width,
        "num_frames": r.frames,
        "num_inference_steps": r.steps,
        "guidance_scale": r.guidance,
        "generator": torch.Generator("cpu").manual_seed(r.seed),  # CPU noise: the same video on any device
        "output_type": output_type,
    }
    if pipe.config.boundary_ratio is not None:
        kwargs["guidance_scale_2"] = r.guidance_2
    if image is not None:
        kwargs["image"] = image
    return kwargs
