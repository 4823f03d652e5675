"""Cheap live previews: the denoised estimate x0 projected to RGB with a per-VAE linear map (presets data)."""

from __future__ import annotations

import json
from functools import lru_cache

import numpy as np
import torch

from ..catalog import PRESETS_DIR

_KEYS = {16: "wan21_16ch", 48: "wan22_48ch"}


@lru_cache(maxsize=8)
def _factors(z_dim: int, device: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    key = _KEYS.get(z_dim)
    if key is None:
        return None
    with open(PRESETS_DIR / "latent_rgb_factors.json", encoding="utf-8") as f:
        data = json.load(f)[key]
    factors = torch.tensor(data["factors"], dtype=torch.float32, device=device)
    bias = torch.tensor(data["bias"], dtype=torch.float32, device=device)
    return factors, bias


def denoised_estimate(latent_input: torch.Tensor, velocity: torch.Tensor, sigma: float) -> torch.Tensor:
    """x0 = x_t - sigma * v for flow matching (the Wan schedulers all predict the flow)."""
    z = velocity.shape[1]
    return latent_input[:, :z].float() - sigma * velocity.float()


def latents_to_rgb(latents: torch.Tensor) -> np.ndarray | None:
    """[1, C, F, h, w] normalized latents -> uint8 [F, h, w, 3]; None when no map fits the channel count."""
    found = _factors(latents.shape[1], str(latents.device))
    if found is None:
        return None
    factors, bias = found
    rgb = torch.einsum("cfhw,cr->fhwr", latents[0].float(), factors) + bias
    return ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()
