"""A component's weights as stored: their sizes from the safetensors headers, and a loader that reads one tensor at
a time, casts it and puts it where it will live.

Why our own reader for diffusers models: diffusers' from_pretrained reads shard by shard too, but the float32-kept
modules (norms, time embedder) alias the memory-mapped shards, so every shard of an fp32 folder stays mapped until
the end (peak RSS 1.39x the bf16 size measured by benchmarks/load_rss.py, 1.30x with mmap off). Reading tensor by
tensor keeps one shard mapped at a time and sends each tensor straight to the GPU when the plan puts it there.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch

_FLOAT = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2}
_OTHER = {"I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


def weight_files(component: Path) -> list[Path]:
    """The component's safetensors files: the shards its index names, or its single file."""
    indexes = sorted(component.glob("*.safetensors.index.json"))
    if indexes:
        names = json.loads(indexes[0].read_text(encoding="utf-8")).get("weight_map", {}).values()
        return [component / n for n in sorted(set(names))]
    return sorted(component.glob("*.safetensors"))


def read_header(path: Path) -> dict:
    """The JSON header of a safetensors file (names, dtypes, shapes), without reading any tensor data."""
    return header_and_data_start(path)[0]


def header_and_data_start(path: Path) -> tuple[dict, int]:
    """(the header, the byte offset where tensor data starts): data_offsets in the header count from there."""
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        if length > 100 * 2**20:
            raise ValueError(f"{path.name} has an implausible safetensors header")
        header = json.loads(f.read(length))
    header.pop("__metadata__", None)
    return header, 8 + length


def stored_bytes(component: Path, dtype: torch.dtype | None) -> tuple[int, int]:
    """(bytes once loaded as `dtype` (floating tensors cast, others as stored), the largest file's size)."""
    target = torch.empty((), dtype=dtype).element_size() if dtype is not None else None
    total = 0
    largest = 0
    for path in weight_files(component):
        largest = max(largest, path.stat().st_size)
        for entry in read_header(path).values():
            numel = 1
            for n in entry["shape"]:
                numel *= int(n)
            kind = entry["dtype"]
            size = _FLOAT.get(kind) or _OTHER.get(kind, 1)
            total += numel * (target if target is not None and kind in _FLOAT else size)
    return total, largest


def plain_folder(component: Path) -> bool:
    """Safetensors weights and no quantization: what load_diffusers_model reads (else diffusers' own loader)."""
    config = component / "config.json"
    if not config.is_file() or not weight_files(component):
        return False
    return "quantization_config" not in json.loads(config.read_text(encoding="utf-8"))


def load_diffusers_model(cls, component: Path, dtype: torch.dtype | None, device: torch.device | None = None):
    """A diffusers ModelMixin built on the meta device, filled one tensor at a time from the shards.

    Floating tensors are cast to `dtype`, except in the class's _keep_in_fp32_modules (as diffusers does); each tensor
    goes to `device` (default CPU) as soon as it is read. Raises ValueError when a weight is missing.
    """
    from accelerate import init_empty_weights
    from accelerate.utils import set_module_tensor_to_device
    from safetensors import safe_open

    device = device or torch.device("cpu")
    with init_empty_weights():
        model = cls.from_config(cls.load_config(str(component)))
    keep = set(getattr(cls, "_keep_in_fp32_modules", None) or []) if dtype in (torch.float16, torch.bfloat16) else set()
    expected = set(model.state_dict().keys())
    seen: set[str] = set()
    for path in weight_files(component):
        with safe_open(str(path), framework="pt", device="cpu") as f:
            for key in f.keys():
                if key not in expected:
                    continue
                tensor = f.get_tensor(key)
                if dtype is not None and tensor.is_floating_point():
                    wanted = torch.float32 if keep.intersection(key.split(".")) else dtype
                    tensor = tensor.to(wanted) if tensor.dtype != wanted else tensor.clone()  # never alias the file
                set_module_tensor_to_device(model, key, device, value=tensor, dtype=tensor.dtype)
                seen.add(key)
    missing = sorted(expected - seen)
    if missing:
        raise ValueError(f"{len(missing)} weights are missing from the files, e.g. {missing[0]}")
    return model.eval()
