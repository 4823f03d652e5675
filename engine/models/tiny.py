"""Tiny random-weight Wan pipelines, built offline and saved once, for tests, CI and the offline demo.

They use the real pipeline classes and are loaded back through the same from_pretrained path as a
real model; only the sizes are small (the configs of diffusers' own Wan2.2 tests).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

TINY_VERSION = "1"
TEXT_DIM = 32
_CORPUS = (
    "a cat walks on the beach at sunset, cinematic light, slow camera pan. "
    "a red car drives through a rainy city at night with neon reflections. "
    "close-up of a flower opening in the morning sun, soft focus, warm colours. "
    "一只猫在海边散步，夕阳，电影感。"
)


def cache_root() -> Path:
    return Path(os.environ.get("WAN_STUDIO_CACHE", Path.home() / ".cache" / "wan-studio"))


def tiny_path(name: str) -> Path:
    return cache_root() / "tiny" / f"{name}-v{TINY_VERSION}"


def _tokenizer():
    """A byte-level BPE tokenizer trained on a few sentences: any text maps to ids below the vocab size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<pad>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([_CORPUS], trainer=trainer)
    eos = tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", eos)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=512
    )


def _text_encoder(vocab_size: int):
    from transformers import UMT5Config, UMT5EncoderModel

    config = UMT5Config(
        vocab_size=vocab_size,
        d_model=TEXT_DIM,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=32,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    return UMT5EncoderModel(config).eval()


def _transformer(
    in_channels: int,
    out_channels: int,
    ffn_dim: int = 32,
    heads: int = 2,
    head_dim: int = 12,
    layers: int = 2,
    rope: int = 32,
):
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=heads,
        attention_head_dim=head_dim,
        in_channels=in_channels,
        out_channels=out_channels,
        text_dim=TEXT_DIM,
        freq_dim=256,
        ffn_dim=ffn_dim,
        num_layers=layers,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=rope,
    ).eval()


def _vae(wan22: bool):
    from diffusers import AutoencoderKLWan

    common = dict(base_dim=3, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True])
    if wan22:
        return AutoencoderKLWan(
            **common,
            z_dim=48,
            in_channels=12,
            out_channels=12,
            is_residual=True,
            patch_size=2,
            scale_factor_spatial=16,
            scale_factor_temporal=4,
            latents_mean=[0.0] * 48,
            latents_std=[1.0] * 48,
        ).eval()
    return AutoencoderKLWan(**common, z_dim=16).eval()


def _scheduler(shift: float):
    from diffusers import UniPCMultistepScheduler

    # The converted Wan2.2 repos ship UniPC with flow sigmas; the tiny models do the same.
    return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift)


def build_tiny_pipeline(name: str):
    """A fresh random-weight pipeline of the given tiny family (seeded, so every build is the same)."""
    import torch
    from diffusers import WanImageToVideoPipeline, WanPipeline

    torch.manual_seed(0)
    tokenizer = _tokenizer()
    text_encoder = _text_encoder(len(tokenizer))
    if name == "tiny-ti2v":
        return _ti2v(tokenizer, text_encoder, lambda: _transformer(48, 48))
    if name == "tiny-t2v-moe":
        return WanPipeline(
            tokenizer=tokenizer,
            text_encoder=text_encoder,
            vae=_vae(wan22=False),
            transformer=_transformer(16, 16),
            transformer_2=_transformer(16, 16),
            scheduler=_scheduler(12.0),
            boundary_ratio=0.875,
        )
    if name == "tiny-i2v-moe":
        return WanImageToVideoPipeline(
            tokenizer=tokenizer,
            text_encoder=text_encoder,
            vae=_vae(wan22=False),
            transformer=_transformer(36, 16),
            transformer_2=_transformer(36, 16),
            scheduler=_scheduler(5.0),
            image_processor=None,
            image_encoder=None,
            boundary_ratio=0.9,
        )
    raise ValueError(f"unknown tiny model {name!r}")


def build_wide_ti2v(heads: int, head_dim: int, layers: int):
    """The tiny TI2V pipeline with a transformer as wide as asked: attention dominates its steps, as in the real
    models (for benchmarks of how attention is split; the text encoder and VAE stay tiny)."""
    import torch

    torch.manual_seed(0)
    tokenizer = _tokenizer()
    width = heads * head_dim
    transformer = lambda: _transformer(48, 48, 2 * width, heads, head_dim, layers, rope=1024)  # noqa: E731
    return _ti2v(tokenizer, _text_encoder(len(tokenizer)), transformer)


def _ti2v(tokenizer, text_encoder, transformer):
    """A 5B-style pipeline (Wan2.2 VAE, expanded timesteps); the VAE is built before the transformer, in the order
    the seeded weights of the tiny model have always been drawn."""
    from diffusers import WanPipeline

    vae = _vae(wan22=True)
    return WanPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        transformer=transformer(),
        scheduler=_scheduler(5.0),
        transformer_2=None,
        boundary_ratio=None,
        expand_timesteps=True,
    )


def ensure_tiny(name: str) -> Path:
    """Folder holding the saved tiny pipeline; built and written once (atomically) when missing."""
    target = tiny_path(name)
    if (target / "model_index.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        build_tiny_pipeline(name).save_pretrained(staging, safe_serialization=True)
        try:
            os.rename(staging, target)
        except OSError:
            if not (target / "model_index.json").is_file():  # lost a race to another process: fine
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
