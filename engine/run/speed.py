"""Speed options: attention backend, regional torch.compile, step caching and fp8 weight storage.

Each option is a diffusers setting or hook, switched on once after loading by one small dataclass, never an `if`
inside the denoising loop. Anything the machine cannot do falls back to the plain path with a notice that says why,
so asking for a speed-up never stops a generation from running.

Order matters and lives here: fp8 storage, the step cache and the attention backend go on before the memory mode
places the weights (group offloading copies the weights as they are then, so they must already be fp8), and the
regional compile goes on after, over the hooks the memory mode added.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from ..flags import ATTENTION_BACKENDS
from ..models.storage import TRANSFORMERS, describe

log = logging.getLogger("wan_studio.speed")

# Our names -> diffusers attention dispatcher names (diffusers.models.attention_dispatch.AttentionBackendName).
CACHES = ("first_block",)


@dataclass(frozen=True)
class SpeedOptions:
    """What the user asked for. The defaults are the plain diffusers path: nothing changed."""

    attention_backend: str = "native"
    compile: bool = False  # regional torch.compile of the repeated transformer blocks
    compile_backend: str = "inductor"  # torch.compile backend ("eager" only checks tracing: used by CPU tests)
    cache: str | None = None  # None or "first_block" (diffusers First Block Cache)
    cache_threshold: float = 0.05  # First Block Cache: higher skips more steps, at some cost to the output
    fp8: bool = False  # store the transformers' weights in float8 e4m3, compute in their own dtype

    def __post_init__(self) -> None:
        if self.attention_backend not in ATTENTION_BACKENDS:
            raise ValueError(
                f"attention backend must be one of {', '.join(ATTENTION_BACKENDS)}; got {self.attention_backend!r}"
            )
        if self.cache is not None and self.cache not in CACHES:
            raise ValueError(f"cache must be None or one of {', '.join(CACHES)}; got {self.cache!r}")
        if not 0.0 < float(self.cache_threshold) < 1.0:
            raise ValueError(f"cache threshold must be between 0 and 1; got {self.cache_threshold!r}")

    def settings(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SpeedState:
    """What is actually in effect after applying, with a notice for every request that fell back."""

    requested: SpeedOptions
    attention_backend: str = "native"
    compiled: bool = False
    cache: str | None = None
    fp8: bool = False
    notices: list[str] = field(default_factory=list)
    setup_s: float = 0.0  # time spent applying (compilation itself happens lazily, on the first steps)

    def settings(self) -> dict[str, Any]:
        return {
            "requested": self.requested.settings(),
            "attention_backend": self.attention_backend,
            "compiled": self.compiled,
            "cache": self.cache,
            "cache_threshold": self.requested.cache_threshold if self.cache else None,
            "fp8": self.fp8,
            "notices": list(self.notices),
        }


def _transformers(pipe) -> list[tuple[str, torch.nn.Module]]:
    return [(n, m) for n in TRANSFORMERS if (m := getattr(pipe, n, None)) is not None]


def fp8_storage_supported(device: torch.device) -> str | None:
    """None when float8 e4m3 weights can be stored and cast back on this device; otherwise why not."""
    if not hasattr(torch, "float8_e4m3fn"):
        return f"torch {torch.__version__} has no float8_e4m3fn dtype"
    try:
        x = torch.ones(4, device=device)
        back = x.to(torch.float8_e4m3fn).to(torch.float32)
        if not torch.equal(back, x):
            return "float8 round trip changed exact values"
    except (RuntimeError, TypeError) as exc:
        return f"float8 storage is not supported on {device.type} ({exc})"
    return None


def _apply_fp8(pipe, device: torch.device, state: SpeedState) -> None:
    why = fp8_storage_supported(device)
    if why:
        state.notices.append(f"fp8 weights are off: {why}.")
        return
    for name, model in _transformers(pipe):
        stored = describe(model)[0]
        if stored not in ("bf16", "fp16", "fp32"):
            state.notices.append(f"fp8 storage is off for the {name}: its weights are already stored as {stored}.")
            continue
        # compute stays in the model's own dtype (bf16 on a GPU); diffusers skips norms, embeddings and the
        # modules the model keeps in float32.
        model.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=model.dtype)
        state.fp8 = True


def _apply_cache(pipe, options: SpeedOptions, state: SpeedState) -> None:
    from diffusers.hooks import FirstBlockCacheConfig

    for _name, model in _transformers(pipe):
        if not hasattr(model, "enable_cache"):
            state.notices.append(f"step cache is off: {type(model).__name__} has no cache support in diffusers.")
            return
    for _name, model in _transformers(pipe):
        model.enable_cache(FirstBlockCacheConfig(threshold=float(options.cache_threshold)))
    state.cache = options.cache


def _missing_package(name: str) -> str | None:
    """The package an attention backend needs when it is not installed, else None."""
    from diffusers.utils import is_flash_attn_3_available, is_flash_attn_available, is_sageattention_available

    needs = {
        "flash": ("flash-attn", is_flash_attn_available),
        "flash3": ("flash-attn 3 (flash_attn_interface)", is_flash_attn_3_available),
        "sage": ("sageattention", is_sageattention_available),
    }
    if name in needs and not needs[name][1]():
        return needs[name][0]
    return None


def _apply_attention(pipe, options: SpeedOptions, device: torch.device, state: SpeedState) -> None:
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    name = options.attention_backend
    if name == "native":
        return
    if package := _missing_package(name):
        state.notices.append(f"attention backend {name!r} needs {package}, which is not installed: using native.")
        return
    if device.type != "cuda":
        state.notices.append(f"attention backend {name!r} needs a CUDA GPU: using native attention.")
        return
    # set_attention_backend also switches diffusers' process-wide default; we want it on these models only.
    previous = _AttentionBackendRegistry._active_backend
    applied: list[torch.nn.Module] = []
    try:
        for _n, model in _transformers(pipe):
            model.set_attention_backend(ATTENTION_BACKENDS[name])
            applied.append(model)
    except (RuntimeError, ValueError, ImportError) as exc:
        for model in applied:
            model.reset_attention_backend()
        first_line = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        state.notices.append(f"attention backend {name!r} is not available ({first_line}): using native attention.")
        return
    finally:
        _AttentionBackendRegistry.set_active_backend(previous)
    state.attention_backend = name


def apply_speed(pipe, options: SpeedOptions, device: torch.device) -> SpeedState:
    """fp8 storage, step cache and attention backend; call once after loading, before the memory mode."""
    t0 = time.perf_counter()
    state = SpeedState(requested=options)
    if not _transformers(pipe):
        return state
    if options.fp8:
        _apply_fp8(pipe, device, state)
    if options.cache:
        _apply_cache(pipe, options, state)
    _apply_attention(pipe, options, device, state)
    state.setup_s = time.perf_counter() - t0
    for notice in state.notices:
        log.warning(notice)
    return state


def apply_compile(pipe, options: SpeedOptions, state: SpeedState) -> None:
    """Regional compile of the repeated blocks; call after the memory mode placed the weights.

    Compilation itself happens on the first forward of each block (the first steps of the first job run slower);
    the benchmark reports that time separately.
    """
    if not options.compile:
        return
    t0 = time.perf_counter()
    try:
        for _name, model in _transformers(pipe):
            model.compile_repeated_blocks(backend=options.compile_backend, fullgraph=False, dynamic=False)
    except (RuntimeError, ValueError, AttributeError) as exc:
        state.notices.append(f"torch.compile is off: {exc.__class__.__name__}: {str(exc).splitlines()[0]}")
        log.warning(state.notices[-1])
        return
    state.compiled = True
    state.setup_s += time.perf_counter() - t0
