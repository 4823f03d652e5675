"""Tiny LoRA files for the tiny models, built offline from the tiny transformer's own layer shapes.

Written in the layouts creators have: diffusers/PEFT keys, the original Wan / ComfyUI keys with lora_A/lora_B,
and with lora_down/lora_up plus alpha. The Wan names below are test data describing those files, not a converter
the studio uses (diffusers converts them).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

# diffusers layer -> original Wan layer, for the layers these LoRAs touch
_WAN_NAMES = {
    "attn1.to_q": "self_attn.q",
    "attn1.to_k": "self_attn.k",
    "attn1.to_v": "self_attn.v",
    "attn1.to_out.0": "self_attn.o",
    "attn2.to_q": "cross_attn.q",
    "attn2.to_k": "cross_attn.k",
    "attn2.to_v": "cross_attn.v",
    "attn2.to_out.0": "cross_attn.o",
    "ffn.net.0.proj": "ffn.0",
    "ffn.net.2": "ffn.2",
}


def tiny_transformer(ffn_dim: int = 32) -> torch.nn.Module:
    """The tiny 5B-style transformer (another FFN width makes a LoRA for a different model)."""
    from engine.models.tiny import _transformer

    return _transformer(48, 48, ffn_dim)


def lora_tensors(seed: int = 1, rank: int = 4, scale: float = 0.5, ffn_dim: int = 32) -> dict[str, torch.Tensor]:
    """A LoRA in diffusers' layout for every attention and FFN layer of the tiny transformer."""
    model = tiny_transformer(ffn_dim=ffn_dim)
    generator = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for block in range(len(model.blocks)):
        for layer in _WAN_NAMES:
            linear = model.get_submodule(f"blocks.{block}.{layer}")
            key = f"transformer.blocks.{block}.{layer}"
            out[f"{key}.lora_A.weight"] = torch.randn(rank, linear.in_features, generator=generator) * scale
            out[f"{key}.lora_B.weight"] = torch.randn(linear.out_features, rank, generator=generator) * scale
    return out


def to_wan_layout(tensors: dict[str, torch.Tensor], down_up: bool = False, alpha: float | None = None) -> dict:
    """The same LoRA under the original Wan / ComfyUI key names (diffusion_model.blocks.N.self_attn.q...)."""
    out = {}
    for key, value in tensors.items():
        body = key.removeprefix("transformer.blocks.")
        block, rest = body.split(".", 1)
        layer, part = rest.rsplit(".lora_", 1)
        half = part.split(".")[0]
        name = {"A": "lora_down", "B": "lora_up"}[half] if down_up else f"lora_{half}"
        stem = f"diffusion_model.blocks.{block}.{_WAN_NAMES[layer]}"
        out[f"{stem}.{name}.weight"] = value
        if alpha is not None and half == "A":
            out[f"{stem}.alpha"] = torch.tensor(float(alpha))
    return out


def write_lora(folder: Path, name: str, tensors: dict[str, torch.Tensor], meta: dict | None = None) -> Path:
    """NAME.safetensors (and NAME.json when meta is given) in the LoRA folder."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in tensors.items()}, path)
    if meta is not None:
        (folder / f"{name}.json").write_text(json.dumps(meta), encoding="utf-8")
    return path


def write_pair(folder: Path, name: str, high: dict, low: dict, meta: dict | None = None) -> Path:
    """NAME/ holding NAME_high_noise.safetensors and NAME_low_noise.safetensors (and NAME/NAME.json)."""
    target = folder / name
    target.mkdir(parents=True, exist_ok=True)
    save_file(high, target / f"{name}_high_noise.safetensors")
    save_file(low, target / f"{name}_low_noise.safetensors")
    if meta is not None:
        (target / f"{name}.json").write_text(json.dumps(meta), encoding="utf-8")
    return target
