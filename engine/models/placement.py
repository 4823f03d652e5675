"""Where each component's weights live between uses (GPU, host RAM, or disk), decided before anything is loaded.

The memory mode (memory.py) decides from VRAM; this decides from host RAM. A 64 GB workstation cannot hold both
A14B experts (about 27 GiB each in bf16) and the text encoder in RAM, so whatever does not fit is streamed from disk
by diffusers' group offloading (`offload_to_disk_path`), idle MoE expert first. When even that leaves too little RAM
the studio refuses before loading, with the figures. Pure: everything it decides from is in its arguments.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ModelLoadError

GIB = 1024**3
# RAM kept for the OS, Python, torch and a job's host-side tensors, beyond the weights and the shard being read.
RAM_HEADROOM_BYTES = 4 * GIB
# VRAM kept free for activations when the GPU holds both experts (memory.HEADROOM_BYTES, same reasoning).
VRAM_HEADROOM_BYTES = 6 * GIB
# Streamed from disk when RAM is short, in this order: the idle expert first, the text encoder (used once) last.
DISK_ORDER = ("transformer_2", "transformer", "image_encoder", "text_encoder")
WHERE = {"gpu": "GPU", "ram": "RAM", "disk": "disk"}


@dataclass(frozen=True)
class Placement:
    mode: str  # the memory mode to apply (plan_placement may move model/sequential to group)
    where: dict[str, str]  # component -> "gpu" | "ram" | "disk"
    why: dict[str, str] = field(default_factory=dict)
    reason: str = ""  # the RAM figures behind it, one line

    def describe(self) -> str:
        """One line for the header: where each component lives."""
        return " · ".join(f"{name} {WHERE[place]}" for name, place in self.where.items())

    def summary(self) -> str:
        """The header line and the RAM figures behind it."""
        return f"{self.describe()} ({self.reason})"

    def settings(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "reason": self.reason,
            "components": {n: {"where": w, "why": self.why.get(n, "")} for n, w in self.where.items()},
        }

    def on_disk(self) -> list[str]:
        return [n for n, w in self.where.items() if w == "disk"]


def _gib(n: int | float) -> str:
    return f"{n / GIB:.1f} GiB"


def _resident(mode: str, device_type: str, sizes: dict[str, int], moe: bool) -> dict[str, str]:
    """Where the mode alone puts each component (plenty of RAM)."""
    if device_type != "cuda":
        return {n: "ram" for n in sizes}
    if mode == "none":
        return {n: ("ram" if moe and n == "transformer_2" else "gpu") for n in sizes}
    if mode == "group":
        return {n: ("gpu" if n == "vae" else "ram") for n in sizes}
    return {n: "ram" for n in sizes}  # model and sequential offload keep every component in RAM between uses


def plan_placement(
    mode: str,
    device_type: str,
    sizes: dict[str, int],
    ram_available: int,
    moe: bool,
    *,
    vram_free: int | None = None,
    largest_file: int = 0,
    disk_free: int | None = None,
    model: str = "",
) -> Placement:
    """Place each component for this memory mode so that what stays in RAM fits the RAM available.

    sizes: bytes per component as loaded (target dtype); largest_file: the biggest weights file, read one at a time
    while loading; disk_free: bytes free where offloaded weights are written (None: not checked).
    Raises ModelLoadError when nothing fits, naming the RAM it has and the RAM it needs.
    """
    sizes = {n: int(b) for n, b in sizes.items()}
    budget = ram_available - RAM_HEADROOM_BYTES - largest_file
    where = _resident(mode, device_type, sizes, moe)
    why: dict[str, str] = {}
    notes: list[str] = []
    on_gpu = "no GPU: the CPU runs it from RAM" if device_type != "cuda" else ""

    def in_ram() -> int:
        return sum(sizes[n] for n, w in where.items() if w == "ram")

    for name, place in where.items():
        if place == "gpu":
            why[name] = f"memory mode {mode}: kept on the GPU"
        elif moe and mode == "none" and name == "transformer_2":
            why[name] = "the idle low-noise expert waits in RAM until the boundary step"
        else:
            why[name] = on_gpu or f"memory mode {mode}: held in RAM between uses"

    if device_type == "cuda" and mode in ("model", "sequential") and in_ram() > budget:
        notes.append(
            f"{mode} offload keeps every component in RAM ({_gib(in_ram())}) and only {_gib(max(0, budget))} is free "
            "for weights: group offload instead, which can stream from disk"
        )
        mode = "group"
        where = _resident(mode, device_type, sizes, moe)
        for name, place in where.items():
            why[name] = "memory mode group: on the GPU" if place == "gpu" else "memory mode group: streamed from RAM"

    if moe and mode == "none" and device_type == "cuda" and where.get("transformer_2") == "ram" and in_ram() > budget:
        both = sum(sizes.values()) + VRAM_HEADROOM_BYTES
        if vram_free is not None and both <= vram_free:
            where["transformer_2"] = "gpu"
            why["transformer_2"] = (
                f"RAM is too small for the idle expert ({_gib(sizes['transformer_2'])}) and the GPU holds both "
                f"({_gib(both)} with headroom of {_gib(vram_free)} free)"
            )

    for name in DISK_ORDER:
        if in_ram() <= budget:
            break
        if where.get(name) == "ram":
            where[name] = "disk"
            why[name] = (
                f"RAM is short ({_gib(max(0, budget))} free for weights): streamed from disk by group offloading"
            )

    need = in_ram() + RAM_HEADROOM_BYTES + largest_file
    who = f"{model} " if model else ""
    if in_ram() > budget:
        raise ModelLoadError(
            f"{who}needs about {_gib(need)} of RAM here ({_gib(in_ram())} of weights that must stay in RAM, "
            f"{_gib(largest_file)} for the largest weights file while reading, {_gib(RAM_HEADROOM_BYTES)} for the "
            f"studio) and this machine has {_gib(ram_available)} available",
            "Close other programs to free RAM, or choose a smaller model (ti2v-5b), or run on a machine with a GPU "
            "or more RAM",
        )
    disk = sum(sizes[n] for n in where if where[n] == "disk")
    if disk and disk_free is not None and disk * 1.05 > disk_free:
        raise ModelLoadError(
            f"{who}needs {_gib(disk)} of disk to stream weights that do not fit in RAM "
            f"({_gib(ram_available)} available) and the studio's cache disk has {_gib(disk_free)} free",
            "Free disk space there (or set WAN_STUDIO_CACHE to a bigger disk), close other programs, or choose a "
            "smaller model (ti2v-5b)",
        )
    summary = f"RAM {_gib(ram_available)} available, {_gib(need)} needed"
    if disk:
        summary += f"; {_gib(disk)} streamed from disk ({', '.join(n for n in where if where[n] == 'disk')})"
    return Placement(mode, where, why, "; ".join([*notes, summary]))


def host_ram_available() -> int:
    """Bytes of host RAM available to new allocations now (free plus reclaimable cache), as the kernel reports."""
    import psutil

    return int(psutil.virtual_memory().available)


def disk_free(path: Path) -> int | None:
    """Free bytes on the disk holding `path` (its nearest existing parent); None when it cannot be read."""
    for folder in (path, *path.parents):
        if folder.exists():
            try:
                return shutil.disk_usage(folder).free
            except OSError:
                return None
    return None
