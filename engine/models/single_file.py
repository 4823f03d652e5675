"""A transformer from one file creators already have: a GGUF file (Q8_0, Q5/Q4…) or a single safetensors file in
the original Wan, ComfyUI or diffusers layout. The rest of the pipeline comes from the model's folder.

Loading is diffusers' own from_single_file (with its GGUF quantizer); the studio only checks the file first. It reads
the file's tensor names and shapes (headers only), renames them with diffusers' own conversion and compares them
with the model the folder describes, so a VAE, a LoRA, another model's transformer or a damaged file is refused
with a sentence before gigabytes are read.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelLoadError
from .weights import header_and_data_start

_FLOAT_GGUF = ("F32", "F16", "BF16")
_ORIG_SHAPE = "comfy.gguf.orig_shape."  # GGUF holds at most 4 dims; converters keep the real shape here
# (width, input channels) -> the published model a Wan transformer of that shape belongs to.
KNOWN = {
    (3072, 48): "Wan2.2 TI2V-5B",
    (5120, 16): "Wan2.2 T2V-A14B (or Wan2.1 T2V-14B)",
    (5120, 36): "Wan2.2 I2V-A14B (or Wan2.1 I2V-14B)",
    (1536, 16): "Wan2.1 T2V-1.3B",
}


@dataclass(frozen=True)
class SingleFile:
    """A checked transformer file and what it holds."""

    path: Path
    format: str  # "gguf" | "safetensors"
    layout: str  # "original" | "comfyui" | "diffusers"
    quant_types: dict[str, int] = field(default_factory=dict)  # GGUF: tensor type name -> tensors of that type
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict, compare=False, repr=False)  # diffusers names
    tensor_bytes: dict[str, int] = field(default_factory=dict, compare=False, repr=False)  # GGUF: as stored

    @property
    def storage(self) -> str:
        """The file's own storage: "GGUF Q4_0" (its main quantized type), or "safetensors"."""
        quantized = {k: v for k, v in self.quant_types.items() if k not in _FLOAT_GGUF}
        if self.format == "gguf" and quantized:
            return f"GGUF {max(quantized, key=quantized.get)}"
        return "GGUF (unquantized)" if self.format == "gguf" else "safetensors"

    def planned_bytes(self, dtype: torch.dtype) -> int:
        """Bytes once loaded: quantized GGUF tensors as stored, float tensors in the compute dtype."""
        size = torch.empty((), dtype=dtype).element_size()
        total = 0
        for name, shape in self.shapes.items():
            stored = self.tensor_bytes.get(name)
            if stored is not None:
                total += stored
            else:
                total += math.prod(shape) * size
        return total


def _refuse(path: Path, problem: str, remedy: str) -> ModelLoadError:
    return ModelLoadError(f"the transformer file {path.name} {problem}", remedy)


def _read_gguf(path: Path) -> tuple[dict[str, tuple[int, ...]], dict[str, str], dict[str, int]]:
    """(logical shapes, tensor type per name, bytes of each quantized tensor) from a GGUF file's header."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    shapes: dict[str, tuple[int, ...]] = {}
    kinds: dict[str, str] = {}
    stored: dict[str, int] = {}
    for tensor in reader.tensors:
        shapes[tensor.name] = tuple(int(n) for n in reversed(tensor.shape.tolist()))  # GGUF lists dims inner first
        kinds[tensor.name] = tensor.tensor_type.name
        if tensor.tensor_type.name not in _FLOAT_GGUF:
            stored[tensor.name] = int(tensor.n_bytes)
    for key, value in reader.fields.items():
        if key.startswith(_ORIG_SHAPE) and key[len(_ORIG_SHAPE) :] in shapes:
            shapes[key[len(_ORIG_SHAPE) :]] = tuple(int(n) for n in value.contents())
    return shapes, kinds, stored


def _read_safetensors(path: Path) -> dict[str, tuple[int, ...]]:
    header, start = header_and_data_start(path)
    end = max((int(e["data_offsets"][1]) for e in header.values()), default=0)
    if path.stat().st_size < start + end:
        raise ValueError("the file is shorter than its header says (an incomplete download)")
    return {name: tuple(int(n) for n in e["shape"]) for name, e in header.items()}


def _layout(names: list[str]) -> str:
    if any(n.startswith("model.diffusion_model.") for n in names):
        return "comfyui"
    return "diffusers" if any(n.startswith("condition_embedder.") for n in names) else "original"


def _shape_of(width: int, channels: int, layers: int) -> str:
    known = KNOWN.get((width, channels))
    what = f"width {width}, {channels} input channels, {layers} blocks"
    return f"{known} ({what})" if known else f"a Wan transformer of {what}"


def _expected(cls, component: Path) -> tuple[dict[str, tuple[int, ...]], dict[str, Any]]:
    from accelerate import init_empty_weights

    config = cls.load_config(str(component))
    with init_empty_weights():
        model = cls.from_config(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}, config


def inspect(path: str | Path, cls, component: Path, model_label: str) -> SingleFile:
    """Check that the file is a readable Wan transformer of the model in `component` (its config). Raises
    ModelLoadError with what the file is and what to do; reads headers only."""
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    path = Path(path).expanduser()
    if not path.is_file():
        raise _refuse(path, f"does not exist ({path})", "Check the path given to --transformer / --transformer-2")
    fmt = "gguf" if path.suffix.lower() == ".gguf" else "safetensors"
    kinds: dict[str, str] = {}
    stored: dict[str, int] = {}
    try:
        if fmt == "gguf":
            shapes, kinds, stored = _read_gguf(path)
        else:
            shapes = _read_safetensors(path)
    except Exception as exc:  # noqa: BLE001 - the readers raise many types on damaged input; all mean the same
        kind = "GGUF" if fmt == "gguf" else "safetensors"
        raise _refuse(
            path,
            f"is not a readable {kind} file ({exc.__class__.__name__}: {str(exc)[:120]})",
            "It may be incomplete or damaged: download it again. Only .gguf and .safetensors files are read",
        ) from None
    names = list(shapes)
    if any(part in n for n in names for part in (".lora_A.", ".lora_down.", ".lora_B.", ".lora_up.")):
        raise _refuse(path, "is a LoRA, not a transformer", "Put it in the LoRA folder (--loras) and choose it there")
    if "scaled_fp8" in shapes or any(n.endswith(".scale_weight") for n in names):
        raise _refuse(
            path,
            "is a ComfyUI fp8_scaled checkpoint, which diffusers cannot load",
            "Use the fp16/bf16 file of the same model with --quantize fp8 or int8, or a GGUF file",
        )
    layout = _layout(names)
    meta = {n: torch.empty(s, device="meta") for n, s in shapes.items()}
    original = {n: id(t) for n, t in meta.items()}  # the conversion moves each tensor under its new name
    expected, config = _expected(cls, component)
    if set(meta) != set(expected):
        try:
            meta = convert_wan_transformer_to_diffusers(dict(meta))
        except (KeyError, IndexError, RuntimeError, ValueError) as exc:
            raise _refuse(
                path, f"could not be read as a Wan transformer ({exc})", "Use a Wan2.2 transformer file"
            ) from None
    converted = {n: tuple(t.shape) for n, t in meta.items()}
    if "patch_embedding.weight" not in converted or "scale_shift_table" not in converted:
        raise _refuse(
            path,
            "is not a Wan transformer (it may be a VAE, a text encoder or another model)",
            "Give --transformer the diffusion model file: a Wan2.2 GGUF or safetensors transformer",
        )
    width, channels = converted["patch_embedding.weight"][:2]
    layers = len({n.split(".")[1] for n in converted if n.startswith("blocks.")})
    wanted = _shape_of(
        int(config["num_attention_heads"]) * int(config["attention_head_dim"]),
        int(config["in_channels"]),
        int(config["num_layers"]),
    )
    found = _shape_of(int(width), int(channels), layers)
    missing = sorted(set(expected) - set(converted))
    wrong = sorted(n for n in expected if n in converted and converted[n] != expected[n])
    if wrong or missing:
        if found != wanted:
            raise _refuse(
                path,
                f"is {found}, but the loaded model {model_label} needs {wanted}",
                f"Use a transformer file made for {model_label}, or choose the model the file belongs to",
            )
        example = (wrong or missing)[0]
        raise _refuse(
            path,
            f"does not match {model_label}: {len(wrong)} weights have other shapes and {len(missing)} are missing "
            f"(e.g. {example})",
            f"Use a transformer file made for {model_label}",
        )
    quant_types: dict[str, int] = {}
    for kind in kinds.values():
        quant_types[kind] = quant_types.get(kind, 0) + 1
    renamed = {id(t): n for n, t in meta.items()}
    names_map = {old: renamed.get(key, old) for old, key in original.items()}
    return SingleFile(
        path,
        fmt,
        layout,
        quant_types,
        {n: s for n, s in converted.items() if n in expected},
        {names_map.get(n, n): b for n, b in stored.items()},
    )


def sha256(path: Path, cache: Path, report=None) -> str:
    """The file's sha256, remembered by path, size and time so that a 10 GB file is hashed once."""
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{int(stat.st_mtime)}"
    try:
        known = json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    if key in known:
        return known[key]
    digest = hashlib.sha256()
    done = 0
    with open(path, "rb") as f:
        while chunk := f.read(16 * 2**20):
            digest.update(chunk)
            done += len(chunk)
            if report is not None:
                report(done / max(1, stat.st_size))
    known[key] = digest.hexdigest()
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps(known, indent=1), encoding="utf-8")
        os.replace(tmp, cache)
    except OSError:
        pass  # a cache we cannot write only costs a rehash next time
    return known[key]


def hash_files(files: dict[str, SingleFile], cache: Path, report) -> dict[str, str]:
    """Each transformer file's sha256 for the settings, with progress through report(stage, fraction, message)."""
    hashes = {}
    for name, file in files.items():

        def progress(fraction: float, label: str = file.path.name) -> None:
            report("hash", 0.5, f"checking {label} (sha256, once per file) {fraction:.0%}")

        hashes[name] = sha256(file.path, cache, progress)
    return hashes


def load(file: SingleFile, cls, folder: Path, name: str, dtype: torch.dtype, quantization=None):
    """The transformer from the file through diffusers' from_single_file, onto the CPU (placement moves it).

    A GGUF file goes through diffusers' GGUF quantizer (dequantized per layer to `dtype` while it runs); a
    safetensors file may be quantized on load by torchao (`quantization`).
    """
    if file.format == "gguf":
        from diffusers import GGUFQuantizationConfig
        from diffusers.models.model_loading_utils import load_gguf_checkpoint
        from gguf import GGUFReader

        checkpoint = load_gguf_checkpoint(str(file.path))
        # diffusers reads tensors as stored; converters fold tensors of more than 4 dims (the patch embedding)
        # and keep the real shape in the file's metadata, so unfold them here.
        for key, value in GGUFReader(str(file.path)).fields.items():
            tensor_name = key[len(_ORIG_SHAPE) :]
            if key.startswith(_ORIG_SHAPE) and tensor_name in checkpoint:
                checkpoint[tensor_name] = checkpoint[tensor_name].reshape([int(n) for n in value.contents()])
        return cls.from_single_file(
            checkpoint,
            config=str(folder),
            subfolder=name,
            torch_dtype=dtype,
            quantization_config=GGUFQuantizationConfig(compute_dtype=dtype),
        ).eval()
    kwargs = {"quantization_config": quantization} if quantization is not None else {}
    return cls.from_single_file(str(file.path), config=str(folder), subfolder=name, torch_dtype=dtype, **kwargs).eval()
