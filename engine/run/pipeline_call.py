"""How a resolved request maps onto a diffusers Wan pipeline call (shared by the engine and the benchmarks)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:  # only named in annotations: the run never reaches back up to admission
    from ..admission.request import GenerationRequest


def set_shift(pipe, shift: float) -> None:
    """The request's shift (the preset's, the folder's or the user's) on the model's own scheduler class."""
    config = pipe.scheduler.config
    key = "flow_shift" if "flow_shift" in config else "shift"
    if key in config and config[key] != shift:
        pipe.scheduler = type(pipe.scheduler).from_config(config, **{key: shift})


def prepare_call(pipe, r: GenerationRequest) -> None:
    """Per-job pipeline state that lives in the pipeline, not in the call's arguments: shift and expert boundary."""
    set_shift(pipe, r.shift)
    if r.boundary is not None and pipe.config.get("boundary_ratio") != r.boundary:
        pipe.register_to_config(boundary_ratio=r.boundary)


def sampling_settings(pipe, r: GenerationRequest) -> dict[str, Any]:
    """What the denoising actually used, for the saved settings: the scheduler, its shift, the boundary, guidance."""
    from ..catalog import scheduler_shift

    config = dict(pipe.scheduler.config)
    return {
        "scheduler": type(pipe.scheduler).__name__,
        "shift": scheduler_shift(config),
        "boundary": pipe.config.get("boundary_ratio"),
        "guidance": r.guidance,
        "guidance_2": r.guidance_2 if pipe.config.get("boundary_ratio") is not None else None,
        "scheduler_config": {k: v for k, v in config.items() if not k.startswith("_")},
    }


def pipeline_kwargs(
    pipe, r: GenerationRequest, image: Any = None, output_type: str = "latent", last_image: Any = None
) -> dict[str, Any]:
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
    if last_image is not None:  # I2V-A14B only (validate refuses it elsewhere): the frame the video ends on
        kwargs["last_image"] = last_image
    return kwargs


@contextlib.contextmanager
def pinned_frames(pipe, frames: np.ndarray | None) -> Iterator[int]:
    """Condition the first latent frames of a 5B image-to-video call on several video frames, not one image.

    The 5B pipeline gives every latent frame its own timestep and keeps the first one at t = 0 with the encoded
    image in it; diffusers stops at one frame, so for a window that overlaps the previous one by 1 + 4k frames we
    encode those frames (k + 1 latent frames, the VAE being causal) and pin all of them the same way, around the
    pipeline's own prepare_latents. Yields how many latent frames are pinned (1 without `frames`).
    """
    if frames is None or len(frames) <= 1:
        yield 1
        return
    from diffusers.pipelines.wan.pipeline_wan_i2v import retrieve_latents
    from diffusers.utils.torch_utils import get_module_execution_device

    original = pipe.prepare_latents
    count = (len(frames) - 1) // 4 + 1

    def prepare(*args, **kwargs):
        latents, condition, mask = original(*args, **kwargs)
        video = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2).unsqueeze(0)
        video = video.float() / 127.5 - 1.0  # what the pipeline's image preprocessing makes of a picture
        vae = pipe.vae
        video = video.to(get_module_execution_device(vae), vae.dtype)
        encoded = retrieve_latents(vae.encode(video), sample_mode="argmax")
        encoded = encoded.to(condition.device, condition.dtype)
        mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1).to(encoded)
        std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1).to(encoded)
        whole = condition.new_zeros(latents.shape)  # diffusers' holds the one image frame, broadcast in its use
        whole[:, :, :count] = (encoded - mean) / std
        mask = mask.clone()
        mask[:, :, :count] = 0
        return latents, whole, mask

    pipe.prepare_latents = prepare
    try:
        yield count
    finally:
        del pipe.prepare_latents  # the class's own method again


def encode_on_cpu(pipe, r: GenerationRequest, device: torch.device) -> dict[str, Any]:
    """The prompt embeddings made by a text encoder kept on the CPU (--text-encoder-device cpu, as the official
    --t5_cpu), moved to `device`: they replace prompt and negative_prompt in the call, so the pipeline never runs
    the text encoder itself."""
    cfg = r.guidance > 1.0 or (pipe.config.boundary_ratio is not None and (r.guidance_2 or 0) > 1.0)
    with torch.no_grad():
        positive, negative = pipe.encode_prompt(
            r.prompt,
            r.negative_prompt,
            do_classifier_free_guidance=cfg,
            max_sequence_length=MAX_TEXT_TOKENS,
            device=torch.device("cpu"),
            dtype=pipe.text_encoder.dtype,
        )
    out: dict[str, Any] = {"prompt": None, "negative_prompt": None, "prompt_embeds": positive.to(device)}
    if negative is not None:
        out["negative_prompt_embeds"] = negative.to(device)
    return out


MAX_TEXT_TOKENS = 512  # the Wan pipelines' max_sequence_length: umT5 reads this many tokens, the rest is cut


def truncation_notices(pipe, r: GenerationRequest, max_tokens: int = MAX_TEXT_TOKENS) -> list[str]:
    """Say where the text encoder stops reading a long prompt (the pipeline cuts it silently)."""
    from diffusers.pipelines.wan.pipeline_wan import prompt_clean

    tokenizer = getattr(pipe, "tokenizer", None)
    if tokenizer is None:
        return []
    notices = []
    for name, text in (("prompt", r.prompt), ("negative prompt", r.negative_prompt)):
        if not text or len(text) < max_tokens:  # every token covers at least one character
            continue
        ids = tokenizer(prompt_clean(text), add_special_tokens=True, verbose=False).input_ids
        if len(ids) > max_tokens:
            kept = tokenizer.decode(ids[:max_tokens], skip_special_tokens=True).split()
            tail = " ".join(kept[-6:]) if kept else ""
            notices.append(
                f"The {name} is {len(ids)} tokens long and the model reads the first {max_tokens}: "
                f"everything after “…{tail[-80:]}” is ignored."
            )
    return notices
