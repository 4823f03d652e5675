"""The stages of one generation after the model is loaded: denoise, decode into the MP4, the settings saved with it.

They live apart from Engine (the queue and the public facade) and see only what a job needs: the loaded pipeline,
its memory switch and the job itself.
"""

from __future__ import annotations

import datetime as _dt
import functools
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import events as ev
from ..catalog import ModelSpec
from ..jobs import Job
from ..library.output import SETTINGS_FORMAT, VideoWriter, check_outputs_dir, to_uint8, video_stems
from ..models.memory import ExpertSwitch, MemoryPlan, set_vae_tiling, vae_tiling_reason
from ..models.placement import Placement
from .adapters import Adapters
from .decode import denormalize, stream_decode
from .pipeline_call import encode_on_cpu, pinned_frames, pipeline_kwargs, prepare_call, sampling_settings
from .preview import denoised_estimate, latents_to_rgb
from .speed import SpeedState
from .views import CALLBACK_TENSORS, pipeline_view

APP_VERSION = "0.1.0"
log = logging.getLogger("wan_studio.engine")


class Cancelled(Exception):
    """The job asked to stop; args[0] names the stage it stopped in."""


@dataclass
class Loaded:
    """The loaded model as the stages use it (one per load; Engine keeps it)."""

    pipe: Any
    plan: MemoryPlan
    placement: Placement | None
    speed: SpeedState | None
    switch: ExpertSwitch
    device: torch.device
    views: dict  # the other pipeline class over the same components (views.py)
    adapters: Adapters  # the LoRAs attached to its transformers
    storage: dict = field(default_factory=dict)  # component -> storage type, bytes, file (storage.record)
    text_on_cpu: bool = False  # the text encoder stays on the CPU and runs there (encode_on_cpu)


Checkpoint = Callable[[Job, str], None]  # raises Cancelled, or a test's injected fault


def prepared(loaded: Loaded, r: Any, with_image: bool) -> Any:
    """The pipeline object a pass runs on (text or image conditioned), with the pass's shift and boundary set."""
    pipe = pipeline_view(loaded.pipe, with_image, loaded.views)
    prepare_call(pipe, r)
    return pipe


def denoise(
    loaded: Loaded,
    job: Job,
    started: float,
    preview_every: int,
    checkpoint: Checkpoint,
    valid: Any = None,
    pinned: Any = None,
    steps_after: int = 0,
) -> tuple[torch.Tensor, dict[str, float], dict]:
    """Run the diffusers pipeline to latents, streaming steps and previews; cancel and the expert switch per step.

    `valid` is one pass of the job (a window of a long video; default: the whole job), `pinned` the video frames
    a 5B window starts from (pipeline_call.pinned_frames), `steps_after` the steps of the windows still to come
    (the ETA covers the whole video)."""
    valid = valid or job.valid
    r = valid.request
    pipe = prepared(loaded, r, valid.image is not None)
    encodes = 0 if valid.image is None else (1 if pipe.config.expand_timesteps else r.frames)
    tiling = vae_tiling_reason(loaded.device, r.width, r.height, encodes)
    set_vae_tiling(pipe.vae, tiling)  # once, before the call: the I2V condition encode runs inside it
    if tiling:
        job.emit(ev.Notice(job.id, tiling))
    sampling = sampling_settings(pipe, r)
    loaded.switch.before_job()
    boundary = pipe.config.boundary_ratio
    boundary_t = None if boundary is None else boundary * pipe.scheduler.config.num_train_timesteps
    z_dim = pipe.vae.config.z_dim
    image_first_frame = valid.image is not None and bool(pipe.config.expand_timesteps)
    held = 1  # latent frames the 5B keeps at t = 0 (the image, or a window's overlap)
    marks: dict[str, float] = {}
    step_times: list[float] = []

    def first_forward(_module, _args):
        marks.setdefault("denoise_start", time.perf_counter())

    hooks = [m.register_forward_pre_hook(first_forward) for m in (pipe.transformer, pipe.transformer_2) if m]

    def on_step_end(p, i: int, t, tensors: dict[str, Any]) -> dict:
        now = time.perf_counter()
        step_times.append(now - marks.get("last_step", marks.get("denoise_start", now)))
        marks["last_step"] = now
        total = r.steps
        tv = float(t)
        phase = "denoise" if boundary_t is None else ("high-noise" if tv >= boundary_t else "low-noise")
        recent = step_times[-5:]
        eta = (total - i - 1 + steps_after) * sum(recent) / len(recent)
        job.emit(ev.Step(job.id, i + 1, total, phase, tv, now - started, eta))
        if preview_every and ((i + 1) % preview_every == 0 or i + 1 == total):
            sigma = float(p.scheduler.sigmas[i])
            x0 = denoised_estimate(tensors["latent_model_input"], tensors["noise_pred"], sigma)
            if image_first_frame:  # TI2V: the first latent frames are the image itself (t = 0)
                x0[:, :, :held] = tensors["latent_model_input"][:, :z_dim, :held].float()
            rgb = latents_to_rgb(x0)
            if rgb is not None:
                job.emit(ev.Preview(job.id, i + 1, rgb))
        try:
            checkpoint(job, f"step {i + 1}")
        except Cancelled:
            p._interrupt = True
            return {}
        if boundary_t is not None and i + 1 < total and float(p.scheduler.timesteps[i + 1]) < boundary_t:
            loaded.switch.at_boundary()
        return {}

    kwargs = pipeline_kwargs(pipe, r, valid.image, last_image=valid.last_image)
    if loaded.text_on_cpu:
        kwargs.update(encode_on_cpu(pipe, r, loaded.device))  # the pipeline casts them to the transformer's dtype
    kwargs.update(callback_on_step_end=on_step_end, callback_on_step_end_tensor_inputs=CALLBACK_TENSORS)
    call_start = time.perf_counter()
    try:
        with pinned_frames(pipe, pinned) as held:
            latents = pipe(**kwargs).frames
    finally:
        for h in hooks:
            h.remove()
    if job.cancel_requested:
        raise Cancelled("denoising")
    end = time.perf_counter()
    denoise_start = marks.get("denoise_start", call_start)
    timings = {
        "encode": denoise_start - call_start,
        "denoise": end - denoise_start,
        "step_mean": sum(step_times) / max(1, len(step_times)),
    }
    return latents, timings, sampling


def decode(
    loaded: Loaded,
    job: Job,
    latents: torch.Tensor,
    settings: dict,
    outputs: Path,
    checkpoint: Checkpoint,
    filenames: str = "prompt",
    embed_prompt: bool = True,
) -> tuple[VideoWriter, float]:
    """Decode chunk by chunk straight into a hidden partial MP4 (the studio publishes it once the writer is closed);
    `filenames` picks the name (output.video_stems), `embed_prompt` whether the MP4's own settings hold texts."""
    t0 = time.perf_counter()
    writer = open_writer(job, settings, outputs, filenames, embed_prompt)
    try:
        start = 0
        for frames in decoded_frames(loaded, job, latents, checkpoint):
            writer.write(frames)
            job.emit(ev.Frames(job.id, start, frames))
            start += len(frames)
    except BaseException:
        writer.abort()
        raise
    return writer, time.perf_counter() - t0


def open_writer(job: Job, settings: dict, outputs: Path, filenames: str, embed_prompt: bool) -> VideoWriter:
    """The hidden partial MP4 of the job's video, named by `filenames` (output.video_stems)."""
    r = job.valid.request
    folder = check_outputs_dir(outputs)
    stems = video_stems(_dt.datetime.now(), r.seed, job.id, r.prompt)
    return VideoWriter(
        folder, stems[filenames], r.width, r.height, r.fps, settings, plain_stem=stems["plain"], embed_text=embed_prompt
    )


def decoded_frames(loaded: Loaded, job: Job, latents: torch.Tensor, checkpoint: Checkpoint) -> Iterator[np.ndarray]:
    """The latents decoded chunk by chunk as uint8 frames [n, H, W, 3], with a Decoding event after each chunk."""
    from diffusers.utils.torch_utils import get_module_execution_device

    pipe = loaded.pipe
    vae = pipe.vae
    z = denormalize(vae, latents.to(get_module_execution_device(vae), vae.dtype))
    total = z.shape[2]
    for index, chunk in enumerate(stream_decode(vae, z)):
        video = pipe.video_processor.postprocess_video(chunk, output_type="np")[0]
        yield to_uint8(video)
        job.emit(ev.Decoding(job.id, index + 1, total))
        checkpoint(job, "decoding")


def video_settings(
    loaded: Loaded,
    job: Job,
    spec: ModelSpec,
    device_name: str,
    timings: dict[str, float],
    sampling: dict,
    loras: list[dict[str, Any]],
) -> dict[str, Any]:
    """Everything that made the video, saved inside it and beside it (request_from_settings reads it back)."""
    valid = job.valid
    return {
        "format": SETTINGS_FORMAT,
        "app_version": APP_VERSION,
        "created": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "model": spec.id,
        "model_source": spec.source or spec.id,
        "model_revision": getattr(loaded.pipe, "studio_revision", None),
        "family": spec.family,
        "request": valid.request.settings(),
        "image": None if valid.image is None else {"width": valid.image.width, "height": valid.image.height},
        "last_image": None
        if valid.last_image is None
        else {"width": valid.last_image.width, "height": valid.last_image.height},  # fmt: skip
        "source": None if valid.source is None else valid.source.settings(),  # the video an extension continues
        "windows": [w.settings() for w in valid.windows],  # a long video's passes; [] for one pass
        "total_frames": valid.total_frames,
        "sampling": sampling,
        "loras": loras,  # name, files with sha256, strengths, recommended settings (adapters.Adapters.use)
        "lora_recommended_applied": dict(valid.recommended),
        "batch": valid.request.extra.get("batch"),  # id, index, count and what varied (variations.py); None alone
        "memory": {
            "mode": loaded.plan.mode,
            "reason": loaded.plan.reason,
            "placement": loaded.placement.settings() if loaded.placement else None,
        },
        "speed": loaded.speed.settings() if loaded.speed else None,
        "weights": loaded.storage,  # storage type, bytes and source file (with sha256) of every component
        "device": device_name,
        "notices": list(valid.notices),
        "timings": dict(timings),
        "versions": {"torch": torch.__version__, "diffusers": version("diffusers")},
    }


@functools.cache
def version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"
