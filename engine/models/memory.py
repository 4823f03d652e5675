"""Memory modes: where the pipeline's weights live, applied once after loading, in one place.

none: everything on the GPU (for MoE, only the active expert; the other waits in CPU RAM);
model: diffusers model CPU offload (one whole component on the GPU at a time);
group: diffusers group offloading with CUDA streams (leaf level for transformers, block level for the text encoder);
sequential: diffusers sequential CPU offload (least VRAM, slowest);
auto: the fastest mode whose peak for this model and size (presets/memory_peaks.json, from the GPU benchmark) plus a
      margin fits the free VRAM; without a table entry, a rule on the weights' sizes. It says which and why.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..catalog import PRESETS_DIR
from ..flags import MEMORY_MODES

MODES = MEMORY_MODES
GIB = 1024**3
# Room kept free for activations, the CUDA context and fragmentation on top of the resident weights.
HEADROOM_BYTES = 6 * GIB
PEAKS_FILE = PRESETS_DIR / "memory_peaks.json"
FASTEST_FIRST = ("none", "model", "group", "sequential")  # when the table has no measured times to compare


@dataclass(frozen=True)
class MemoryPlan:
    mode: str  # one of MODES without "auto"
    reason: str


def component_bytes(pipe) -> dict[str, int]:
    """Bytes of weights per torch component of a pipeline."""
    sizes = {}
    for name, comp in pipe.components.items():
        if isinstance(comp, torch.nn.Module):
            sizes[name] = sum(p.numel() * p.element_size() for p in comp.parameters()) + sum(
                b.numel() * b.element_size() for b in comp.buffers()
            )
    return sizes


def load_peaks(path: str | Path | None = None) -> dict[str, Any]:
    """The table of peak GPU memory per model, mode and size (see presets/memory_peaks.json); empty if unreadable."""
    try:
        with open(path or PEAKS_FILE, encoding="utf-8") as f:
            table = json.load(f)
    except (OSError, ValueError):
        return {"entries": []}
    return table if isinstance(table.get("entries"), list) else {"entries": []}


def _volume(entry: dict[str, Any]) -> int:
    return int(entry["width"]) * int(entry["height"]) * int(entry["frames"])


def peak_for(
    peaks: dict[str, Any], model: str, mode: str, size: tuple[int, int, int], fp8: bool = False
) -> tuple[float, dict[str, Any]] | None:
    """(peak GiB for this size, the entry it came from), or None when the table has nothing for this model and mode.

    Peaks grow with the number of latent tokens, i.e. with width x height x frames whatever the orientation: the
    smallest entry at least as large is used as is; beyond the largest, the part above the resident weights is
    scaled by the volume. An fp8 entry is used for fp8 weights when there is one, else the bf16 entry (fp8 only
    lowers the peak).
    """
    rows = [e for e in peaks.get("entries", []) if e.get("model") == model and e.get("mode") == mode]
    if fp8 and any(e.get("fp8") for e in rows):
        rows = [e for e in rows if e.get("fp8")]
    else:
        rows = [e for e in rows if not e.get("fp8")]
    if not rows:
        return None
    volume = size[0] * size[1] * size[2]
    larger = [e for e in rows if _volume(e) >= volume]
    if larger:
        entry = min(larger, key=_volume)
        return float(entry["peak_gib"]), entry
    entry = max(rows, key=_volume)
    weights = float(entry.get("weights_gib", 0.0))
    return weights + (float(entry["peak_gib"]) - weights) * volume / _volume(entry), entry


def _plan_from_peaks(
    peaks: dict[str, Any], model: str, size: tuple[int, int, int], free: int, fp8: bool
) -> MemoryPlan | None:
    margin_gib = float(peaks.get("margin_gib", 2.0))
    margin_fraction = float(peaks.get("margin_fraction", 0.08))
    free_gib = free / GIB
    found = {m: p for m in FASTEST_FIRST if (p := peak_for(peaks, model, m, size, fp8)) is not None}
    if not found:
        return None
    fits = []
    for mode, (peak, entry) in found.items():
        need = peak * (1 + margin_fraction) + margin_gib
        if need <= free_gib:
            fits.append((mode, peak, need, entry))
    where = f"{model} at {size[0]}x{size[1]}x{size[2]}"
    if not fits:
        least = min(found, key=lambda m: found[m][0])
        return MemoryPlan(
            "sequential",
            f"{where}: no mode's peak fits {free_gib:.1f} GiB free (least: {least} at {found[least][0]:.1f} GiB); "
            "sequential offload, the slowest, needs the least",
        )
    timed = all(e.get("step_s") for _m, _p, _n, e in fits)
    mode, peak, need, entry = min(fits, key=lambda f: f[3]["step_s"]) if timed else fits[0]
    source = entry.get("source", "estimate")
    faster = [m for m in FASTEST_FIRST[: FASTEST_FIRST.index(mode)] if m in found]
    why_not = f"; {', '.join(faster)} would not fit" if faster else ""
    return MemoryPlan(
        mode,
        f"{where}: mode {mode} peaks at about {peak:.1f} GiB ({source}); with margin {need:.1f} GiB "
        f"<= {free_gib:.1f} GiB free{why_not}",
    )


def plan_memory(
    requested: str,
    device: torch.device,
    sizes: dict[str, int],
    free_bytes: int | None,
    moe: bool,
    *,
    model: str | None = None,
    size: tuple[int, int, int] | None = None,
    peaks: dict[str, Any] | None = None,
    fp8: bool = False,
) -> MemoryPlan:
    """Choose the memory mode. Pure: everything it decides from is in its arguments.

    With a model id, a (width, height, frames) size and a peaks table (load_peaks()), auto picks the fastest mode
    whose peak plus a margin fits; otherwise, or when the table has no entry, the rule on the weights' sizes.
    """
    if requested not in MODES:
        raise ValueError(f"memory mode must be one of {', '.join(MODES)}; got {requested!r}")
    if device.type != "cuda":
        why = "no CUDA GPU: everything runs on the CPU"
        if requested not in ("auto", "none"):
            why += f" (memory mode {requested!r} only applies to a GPU)"
        return MemoryPlan("none", why)
    if requested != "auto":
        return MemoryPlan(requested, "chosen by the user")
    free = free_bytes or 0
    if model and size and peaks:
        plan = _plan_from_peaks(peaks, model, size, free, fp8)
        if plan is not None:
            return plan
    experts = [sizes.get(n, 0) for n in ("transformer", "transformer_2")]
    resident = sum(sizes.values()) - (min(experts) if moe else 0)
    largest = max(sizes.values(), default=0)
    gib = lambda b: f"{b / GIB:.1f} GiB"  # noqa: E731 - local formatting helper
    if resident + HEADROOM_BYTES <= free:
        return MemoryPlan("none", f"{gib(free)} free holds all resident weights ({gib(resident)}) plus headroom")
    if largest + HEADROOM_BYTES <= free:
        return MemoryPlan(
            "model", f"{gib(free)} free holds the largest component ({gib(largest)}) but not all ({gib(resident)})"
        )
    if free >= 2 * HEADROOM_BYTES // 3:
        return MemoryPlan("group", f"{gib(free)} free is below the largest component ({gib(largest)}): group offload")
    return MemoryPlan("sequential", f"only {gib(free)} free: sequential offload (slowest, least VRAM)")


def planning_size(spec, request=None) -> tuple[int, int, int]:
    """The size to plan memory for: the model's default size, or the request's when it is larger (more tokens)."""
    default = (spec.width, spec.height, spec.frames)
    if request is None or not all((request.width, request.height, request.frames)):
        return default
    asked = (int(request.width), int(request.height), int(request.frames))
    return asked if asked[0] * asked[1] * asked[2] > default[0] * default[1] * default[2] else default


def free_vram(device: torch.device) -> int | None:
    """Free bytes on the GPU, within the per-process limit when one is set (set_per_process_memory_fraction)."""
    if device.type != "cuda":
        return None
    free, total = torch.cuda.mem_get_info(device)
    getter = getattr(torch.cuda, "get_per_process_memory_fraction", None)  # torch >= 2.8
    fraction = getter(device) if getter else 1.0
    if fraction < 1.0:
        free = min(free, int(fraction * total) - torch.cuda.memory_reserved(device))
    return max(0, free)


def offload_folder(root: Path, model_path: Path, component: str, tag: str = "") -> Path:
    """Where group offloading writes a component's weights to stream them from disk.

    Keyed by the component's files (names, sizes, times) and `tag` (dtype, fp8): diffusers reuses a group file that
    exists, so weights from another model or another dtype must never share a path. Older keys of the same model and
    component are removed.
    """
    files = sorted((model_path / component).glob("*"))
    stamp = [(f.name, f.stat().st_size, int(f.stat().st_mtime)) for f in files if f.is_file()]
    key = hashlib.sha256(json.dumps([str(model_path.resolve()), component, tag, stamp]).encode()).hexdigest()[:16]
    prefix = f"{component}-{hashlib.sha256(str(model_path.resolve()).encode()).hexdigest()[:8]}-"
    target = root / f"{prefix}{key}"
    if root.is_dir():
        for old in root.glob(f"{prefix}*"):
            if old != target:
                shutil.rmtree(old, ignore_errors=True)
    return target


@contextlib.contextmanager
def _hidden(pipe, names: frozenset[str]):
    """The pipeline without these components while offload hooks are put on (diffusers' own exclusion list moves
    excluded components onto the GPU; these must stay on the CPU)."""
    kept = {n: getattr(pipe, n) for n in names if getattr(pipe, n, None) is not None}
    for name in kept:
        object.__setattr__(pipe, name, None)  # not setattr: that would rewrite the pipeline's config
    try:
        yield
    finally:
        for name, module in kept.items():
            object.__setattr__(pipe, name, module)


def apply_memory(
    pipe,
    plan: MemoryPlan,
    device: torch.device,
    placement=None,
    offload_dirs: dict[str, Path] | None = None,
    cpu_only: frozenset[str] = frozenset(),
) -> None:
    """Place the pipeline's weights as the plan says (called once, right after loading).

    Components the placement (placement.py) puts on disk are streamed from there by group offloading, whatever the
    mode; offload_dirs gives each one's folder. Components in `cpu_only` stay on the CPU and run there (the text
    encoder with --text-encoder-device cpu).
    """
    disk = {n: (offload_dirs or {})[n] for n in (placement.on_disk() if placement is not None else [])}
    stream = device.type == "cuda"
    for name, folder in disk.items():
        module = getattr(pipe, name)
        onload = torch.device("cpu") if name in cpu_only else device
        kwargs = dict(onload_device=onload, offload_device=torch.device("cpu"), offload_to_disk_path=str(folder))
        if hasattr(module, "enable_group_offload"):  # diffusers models: leaf level overlaps best with streams
            module.enable_group_offload(offload_type="leaf_level", use_stream=stream and name not in cpu_only, **kwargs)
        else:
            from diffusers.hooks import apply_group_offloading

            apply_group_offloading(
                module,
                offload_type="block_level",
                num_blocks_per_group=1,
                use_stream=stream and onload == device,
                **kwargs,
            )
    if device.type != "cuda" or plan.mode == "none":
        ram = {n for n, w in (placement.where.items() if placement is not None else []) if w == "ram"} | cpu_only
        for name, comp in pipe.components.items():
            if not isinstance(comp, torch.nn.Module) or name in disk:
                continue
            if name == "transformer_2" and placement is None and pipe.transformer is not None:
                ram.add(name)  # MoE: the low-noise expert waits off the GPU until the boundary step (ExpertSwitch)
            comp.to("cpu" if name in ram else device)
        return
    if plan.mode == "model":
        with _hidden(pipe, cpu_only):
            pipe.enable_model_cpu_offload(device=device)
    elif plan.mode == "sequential":
        with _hidden(pipe, cpu_only):
            pipe.enable_sequential_cpu_offload(device=device)
    elif plan.mode == "group":
        from diffusers.hooks import apply_group_offloading

        for name in ("transformer", "transformer_2"):
            model = getattr(pipe, name, None)
            if model is not None and name not in disk:
                model.enable_group_offload(
                    onload_device=device, offload_type="leaf_level", use_stream=stream, low_cpu_mem_usage=False
                )
        if "text_encoder" not in disk and "text_encoder" not in cpu_only:
            apply_group_offloading(
                pipe.text_encoder,
                onload_device=device,
                offload_type="block_level",
                num_blocks_per_group=1,
                use_stream=stream,
            )
        pipe.vae.to(device)
    else:
        raise ValueError(f"unknown memory mode {plan.mode!r}")


class ExpertSwitch:
    """In mode none, keeps only the active MoE expert on the GPU: high-noise first, low-noise from the boundary.

    Not needed when the placement keeps both experts on the GPU or streams one from disk, nor in the offload modes:
    model offload moves one component in at a time, and group and sequential offload keep only the running blocks
    resident.
    """

    def __init__(self, pipe, plan: MemoryPlan, device: torch.device, placement=None):
        self.pipe = pipe
        self.active = (
            device.type == "cuda"
            and plan.mode == "none"
            and getattr(pipe, "transformer", None) is not None
            and getattr(pipe, "transformer_2", None) is not None
            and (placement is None or placement.where.get("transformer_2") == "ram")
        )
        self.device = device

    def _swap(self, off, on) -> None:
        off.to("cpu")
        torch.cuda.empty_cache()
        on.to(self.device)

    def before_job(self) -> None:
        if self.active and self.pipe.transformer.device.type != "cuda":
            self._swap(self.pipe.transformer_2, self.pipe.transformer)

    def at_boundary(self) -> None:
        if self.active and self.pipe.transformer_2.device.type != "cuda":
            self._swap(self.pipe.transformer, self.pipe.transformer_2)


# Rough peak of an untiled causal Wan VAE decode per output pixel of one frame, in float32 (feature caches and
# activations of a 4-frame chunk at full resolution). An estimate to be replaced by measured figures.
VAE_DECODE_BYTES_PER_PIXEL = 12 * 1024


def vae_tiling_reason(
    device: torch.device, width: int, height: int, encode_frames: int = 0, free: int | None = None
) -> str | None:
    """A reason to tile the VAE for a whole job (condition encode and decode), or None when untiled fits.

    Decided once before the pipeline call: I2V-A14B encodes a float32 condition video of every frame inside the call,
    and the decode comes after it. `free` (bytes) is for tests; by default the GPU's free memory (none on CPU).
    """
    if free is None:
        if device.type != "cuda":
            return None
        free = free_vram(device) or 0  # within a per-process limit, when one is set
        free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    pixels = width * height
    need = VAE_DECODE_BYTES_PER_PIXEL * pixels
    what = "the decode"
    if encode_frames:
        encode = VAE_DECODE_BYTES_PER_PIXEL * pixels + 3 * 4 * encode_frames * pixels  # + the float32 video itself
        if encode > need:
            need, what = encode, "encoding the image's condition video"
    if need <= free:
        return None
    return f"{what} needs about {need / GIB:.1f} GiB and {free / GIB:.1f} GiB is free: the VAE works in tiles"


def set_vae_tiling(vae, reason: str | None) -> None:
    """Tiling on with a reason, off without: nothing is left from the previous job."""
    if reason:
        vae.enable_tiling()
    else:
        vae.disable_tiling()
