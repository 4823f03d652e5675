"""Memory modes: where the pipeline's weights live, applied once after loading, in one place.

none: everything on the GPU (for MoE, only the active expert; the other waits in CPU RAM);
model: diffusers model CPU offload (one whole component on the GPU at a time);
group: diffusers group offloading with CUDA streams (leaf level for transformers, block level for the text encoder);
sequential: diffusers sequential CPU offload (least VRAM, slowest);
auto: picks from free VRAM and the model's size, and says which and why.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MODES = ("auto", "none", "model", "group", "sequential")
GIB = 1024**3
# Room kept free for activations, the CUDA context and fragmentation on top of the resident weights.
HEADROOM_BYTES = 6 * GIB


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


def plan_memory(
    requested: str, device: torch.device, sizes: dict[str, int], free_bytes: int | None, moe: bool
) -> MemoryPlan:
    """Choose the memory mode. Pure: everything it decides from is in its arguments."""
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


def free_vram(device: torch.device) -> int | None:
    if device.type != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info(device)
    return free


def apply_memory(pipe, plan: MemoryPlan, device: torch.device) -> None:
    """Place the pipeline's weights as the plan says (called once, right after loading)."""
    if device.type != "cuda" or plan.mode == "none":
        for name, comp in pipe.components.items():
            if isinstance(comp, torch.nn.Module) and name != "transformer_2":
                comp.to(device)
        if getattr(pipe, "transformer_2", None) is not None:
            # MoE: the low-noise expert waits off the GPU until the boundary step (see ExpertSwitch).
            pipe.transformer_2.to("cpu" if pipe.transformer is not None else device)
        return
    if plan.mode == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif plan.mode == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    elif plan.mode == "group":
        from diffusers.hooks import apply_group_offloading

        stream = torch.cuda.is_available()
        for name in ("transformer", "transformer_2"):
            model = getattr(pipe, name, None)
            if model is not None:
                model.enable_group_offload(
                    onload_device=device, offload_type="leaf_level", use_stream=stream, low_cpu_mem_usage=False
                )
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

    The offload modes need nothing of this: model offload moves one component in at a time, and group and
    sequential offload keep only the running blocks resident.
    """

    def __init__(self, pipe, plan: MemoryPlan, device: torch.device):
        self.pipe = pipe
        self.active = (
            device.type == "cuda"
            and plan.mode == "none"
            and getattr(pipe, "transformer", None) is not None
            and getattr(pipe, "transformer_2", None) is not None
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


def decode_needs_tiling(device: torch.device, width: int, height: int) -> str | None:
    """A reason to tile the VAE decode when it would not fit in free VRAM; None when it fits (always on CPU)."""
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    need = VAE_DECODE_BYTES_PER_PIXEL * width * height
    if need <= free:
        return None
    return f"the decode needs about {need / GIB:.1f} GiB and {free / GIB:.1f} GiB is free: decoding in tiles"
