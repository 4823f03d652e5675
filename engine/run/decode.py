"""Streaming VAE decode: the Wan VAE decodes causally, one latent frame at a time with a feature cache, so frames
can be handed out while the rest decode. The result equals AutoencoderKLWan.decode on the same latents."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from diffusers.models.autoencoders.autoencoder_kl_wan import unpatchify
from diffusers.utils.accelerate_utils import apply_forward_hook


def denormalize(vae, latents: torch.Tensor) -> torch.Tensor:
    """Pipeline-space latents -> the VAE's own latent space (what the Wan pipelines do before decoding)."""
    z = vae.config.z_dim
    mean = torch.tensor(vae.config.latents_mean, device=latents.device, dtype=latents.dtype).view(1, z, 1, 1, 1)
    inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, z, 1, 1, 1).to(latents.device, latents.dtype)
    return latents / inv_std + mean  # the pipelines' exact arithmetic, so frames match theirs bit for bit


def _finish(vae, out: torch.Tensor) -> torch.Tensor:
    if vae.config.patch_size is not None:
        out = unpatchify(out, patch_size=vae.config.patch_size)
    return torch.clamp(out, min=-1.0, max=1.0)


def _needs_tiling(vae, z: torch.Tensor) -> bool:
    h, w = z.shape[-2:]
    ratio = vae.spatial_compression_ratio
    return vae.use_tiling and (w > vae.tile_sample_min_width // ratio or h > vae.tile_sample_min_height // ratio)


@apply_forward_hook  # the same entry hook as vae.decode, so model offloading moves the VAE in first
def stream_decode(vae, z: torch.Tensor) -> Iterator[torch.Tensor]:
    """Decode [1, C, F, h, w] VAE-space latents; yield [1, 3, n, H, W] video chunks in order, one per latent frame.

    With tiling on and a frame larger than one tile, the whole tiled decode runs first and is yielded in chunks.
    """
    return _tiled_chunks(vae, z) if _needs_tiling(vae, z) else _causal_chunks(vae, z)


@torch.no_grad()
def _causal_chunks(vae, z: torch.Tensor) -> Iterator[torch.Tensor]:
    vae.clear_cache()
    try:
        x = vae.post_quant_conv(z)
        for i in range(x.shape[2]):
            vae._conv_idx = [0]
            out = vae.decoder(x[:, :, i : i + 1], feat_cache=vae._feat_map, feat_idx=vae._conv_idx, first_chunk=i == 0)
            yield _finish(vae, out)
    finally:
        vae.clear_cache()


@torch.no_grad()
def _tiled_chunks(vae, z: torch.Tensor) -> Iterator[torch.Tensor]:
    video = vae.tiled_decode(z, return_dict=False)[0]
    first = 1
    yield video[:, :, :first]
    step = vae.config.scale_factor_temporal or 4
    for start in range(first, video.shape[2], step):
        yield video[:, :, start : start + step]
