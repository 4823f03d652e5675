"""Shape-faithful GPU benchmark: the published Wan2.2 configurations with random weights, at the published sizes.

Nothing is downloaded. The components are built from their published configurations directly on the GPU (bf16
transformers and text encoder, float32 VAE, the modules diffusers keeps in float32 kept so), then handed to the
engine's own memory and speed code exactly as a loaded model would be. Compute and memory do not depend on weight
values, so times and peaks are true; outputs are noise.

What one variant measures: text encoding (with everything before the first transformer forward), every denoising
step (synchronised), the MoE expert switch, the VAE decode (the engine's streaming decode; the bare baseline's own
decode), the peak GPU memory of the prompt+denoise phase and of the decode (max_memory_allocated and
max_memory_reserved), and the peak host RSS (sampled every 50 ms).

How the totals are extrapolated: a run makes --steps steps (A14B: the boundary is moved so that the switch falls
mid-run). The first step is warm-up (and compilation, with --compile) and the first low-noise step carries the
switch; the median of the remaining steps times the official step count (5B: 50, A14B: 40), plus the switch, plus
the measured encode and decode, is the end-to-end estimate.

Variants (names for --only, which takes comma-separated substrings):
    <fam>/none, /model, /group       our memory modes at the whole device (the peaks table comes from these)
    <fam>/baseline                   bare diffusers with enable_model_cpu_offload(), same sizes, steps and seed
    <fam>/auto@24, /auto@48, /auto@80 the planner's choice under a per-process memory limit, run to the end
    <fam>/fp8                        mode none with fp8 weight storage (memory saved against <fam>/none)
    <fam>/fbc                        First Block Cache against uncached, same seed: speed-up and PSNR of the video
    <fam>/compile                    regional torch.compile: compile time apart from the steady step time
    <fam>/sequential                 sequential offload (slow; not in the default sweep)
families: 5b (1280x704x121), a14b-720 (1280x720x81), a14b-480 (832x480x81), i2v-720 (not in the default sweep).

    python benchmarks/gpu_bench.py --only 5b --out bench-5b              # about 8 minutes on one H100 (estimate)
    python benchmarks/gpu_bench.py --only a14b --out bench-a14b          # about 9.5 minutes on one H100 (estimate)
    python benchmarks/gpu_bench.py --scale tiny --steps 1 --out /tmp/b   # the same code on CPU (CI smoke test)
    python benchmarks/gpu_bench.py --estimate-peaks --write-peaks presets/memory_peaks.json
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import json
import math
import os
import platform
import shlex
import statistics
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from engine.admission.request import GenerationRequest, validate  # noqa: E402
from engine.catalog import builtin_specs  # noqa: E402
from engine.library.output import to_uint8  # noqa: E402
from engine.models.memory import (  # noqa: E402
    GIB,
    VAE_DECODE_BYTES_PER_PIXEL,
    ExpertSwitch,
    apply_memory,
    component_bytes,
    free_vram,
    load_peaks,
    plan_memory,
    set_vae_tiling,
    vae_tiling_reason,
)
from engine.run.decode import denormalize, stream_decode  # noqa: E402
from engine.run.pipeline_call import pipeline_kwargs, set_shift  # noqa: E402
from engine.run.speed import SpeedOptions, apply_compile, apply_speed  # noqa: E402

PROMPT = "a red fox runs through fresh snow in a pine forest at dawn, cinematic, slow tracking shot"
SEED = 42

# ----- published configurations (DESIGN.md section 2; diffusers' converted Wan2.2 repos) --------------------------

TRANSFORMER_5B = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=24,
    attention_head_dim=128,
    in_channels=48,
    out_channels=48,
    text_dim=4096,
    freq_dim=256,
    ffn_dim=14336,
    num_layers=30,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
    rope_max_seq_len=1024,
)
TRANSFORMER_A14B = dict(TRANSFORMER_5B, num_attention_heads=40, in_channels=16, out_channels=16, ffn_dim=13824)
TRANSFORMER_A14B.update(num_layers=40)
TRANSFORMER_I2V_A14B = dict(TRANSFORMER_A14B, in_channels=36)
UMT5_XXL = dict(
    vocab_size=256384,
    d_model=4096,
    d_kv=64,
    d_ff=10240,
    num_layers=24,
    num_heads=64,
    relative_attention_num_buckets=32,
    relative_attention_max_distance=128,
    feed_forward_proj="gated-gelu",
    layer_norm_epsilon=1e-6,
    tie_word_embeddings=False,
    pad_token_id=0,
    eos_token_id=1,
)
VAE_WAN21 = dict(
    base_dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, temperal_downsample=[False, True, True]
)
VAE_WAN22 = dict(
    VAE_WAN21,
    base_dim=160,
    decoder_base_dim=256,
    z_dim=48,
    is_residual=True,
    in_channels=12,
    out_channels=12,
    patch_size=2,
    scale_factor_spatial=16,
    scale_factor_temporal=4,
    latents_mean=[0.0] * 48,
    latents_std=[1.0] * 48,
)


@dataclass(frozen=True)
class Family:
    key: str  # name used in variant names
    model: str  # catalog id (defaults: steps, guidance, shift, boundary)
    tiny: str  # tiny catalog id for --scale tiny
    size: tuple[int, int, int]
    transformer: dict
    vae: dict
    experts: int
    i2v: bool = False


FAMILIES = {
    "5b": Family("5b", "ti2v-5b", "tiny-ti2v", (1280, 704, 121), TRANSFORMER_5B, VAE_WAN22, 1),
    "a14b-720": Family("a14b-720", "t2v-a14b", "tiny-t2v-moe", (1280, 720, 81), TRANSFORMER_A14B, VAE_WAN21, 2),
    "a14b-480": Family("a14b-480", "t2v-a14b", "tiny-t2v-moe", (832, 480, 81), TRANSFORMER_A14B, VAE_WAN21, 2),
    "i2v-720": Family("i2v-720", "i2v-a14b", "tiny-i2v-moe", (1280, 720, 81), TRANSFORMER_I2V_A14B, VAE_WAN21, 2, True),
}
# Default sweep, in priority order (the time budget drops the tail). Estimated seconds on one H100, from DESIGN.md
# section 5 (~2 s a 5B step, ~20 s an A14B 720p step, ~6 s at 480p) plus build, transfers and decode.
DEFAULT_SWEEP = [
    ("5b/none", 36),
    ("5b/baseline", 41),
    ("5b/auto@24", 45),
    ("5b/auto@48", 36),
    ("5b/fp8", 36),
    ("5b/fbc", 90),
    ("5b/model", 41),
    ("5b/group", 45),
    ("5b/compile", 100),
    ("a14b-720/none", 125),
    ("a14b-720/baseline", 135),
    ("a14b-720/auto@48", 125),
    ("a14b-720/auto@24", 130),
    ("a14b-480/none", 55),
]
OPTIONAL = ["5b/sequential", "5b/auto@80", "a14b-720/model", "a14b-720/group", "a14b-720/fp8", "a14b-720/auto@80"]
OPTIONAL += ["a14b-480/model", "a14b-480/group", "a14b-480/fbc", "a14b-480/fp8", "a14b-480/baseline"]
OPTIONAL += ["i2v-720/none", "i2v-720/auto@48", "i2v-720/auto@24"]


# ----- building the pipelines -------------------------------------------------------------------------------------


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def _transformer(config: dict, device: torch.device):
    from diffusers import WanTransformer3DModel

    with torch.device(device), _default_dtype(torch.bfloat16):
        model = WanTransformer3DModel(**config)
    # as from_pretrained(dtype=bf16) leaves them: the modules the model keeps in float32
    keep = model._keep_in_fp32_modules or []
    for name, param in model.named_parameters():
        if any(k in name for k in keep):
            param.data = param.data.float()
    return model.eval().requires_grad_(False)


def _text_encoder(device: torch.device):
    from transformers import UMT5Config, UMT5EncoderModel

    with torch.device(device), _default_dtype(torch.bfloat16):
        model = UMT5EncoderModel(UMT5Config(**UMT5_XXL))
    return model.eval().requires_grad_(False)


def _vae(config: dict, device: torch.device):
    from diffusers import AutoencoderKLWan

    with torch.device(device):
        return AutoencoderKLWan(**config).eval().requires_grad_(False)


def build_pipeline(fam: Family, scale: str, device: torch.device):
    """A pipeline on the CPU, as engine.loading.load_pipeline returns one (the memory mode then places it)."""
    from diffusers import WanImageToVideoPipeline, WanPipeline

    from engine.models.tiny import _scheduler, _tokenizer, build_tiny_pipeline

    spec = builtin_specs()[fam.model]
    if scale == "tiny":
        pipe = build_tiny_pipeline(fam.tiny)
    else:
        torch.manual_seed(0)
        parts = dict(
            tokenizer=_tokenizer(),
            text_encoder=_text_encoder(device).to("cpu"),
            vae=_vae(fam.vae, device).to("cpu"),
            transformer=_transformer(fam.transformer, device).to("cpu"),
            transformer_2=_transformer(fam.transformer, device).to("cpu") if fam.experts == 2 else None,
            scheduler=_scheduler(spec.shift),
            boundary_ratio=spec.boundary,
        )
        if fam.i2v:
            pipe = WanImageToVideoPipeline(**parts, image_processor=None, image_encoder=None)
        else:
            pipe = WanPipeline(**parts, expand_timesteps=fam.experts == 1)
        _release()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _release() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ----- measuring --------------------------------------------------------------------------------------------------


class HostPeak:
    """Peak resident host memory over a block, sampled every 50 ms (ru_maxrss only knows the process's lifetime)."""

    def __init__(self) -> None:
        import psutil

        self._proc = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            self._stop.wait(0.05)

    def __enter__(self) -> HostPeak:
        self.peak = self._proc.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _gpu_peaks(device: torch.device) -> dict[str, float | None]:
    if device.type != "cuda":
        return {"allocated_gib": None, "reserved_gib": None}
    return {
        "allocated_gib": torch.cuda.max_memory_allocated(device) / GIB,
        "reserved_gib": torch.cuda.max_memory_reserved(device) / GIB,
    }


def _reset_peaks(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def mid_boundary(pipe, steps: int) -> float | None:
    """A boundary ratio that puts the expert switch after the first half of a short run (None: no switch)."""
    if pipe.config.boundary_ratio is None or steps < 2:
        return None
    sched = type(pipe.scheduler).from_config(pipe.scheduler.config)
    sched.set_timesteps(steps)
    ts = [float(t) for t in sched.timesteps]
    k = max(1, steps // 2)
    return (ts[k - 1] + ts[k]) / 2 / sched.config.num_train_timesteps


@dataclass
class StepClock:
    """Step times from the pipeline's step-end callback (synchronised), and the expert switch timed apart."""

    device: torch.device
    switch: ExpertSwitch | None = None
    boundary_t: float | None = None
    start: float = 0.0  # the pipeline call
    first_forward: float | None = None
    ends: list[float] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    swap_s: float = 0.0
    low_from: int | None = None  # index of the first low-noise step
    _next: float | None = None

    def pre_forward(self, _module, _args) -> None:
        if self.first_forward is None:
            _sync(self.device)
            self.first_forward = self._next = time.perf_counter()

    def __call__(self, pipe, i: int, t, _tensors) -> dict:
        _sync(self.device)
        now = time.perf_counter()
        self.times.append(now - (self._next or self.start))
        self.ends.append(now)
        steps = len(pipe.scheduler.timesteps)
        if self.boundary_t is not None and i + 1 < steps and float(pipe.scheduler.timesteps[i + 1]) < self.boundary_t:
            if self.low_from is None:
                self.low_from = i + 1
                if self.switch is not None:
                    self.switch.at_boundary()
                    _sync(self.device)
                    self.swap_s = time.perf_counter() - now
        self._next = time.perf_counter()  # the swap is not part of the next step
        return {}


def summarize_steps(times: list[float], low_from: int | None, swap_s: float, official: int) -> dict[str, Any]:
    """Median steady step, warm-up excess, switch cost and the extrapolated denoise time (see the module doc)."""
    skip = {0} | ({low_from} if low_from is not None else set())
    steady = [t for i, t in enumerate(times) if i not in skip] or times[-1:]
    median = statistics.median(steady)
    switch = swap_s + (max(0.0, times[low_from] - median) if low_from is not None and low_from < len(times) else 0.0)
    return {
        "switch_at_step": low_from,
        "step_s": [round(t, 4) for t in times],
        "step_median_s": median,
        "warmup_excess_s": max(0.0, times[0] - median),
        "switch_s": switch if low_from is not None else None,
        "official_steps": official,
        "denoise_est_s": official * median + (switch if low_from is not None else 0.0),
    }


class Counter:
    """A forward pre-hook that counts calls."""

    n = 0

    def __call__(self, *_args) -> None:
        self.n += 1


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two videos in [0, 1] (inf when identical)."""
    mse = float(torch.mean((a.float() - b.float()) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


@dataclass(frozen=True)
class Variant:
    name: str
    fam: Family
    kind: str  # "ours", "baseline", "fbc"
    mode: str = "none"
    budget_gib: float | None = None
    speed: SpeedOptions = SpeedOptions()


def parse_variant(name: str, scale: str = "full") -> Variant:
    """A variant from its name (see the module doc); at tiny scale compile only traces (eager backend)."""
    key, _, what = name.partition("/")
    fam = FAMILIES[key]
    if what == "baseline":
        return Variant(name, fam, "baseline", mode="model")
    if what.startswith("auto@"):
        return Variant(name, fam, "ours", mode="auto", budget_gib=float(what[5:]))
    if what == "fp8":
        return Variant(name, fam, "ours", speed=SpeedOptions(fp8=True))
    if what == "compile":
        backend = "eager" if scale == "tiny" else "inductor"
        return Variant(name, fam, "ours", speed=SpeedOptions(compile=True, compile_backend=backend))
    if what == "fbc":
        return Variant(name, fam, "fbc", speed=SpeedOptions(cache="first_block"))
    if what in ("none", "model", "group", "sequential"):
        return Variant(name, fam, "ours", mode=what)
    raise ValueError(f"unknown variant {name!r}")


@contextlib.contextmanager
def memory_budget(device: torch.device, budget_gib: float | None):
    """A per-process GPU memory limit for the block (the whole device when None or larger than it)."""
    if device.type != "cuda" or budget_gib is None:
        yield None
        return
    total = torch.cuda.get_device_properties(device).total_memory
    fraction = min(1.0, budget_gib * GIB / total)
    torch.cuda.set_per_process_memory_fraction(fraction, device)
    try:
        yield fraction
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, device)


class Bench:
    def __init__(self, args: argparse.Namespace, device: torch.device):
        self.args = args
        self.device = device
        self.scale = args.scale

    def request(self, fam: Family, pipe, steps: int):
        spec = builtin_specs()[fam.tiny if self.scale == "tiny" else fam.model]
        w, h, f = (spec.width, spec.height, spec.frames) if self.scale == "tiny" else fam.size
        image = None
        if fam.i2v:
            from PIL import Image

            image = Image.new("RGB", (w, h), (120, 90, 60))
        r = GenerationRequest(prompt=PROMPT, width=w, height=h, frames=f, steps=steps, seed=SEED)
        valid = validate(r if image is None else replace(r, image=image), spec)
        return spec, valid

    def run(self, v: Variant) -> dict[str, Any]:
        steps = self.args.steps if v.kind != "fbc" else self.args.cache_steps
        row: dict[str, Any] = {"name": v.name, "kind": v.kind, "budget_gib": v.budget_gib, "speed": v.speed.settings()}
        t_build = time.perf_counter()
        pipe = build_pipeline(v.fam, self.scale, self.device)
        row["build_s"] = time.perf_counter() - t_build
        spec, valid = self.request(v.fam, pipe, steps)
        r = valid.request
        row.update(model=spec.id, size=f"{r.width}x{r.height}x{r.frames}", steps_run=steps)
        official = builtin_specs()[v.fam.model].steps
        set_shift(pipe, r.shift)
        boundary = mid_boundary(pipe, steps)
        if pipe.config.boundary_ratio is not None:
            pipe.register_to_config(boundary_ratio=boundary if boundary is not None else 0.0)
        with memory_budget(self.device, v.budget_gib), HostPeak() as host:
            if v.kind == "baseline":
                row.update(self._baseline(pipe, r, valid, official))
            elif v.kind == "fbc":
                row.update(self._fbc(pipe, spec, r, valid, v))
            else:
                row.update(self._ours(pipe, spec, r, valid, v, official))
        row["host_rss_peak_gib"] = host.peak / GIB
        del pipe
        _release()
        return row

    def _place(self, pipe, spec, r, v: Variant) -> tuple[Any, Any, dict]:
        speed = apply_speed(pipe, v.speed, self.device)
        plan = plan_memory(
            v.mode,
            self.device,
            component_bytes(pipe),
            free_vram(self.device),
            spec.moe,
            model=spec.id,
            size=(r.width, r.height, r.frames),
            peaks=load_peaks(self.args.peaks),
            fp8=speed.fp8,
        )
        apply_memory(pipe, plan, self.device)
        apply_compile(pipe, v.speed, speed)
        info = {
            "mode": plan.mode,
            "plan_reason": plan.reason,
            "speed_state": speed.settings(),
            "weights_gib": sum(component_bytes(pipe).values()) / GIB,
        }
        return plan, speed, info

    def _denoise(self, pipe, r, valid, clock: StepClock, output_type: str = "latent"):
        image = valid.image
        kwargs = pipeline_kwargs(pipe, r, image, output_type=output_type)
        kwargs.update(callback_on_step_end=clock, callback_on_step_end_tensor_inputs=[])
        hooks = [m.register_forward_pre_hook(clock.pre_forward) for m in (pipe.transformer, pipe.transformer_2) if m]
        try:
            _sync(self.device)
            clock.start = time.perf_counter()
            out = pipe(**kwargs).frames
            _sync(self.device)
            end = time.perf_counter()
        finally:
            for h in hooks:
                h.remove()
        return out, end

    def _boundary_t(self, pipe) -> float | None:
        b = pipe.config.boundary_ratio
        return None if b is None else b * pipe.scheduler.config.num_train_timesteps

    def _decode(self, pipe, latents, r) -> tuple[torch.Tensor, dict[str, Any]]:
        """The engine's decode: tiles when short of memory, streams one latent frame at a time."""
        from diffusers.utils.torch_utils import get_module_execution_device

        vae = pipe.vae
        _reset_peaks(self.device)
        _sync(self.device)
        t0 = time.perf_counter()
        tiling = vae_tiling_reason(self.device, r.width, r.height)
        set_vae_tiling(vae, tiling)
        z = denormalize(vae, latents.to(get_module_execution_device(vae), vae.dtype))
        frames = []
        for chunk in stream_decode(vae, z):
            video = pipe.video_processor.postprocess_video(chunk, output_type="pt")[0]
            frames.append(video.cpu())
            to_uint8(video.permute(0, 2, 3, 1).cpu().numpy())  # what the engine hands to the MP4 writer
        _sync(self.device)
        elapsed = time.perf_counter() - t0
        info = {"decode_s": elapsed, "decode_tiled": bool(tiling), "decode_peak": _gpu_peaks(self.device)}
        return torch.cat(frames), info

    def _ours(self, pipe, spec, r, valid, v: Variant, official: int) -> dict[str, Any]:
        row: dict[str, Any] = {}
        try:
            _reset_peaks(self.device)
            plan, speed, info = self._place(pipe, spec, r, v)
            row.update(info)
            switch = ExpertSwitch(pipe, plan, self.device)
            switch.before_job()
            clock = StepClock(self.device, switch, self._boundary_t(pipe))
            latents, _end = self._denoise(pipe, r, valid, clock)
            row["encode_s"] = (clock.first_forward or clock.start) - clock.start
            row["denoise_peak"] = _gpu_peaks(self.device)
            row.update(summarize_steps(clock.times, clock.low_from, clock.swap_s, official))
            if speed.compiled:
                row["compile_s"] = row["warmup_excess_s"]
            _video, dec = self._decode(pipe, latents, r)
            row.update(dec)
            pipe.maybe_free_model_hooks()
            row["e2e_est_s"] = row["encode_s"] + row["denoise_est_s"] + row["decode_s"]
            row["status"] = "ok"
        except torch.OutOfMemoryError as exc:
            row.update(status="oom", error=str(exc).splitlines()[0])
        return row

    def _baseline(self, pipe, r, valid, official: int) -> dict[str, Any]:
        """The common recipe: enable_model_cpu_offload() and one pipe(...) call that decodes itself."""
        row: dict[str, Any] = {"mode": "diffusers enable_model_cpu_offload"}
        try:
            _reset_peaks(self.device)
            if self.device.type == "cuda":
                pipe.enable_model_cpu_offload(device=self.device)
            clock = StepClock(self.device, None, self._boundary_t(pipe))
            _video, end = self._denoise(pipe, r, valid, clock, output_type="np")
            row["encode_s"] = (clock.first_forward or clock.start) - clock.start
            row.update(summarize_steps(clock.times, clock.low_from, 0.0, official))
            row["decode_s"] = end - clock.ends[-1]
            row["peak"] = _gpu_peaks(self.device)
            row["e2e_est_s"] = row["encode_s"] + row["denoise_est_s"] + row["decode_s"]
            row["status"] = "ok"
        except torch.OutOfMemoryError as exc:
            row.update(status="oom", error=str(exc).splitlines()[0])
        return row

    def _fbc(self, pipe, spec, r, valid, v: Variant) -> dict[str, Any]:
        """Uncached, then First Block Cache on the same components and seed: speed-up and PSNR of the videos."""
        from diffusers.hooks import FirstBlockCacheConfig

        row: dict[str, Any] = {"cache_threshold": v.speed.cache_threshold}
        try:
            plan, _speed, info = self._place(pipe, spec, r, replace(v, speed=SpeedOptions()))
            row.update(info)
            switch = ExpertSwitch(pipe, plan, self.device)
            runs = {}
            for label in ("cached", "uncached"):  # the cached run goes first and pays the warm-up: conservative
                for m in (pipe.transformer, pipe.transformer_2):
                    if m is not None and label == "cached":
                        m.enable_cache(FirstBlockCacheConfig(threshold=v.speed.cache_threshold))
                    elif m is not None and m.is_cache_enabled:
                        m.disable_cache()
                computed, forwards = Counter(), Counter()
                tail = pipe.transformer.blocks[-1].ffn  # runs only when the cache did not skip the tail blocks
                hooks = [tail.register_forward_pre_hook(computed), pipe.transformer.register_forward_pre_hook(forwards)]
                switch.before_job()
                clock = StepClock(self.device, switch, self._boundary_t(pipe))
                try:
                    latents, end = self._denoise(pipe, r, valid, clock)
                finally:
                    for h in hooks:
                        h.remove()
                video, dec = self._decode(pipe, latents, r)
                pipe.maybe_free_model_hooks()
                runs[label] = {
                    "denoise_s": end - (clock.first_forward or clock.start),
                    "decode_s": dec["decode_s"],
                    "tail_skipped_fraction": 1 - computed.n / max(1, forwards.n),
                    "video": video,
                }
            row["speedup"] = runs["uncached"]["denoise_s"] / runs["cached"]["denoise_s"]
            row["psnr_db"] = psnr(runs["uncached"].pop("video"), runs["cached"].pop("video"))
            row["runs"] = runs
            row["status"] = "ok"
        except torch.OutOfMemoryError as exc:
            row.update(status="oom", error=str(exc).splitlines()[0])
        return row


# ----- peaks table ------------------------------------------------------------------------------------------------


# Activation model for the estimates (bytes per latent token of one transformer forward, bf16, inference): the
# hidden state, rope tables and the largest stage of a block (the FFN's two ffn-wide tensors, the fp32 norm and
# modulation temporaries, or q/k/v with fp32 rope copies); TI2V-5B adds its per-token timestep embeddings (fp32).
def _dit_activation_bytes(t: dict, tokens: int, expand_timesteps: bool) -> int:
    dim, head = t["num_attention_heads"] * t["attention_head_dim"], t["attention_head_dim"]
    persistent = 2 * dim + 8 * head
    stage = max(4 * t["ffn_dim"] + 4 * dim, 18 * dim, 12 * dim)
    extra = 52 * dim if expand_timesteps else 0  # timestep_proj + temb (28 dim) and in-block fp32 modulation (24 dim)
    return tokens * (persistent + stage + extra)


def _params_gib(module_fn) -> float:
    with torch.device("meta"):
        m = module_fn()
    return sum(p.numel() * p.element_size() for p in m.parameters()) / GIB


def estimate_entries() -> list[dict[str, Any]]:
    """Peak GiB per model x mode x size from component sizes and the activation model above (no GPU needed)."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    with _default_dtype(torch.bfloat16):
        te = _params_gib(lambda: UMT5EncoderModel(UMT5Config(**UMT5_XXL)))
        te_embed = UMT5_XXL["vocab_size"] * UMT5_XXL["d_model"] * 2 / GIB
    entries = []
    seen = set()
    for fam in FAMILIES.values():
        spec = builtin_specs()[fam.model]
        with _default_dtype(torch.bfloat16):
            dit = _params_gib(lambda fam=fam: WanTransformer3DModel(**fam.transformer))
        vae = _params_gib(lambda fam=fam: AutoencoderKLWan(**fam.vae))
        w, h, f = fam.size
        spatial = 16 if fam.experts == 1 else 8
        tokens = ((f - 1) // 4 + 1) * (h // spatial // 2) * (w // spatial // 2)
        act = _dit_activation_bytes(fam.transformer, tokens, fam.experts == 1) / GIB
        te_act = 0.5  # 512 tokens through umT5-XXL, both prompts
        decode = VAE_DECODE_BYTES_PER_PIXEL * w * h / GIB  # the engine's own decode rule
        vae_encode = decode if fam.i2v else 0.0  # I2V encodes the whole conditioning video first
        in_flight = 1.0  # group offload: the onloaded leaves plus the prefetched ones
        phases = {
            "none": (te + vae + dit + max(act, te_act, vae_encode), te + vae + dit + decode, te + vae + dit),
            "model": (max(te + te_act, vae + vae_encode, dit + act), vae + decode, dit),
            "group": (vae + max(te_embed + in_flight + te_act, in_flight + act, vae_encode), vae + decode, vae),
            "sequential": (0.5 + max(act, te_act, vae + vae_encode), vae + decode, 0.5),
        }
        for mode, (peak, dec, weights) in phases.items():
            key = (spec.id, mode, fam.size)
            if key in seen:
                continue
            seen.add(key)
            entries.append(
                {
                    "model": spec.id,
                    "mode": mode,
                    "width": w,
                    "height": h,
                    "frames": f,
                    "fp8": False,
                    "peak_gib": round(peak, 1),
                    "decode_gib": round(dec, 1),
                    "weights_gib": round(weights, 1),
                    "step_s": None,
                    "source": "estimate",
                }
            )
    return entries  # i2v-a14b at 480p falls back to its 720p entries (the next larger size): conservative


PEAKS_ABOUT = (
    "Peak GPU memory (GiB) per model x memory mode x size, read by the auto memory planner (engine/memory.py). "
    "peak_gib: prompt encoding and denoising (I2V: with the VAE encode of the conditioning video) - what the mode "
    "decides; the decode tiles itself when short of memory. decode_gib: an untiled decode with the mode's resident "
    "weights. weights_gib: the resident weights inside peak_gib (the part that does not grow with size). step_s: "
    "measured seconds a denoising step, used to rank modes when every candidate has one. source 'estimate' = "
    "derived from the published component sizes and an activation model (benchmarks/gpu_bench.py, "
    "estimate_entries), not yet measured; 'measured' = max_memory_reserved from benchmarks/gpu_bench.py "
    "--write-peaks on the device named. The planner adds margin_fraction and margin_gib."
)


def write_peaks(path: Path, measured: list[dict[str, Any]] | None, device: str) -> None:
    """The estimate table, with measured entries replacing the estimates of the same model, mode, size and fp8."""
    table = {"about": PEAKS_ABOUT, "margin_gib": 2.0, "margin_fraction": 0.08, "entries": estimate_entries()}
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        keep = [e for e in old.get("entries", []) if e.get("source") != "estimate"]
        table["entries"] = _merge_entries(table["entries"], keep)
    if measured:
        for e in measured:
            e["device"] = device
        table["entries"] = _merge_entries(table["entries"], measured)
    path.write_text(json.dumps(table, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def _merge_entries(base: list[dict], over: list[dict]) -> list[dict]:
    key = lambda e: (e["model"], e["mode"], e["width"] * e["height"] * e["frames"], bool(e.get("fp8")))  # noqa: E731
    merged = {key(e): e for e in base}
    merged.update({key(e): e for e in over})
    return list(merged.values())


def measured_entries(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        if row.get("kind") != "ours" or row.get("status") != "ok" or row.get("budget_gib") is not None:
            continue
        if row["speed"].get("compile") or not row.get("denoise_peak", {}).get("reserved_gib"):
            continue
        w, h, f = (int(x) for x in row["size"].split("x"))
        out.append(
            {
                "model": row["model"],
                "mode": row["mode"],
                "width": w,
                "height": h,
                "frames": f,
                "fp8": bool(row["speed"].get("fp8")),
                "peak_gib": round(row["denoise_peak"]["reserved_gib"], 2),
                "decode_gib": round(row["decode_peak"]["reserved_gib"], 2),
                "weights_gib": None,
                "step_s": round(row["step_median_s"], 3),
                "source": "measured",
            }
        )
    return out


# ----- report -----------------------------------------------------------------------------------------------------


def _fmt(x: Any, nd: int = 1) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return "inf" if math.isinf(x) else f"{x:.{nd}f}"
    return str(x)


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ours against the bare recipe of the same family: end-to-end time and peak memory."""
    out = []
    for base in [r for r in rows if r.get("kind") == "baseline" and r.get("status") == "ok"]:
        fam = base["name"].split("/")[0]
        for r in rows:
            if r.get("kind") != "ours" or r.get("status") != "ok" or not r["name"].startswith(fam + "/"):
                continue
            peak = (r.get("denoise_peak") or {}).get("reserved_gib")
            dpeak = (r.get("decode_peak") or {}).get("reserved_gib")
            ours_peak = max(peak, dpeak) if peak is not None and dpeak is not None else None
            base_peak = (base.get("peak") or {}).get("reserved_gib")
            out.append(
                {
                    "ours": r["name"],
                    "baseline": base["name"],
                    "speedup_e2e": base["e2e_est_s"] / r["e2e_est_s"],
                    "speedup_step": base["step_median_s"] / r["step_median_s"],
                    "peak_ratio": None if ours_peak is None or not base_peak else ours_peak / base_peak,
                }
            )
    return out


def markdown(result: dict[str, Any]) -> str:
    m = result["meta"]
    lines = [
        f"Device: {m['device']}; torch {m['torch']}, diffusers {m['diffusers']}, transformers {m['transformers']}; "
        f"{m['date']}; scale {m['scale']}; {m['steps']} steps run per variant.",
        "",
        f"Command: `{m['command']}`",
        "",
        "| variant | size | mode | encode s | step s (median) | switch s | decode s | e2e est. s "
        "| peak GiB denoise (alloc/resv) | peak GiB decode (resv) | host GiB | status |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["variants"]:
        dp, dd, bp = r.get("denoise_peak") or {}, r.get("decode_peak") or {}, r.get("peak") or {}
        peak = f"{_fmt(dp.get('allocated_gib') or bp.get('allocated_gib'))}/"
        peak += _fmt(dp.get("reserved_gib") or bp.get("reserved_gib"))
        lines.append(
            f"| {r['name']} | {r.get('size', '-')} | {r.get('mode', '-')} | {_fmt(r.get('encode_s'), 2)} "
            f"| {_fmt(r.get('step_median_s'), 3)} | {_fmt(r.get('switch_s'), 2)} | {_fmt(r.get('decode_s'), 2)} "
            f"| {_fmt(r.get('e2e_est_s'))} | {peak} | {_fmt(dd.get('reserved_gib'))} "
            f"| {_fmt(r.get('host_rss_peak_gib'))} | {r.get('status')} |"
        )
    if result["ratios"]:
        lines += ["", "| ours | against | e2e speed-up | step speed-up | peak ratio |", "|---|---|---|---|---|"]
        for q in result["ratios"]:
            lines.append(
                f"| {q['ours']} | {q['baseline']} | {_fmt(q['speedup_e2e'], 2)}x | {_fmt(q['speedup_step'], 2)}x "
                f"| {_fmt(q['peak_ratio'], 2)} |"
            )
    extras = [r for r in result["variants"] if r.get("status") == "ok" and (r.get("compile_s") or "psnr_db" in r)]
    for r in extras:
        if "psnr_db" in r:
            lines.append(
                f"\n{r['name']}: First Block Cache (threshold {r['cache_threshold']}) speed-up "
                f"{_fmt(r['speedup'], 2)}x, PSNR {_fmt(r['psnr_db'], 1)} dB against uncached, tail blocks skipped "
                f"{_fmt(100 * r['runs']['cached']['tail_skipped_fraction'], 0)}% of forwards."
            )
        if r.get("compile_s"):
            lines.append(f"\n{r['name']}: compilation took {_fmt(r['compile_s'])} s (first step minus a steady step).")
    fp8 = {r["name"].split("/")[0]: r for r in result["variants"] if r["name"].endswith("/fp8") and "denoise_peak" in r}
    for fam, r in fp8.items():
        none = next((x for x in result["variants"] if x["name"] == f"{fam}/none" and "denoise_peak" in x), None)
        a, b = (none or {}).get("denoise_peak", {}).get("reserved_gib"), r["denoise_peak"].get("reserved_gib")
        if a is not None and b is not None:
            lines.append(f"\n{fam}: fp8 weight storage saves {a - b:.1f} GiB of peak (mode none, reserved).")
    skipped = [r["name"] for r in result["variants"] if r.get("status") == "skipped"]
    if skipped:
        lines.append(f"\nSkipped by the time budget: {', '.join(skipped)}.")
    return "\n".join(lines) + "\n"


def update_benchmarks_md(path: Path, section: str, body: str) -> None:
    """Replace (or append) the block between <!-- gpu-bench:SECTION --> markers of BENCHMARKS.md."""
    start, end = f"<!-- gpu-bench:{section} -->", f"<!-- /gpu-bench:{section} -->"
    text = path.read_text(encoding="utf-8") if path.is_file() else "# Benchmarks\n"
    block = f"{start}\n{body}{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + f"\n\n{block}\n"
    path.write_text(text, encoding="utf-8")


# ----- main -------------------------------------------------------------------------------------------------------


def selected(only: str | None) -> list[tuple[str, float]]:
    if not only:
        return list(DEFAULT_SWEEP)
    wanted = [s.strip() for s in only.split(",") if s.strip()]
    exact = [(n, t) for n, t in DEFAULT_SWEEP + [(n, 60.0) for n in OPTIONAL] if n in wanted]
    # a substring (a family like "5b" or "a14b") picks from the default sweep; optional variants go by exact name
    return exact or [(n, t) for n, t in DEFAULT_SWEEP if any(w in n for w in wanted)]


def _meta(args: argparse.Namespace, argv: list[str], device: torch.device) -> dict[str, Any]:
    from importlib.metadata import version

    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        name = f"{props.name}, {props.total_memory / GIB:.1f} GiB, CUDA {torch.version.cuda}"
    else:
        name = f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    return {
        "device": name,
        "torch": torch.__version__,
        "diffusers": version("diffusers"),
        "transformers": version("transformers"),
        "python": platform.python_version(),
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": "python benchmarks/gpu_bench.py " + " ".join(shlex.quote(a) for a in argv),
        "scale": args.scale,
        "steps": args.steps,
        "extrapolation": "official steps x median steady step + switch + measured encode and decode",
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", choices=("full", "tiny"), default="full")
    p.add_argument("--only", help="comma-separated variant names, or substrings of default-sweep names (e.g. 5b)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps run per variant (full: 3; tiny: 2)")
    p.add_argument("--cache-steps", type=int, default=None, help="steps of each First Block Cache run (full: 10)")
    p.add_argument("--time-budget", type=float, default=540.0, help="seconds; later variants are skipped")
    p.add_argument("--out", type=Path, default=Path("bench-out"), help="folder for results.json and results.md")
    p.add_argument("--peaks", type=Path, default=None, help="peaks table for the planner (default: presets')")
    p.add_argument("--write-peaks", type=Path, help="write the peaks table here (measured entries replace estimates)")
    p.add_argument("--estimate-peaks", action="store_true", help="only write the estimate table (with --write-peaks)")
    p.add_argument("--benchmarks-md", type=Path, help="also write the table into this BENCHMARKS.md")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = p.parse_args(argv)
    if args.estimate_peaks:
        if not args.write_peaks:
            p.error("--estimate-peaks needs --write-peaks PATH")
        write_peaks(args.write_peaks, None, "")
        print(f"wrote estimates to {args.write_peaks}")
        return 0
    tiny = args.scale == "tiny"
    args.steps = args.steps or (2 if tiny else 3)
    args.cache_steps = args.cache_steps or (max(2, args.steps) if tiny else 10)
    device = torch.device("cuda" if torch.cuda.is_available() and not tiny else "cpu")
    if not tiny and device.type != "cuda":
        p.error("--scale full needs a CUDA GPU; use --scale tiny on a CPU")
    args.out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"meta": _meta(args, argv, device), "variants": [], "ratios": []}
    started = time.perf_counter()
    for name, estimate in selected(args.only):
        elapsed = time.perf_counter() - started
        if not tiny and elapsed + estimate > args.time_budget:
            result["variants"].append({"name": name, "status": "skipped", "reason": "time budget"})
            continue
        print(f"[{elapsed:6.0f} s] {name} ...", flush=True)
        t0 = time.perf_counter()
        try:
            row = Bench(args, device).run(parse_variant(name, args.scale))
        except Exception as exc:  # noqa: BLE001 - one broken variant must not lose the others' figures
            row = {"name": name, "status": "error", "error": f"{exc.__class__.__name__}: {exc}"}
            traceback.print_exc()
            _release()
        row["wall_s"] = time.perf_counter() - t0
        result["variants"].append(row)
        result["ratios"] = ratios(result["variants"])
        (args.out / "results.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
        print(f"         {row.get('status')} in {row['wall_s']:.0f} s", flush=True)
    md = markdown(result)
    (args.out / "results.md").write_text(md)
    print(md)
    if args.write_peaks:
        write_peaks(args.write_peaks, measured_entries(result["variants"]), result["meta"]["device"])
    if args.benchmarks_md:
        section = "tiny" if tiny else "-".join(sorted({n.split("/")[0] for n, _ in selected(args.only)}))
        update_benchmarks_md(args.benchmarks_md, section, md)
    return 0 if all(r.get("status") in ("ok", "skipped") for r in result["variants"]) else 1


if __name__ == "__main__":
    sys.exit(main())
