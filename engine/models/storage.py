"""How each component's weights are stored: bf16/fp32 as published, or quantized on load (int8, fp8) by torchao
through diffusers' and transformers' own quantization configs, or read quantized from a GGUF file.

The options are chosen at launch (--quantize, --quantize-text, --transformer, --text-encoder-device) or in the page's
model settings, and applied at load like the memory mode. This module also says what a component holds once loaded
(storage type and bytes as stored) and what it will hold before anything is read, for the memory planner.
"""

from __future__ import annotations

import collections
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..flags import QUANTIZE_TYPES, TEXT_ENCODER_DEVICES

TRANSFORMERS = ("transformer", "transformer_2")
_INT8_SCALE_BYTES = 4  # one float scale per output row
FP8_REMEDY = "Use --quantize int8 (the same memory, on any card) or --fp8 (fp8 storage with bf16 compute)"


@dataclass(frozen=True)
class WeightOptions:
    """What the user asked for; the defaults are the published weights, loaded as they are."""

    quantize: str = "none"  # the transformer(s): none | int8 | fp8
    quantize_text: str = "none"  # the text encoder: none | int8 | fp8
    transformer: str | None = None  # a single file (GGUF or safetensors) for the transformer (MoE: high-noise)
    transformer_2: str | None = None  # the same for the MoE low-noise expert
    text_encoder_device: str = "auto"  # auto: where the memory mode puts it; cpu: it runs on the CPU (--t5_cpu)

    def __post_init__(self) -> None:
        for name in ("quantize", "quantize_text"):
            if getattr(self, name) not in QUANTIZE_TYPES:
                raise ValueError(f"{name} must be one of {', '.join(QUANTIZE_TYPES)}; got {getattr(self, name)!r}")
        if self.text_encoder_device not in TEXT_ENCODER_DEVICES:
            raise ValueError(
                f"text encoder device must be one of {', '.join(TEXT_ENCODER_DEVICES)}; "
                f"got {self.text_encoder_device!r}"
            )

    def kind_for(self, component: str) -> str:
        """The quantization asked for this component (none for the VAE and anything else)."""
        if component in TRANSFORMERS:
            return self.quantize
        return self.quantize_text if component == "text_encoder" else "none"

    def file_for(self, component: str) -> Path | None:
        value = {"transformer": self.transformer, "transformer_2": self.transformer_2}.get(component)
        return Path(value).expanduser() if value else None

    def settings(self) -> dict[str, Any]:
        return asdict(self)


def fp8_refusal(device: torch.device) -> str | None:
    """Why fp8 quantization cannot run here (None when it can): it needs fp8 matrix units, compute capability 8.9+."""
    if device.type != "cuda":
        return (
            "fp8 quantization needs an NVIDIA GPU with fp8 matrix units (RTX 40 or 50 series, L4, L40S, H100 or "
            "newer) and this studio runs on the CPU"
        )
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) < (8, 9):
        name = torch.cuda.get_device_name(device)
        return (
            f"fp8 quantization needs fp8 matrix units (compute capability 8.9 or newer: RTX 40 or 50 series, L4, "
            f"H100…) and the {name} has {major}.{minor}"
        )
    return None


def refusal(options: WeightOptions, device: torch.device) -> tuple[str, str] | None:
    """(problem, remedy) when the options cannot work on this machine, known before loading anything: fp8 without
    fp8 matmuls, a transformer file that is not there. The file's contents are checked at load (single_file)."""
    for flag, kind in (("--quantize", options.quantize), ("--quantize-text", options.quantize_text)):
        if kind == "fp8" and (why := fp8_refusal(device)) is not None:
            return f"{flag} fp8 cannot run here: {why}", FP8_REMEDY
    for flag, name in (("--transformer", "transformer"), ("--transformer-2", "transformer_2")):
        path = options.file_for(name)
        if path is not None and not path.is_file():
            return f"the transformer file given to {flag} does not exist ({path})", f"Check the path given to {flag}"
    return None


def quantization_config(kind: str, library: str):
    """torchao's config for `kind`, wrapped for diffusers or transformers; None for none.

    int8 is weight-only (dequantized per matmul, works on CPU and any GPU); fp8 quantizes weights and, per call,
    activations, so the matmuls themselves run in fp8.
    """
    if kind == "none":
        return None
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, Int8WeightOnlyConfig

    quant = Int8WeightOnlyConfig() if kind == "int8" else Float8DynamicActivationFloat8WeightConfig()
    if library == "transformers":
        from transformers import TorchAoConfig

        return TorchAoConfig(quant_type=quant)
    from diffusers import TorchAoConfig

    return TorchAoConfig(quant)


def tensor_bytes(tensor: torch.Tensor) -> int:
    """Bytes a tensor takes as stored: a torchao tensor is its int8/fp8 data plus its scales, not numel x 4."""
    flatten = getattr(type(tensor), "__tensor_flatten__", None)
    if flatten is not None and type(tensor) not in (torch.Tensor, torch.nn.Parameter):
        names, _ = tensor.__tensor_flatten__()
        return sum(tensor_bytes(getattr(tensor, n)) for n in names)
    return tensor.numel() * tensor.element_size()


_DTYPE_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32", torch.float8_e4m3fn: "fp8"}


def _kind(tensor: torch.Tensor) -> str:
    quant = getattr(tensor, "quant_type", None)  # diffusers' GGUFParameter
    if quant is not None:
        return f"GGUF {getattr(quant, 'name', quant)}"
    name = type(tensor).__name__.lower()
    if "int8" in name or getattr(tensor, "qdata", torch.empty(0)).dtype == torch.int8:
        return "int8"
    if "float8" in name or getattr(tensor, "qdata", torch.empty(0)).dtype == torch.float8_e4m3fn:
        return "fp8"
    return _DTYPE_NAMES.get(tensor.dtype, str(tensor.dtype).replace("torch.", ""))


def describe(module: torch.nn.Module) -> tuple[str, int]:
    """(storage type, bytes as stored): the type most of its bytes are in, e.g. "int8", "GGUF Q4_0", "bf16"."""
    by_kind: collections.Counter[str] = collections.Counter()
    for tensor in [*module.parameters(), *module.buffers()]:
        by_kind[_kind(tensor)] += tensor_bytes(tensor)
    if not by_kind:
        return "none", 0
    quantized = [k for k in by_kind if k.startswith("GGUF") or k in ("int8", "fp8")]
    label = max(quantized or by_kind, key=lambda k: by_kind[k])
    return label, sum(by_kind.values())


def linear_weights(cls, component: Path) -> set[str]:
    """Names of the weights torchao quantizes in the component's model: those of its Linear layers, except (in
    diffusers) the modules the class keeps in float32. Built from its config on the meta device: nothing is
    allocated."""
    from accelerate import init_empty_weights

    diffusers_model = hasattr(cls, "load_config")
    with init_empty_weights():
        if diffusers_model:
            model = cls.from_config(cls.load_config(str(component)))
        else:  # transformers quantizes every Linear
            model = cls(cls.config_class.from_pretrained(str(component)))
    keep = set(getattr(cls, "_keep_in_fp32_modules", None) or []) if diffusers_model else set()
    return {
        f"{name}.weight"
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and not keep.intersection(name.split("."))
    }


def quantized_bytes(shapes: dict[str, tuple[int, ...]], linear: set[str], kind: str, dtype: torch.dtype) -> int:
    """Bytes once loaded: Linear weights in one byte per value plus a scale per row, the rest in `dtype`."""
    size = torch.empty((), dtype=dtype).element_size()
    total = 0
    for name, shape in shapes.items():
        numel = math.prod(int(n) for n in shape)
        if kind != "none" and name in linear and len(shape) == 2:
            total += numel + int(shape[0]) * _INT8_SCALE_BYTES
        else:
            total += numel * size
    return total


def gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**28 else f"{n / 2**20:.1f} MiB"


def record(pipe, options: WeightOptions, files: dict, hashes: dict[str, str], text_on_cpu: bool) -> dict[str, dict]:
    """What each component holds once loaded, for the header and the settings saved with every video."""
    out: dict[str, dict] = {}
    for name, component in pipe.components.items():
        if not isinstance(component, torch.nn.Module):
            continue
        label, size = describe(component)
        entry: dict[str, Any] = {"storage": label, "bytes": size, "quantize": options.kind_for(name)}
        if name in files:
            file = files[name]
            entry.update(
                file=str(file.path),
                file_format=file.format,
                file_layout=file.layout,
                sha256=hashes.get(name),
                quantize="none" if file.format == "gguf" else entry["quantize"],
            )
            if file.format == "gguf":
                entry["storage"] = file.storage  # the type read from the file, as the file names it
        if name == "text_encoder" and text_on_cpu:
            entry["runs_on"] = "cpu"
        out[name] = entry
    return out


def summary(storage: dict[str, dict]) -> str:
    """One line for the header: each component's storage type and size, and the file it came from."""
    parts = []
    for name, entry in storage.items():
        text = f"{name} {entry['storage']} {gib(entry['bytes'])}"
        if entry.get("file"):
            text += f" from {Path(entry['file']).name}"
        if entry.get("runs_on") == "cpu":
            text += " (runs on the CPU)"
        parts.append(text)
    return " · ".join(parts)
