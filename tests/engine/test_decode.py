"""The streaming decode hands out exactly what a plain vae.decode of the same latents gives."""

from __future__ import annotations

import pytest
import torch

from engine.models.tiny import _vae
from engine.run.decode import stream_decode


@pytest.fixture(params=["wan21-16ch", "wan22-48ch"])
def vae(request):
    torch.manual_seed(0)
    return _vae(wan22=request.param == "wan22-48ch")


def latents_for(vae, frames: int = 4, size: int = 8) -> torch.Tensor:
    return torch.randn(1, vae.config.z_dim, frames, size, size, generator=torch.Generator().manual_seed(1))


def test_streamed_frames_equal_a_plain_decode(vae):
    z = latents_for(vae)
    with torch.no_grad():
        plain = vae.decode(z).sample
    chunks = list(stream_decode(vae, z))
    streamed = torch.cat(chunks, dim=2)
    assert streamed.shape == plain.shape
    # different paths (a chunk at a time with the feature cache against one call): float32 within 1e-4 of [-1, 1]
    assert (streamed - plain).abs().max().item() <= 1e-4


def test_the_first_chunk_is_one_frame_and_the_rest_four_each(vae):
    chunks = list(stream_decode(vae, latents_for(vae, frames=3)))
    assert [c.shape[2] for c in chunks] == [1, 4, 4]


def test_tiled_streaming_equals_a_plain_tiled_decode(vae):
    ratio = vae.spatial_compression_ratio
    vae.enable_tiling(
        tile_sample_min_height=4 * ratio,
        tile_sample_min_width=4 * ratio,
        tile_sample_stride_height=3 * ratio,
        tile_sample_stride_width=3 * ratio,
    )
    z = latents_for(vae, frames=2, size=8)
    with torch.no_grad():
        plain = vae.decode(z).sample
    streamed = torch.cat(list(stream_decode(vae, z)), dim=2)
    assert (streamed - plain).abs().max().item() <= 1e-4  # different paths, as above


def test_a_stopped_stream_leaves_the_vae_ready_for_the_next_decode(vae):
    z = latents_for(vae)
    stream = stream_decode(vae, z)
    next(stream)
    stream.close()  # what a cancel during decode does
    with torch.no_grad():
        plain = vae.decode(z).sample
    again = torch.cat(list(stream_decode(vae, z)), dim=2)
    assert (again - plain).abs().max().item() <= 1e-4
